/**
 * What the remote transport makes of each kind of fd (src/transports/remote-kinds.ts,
 * README "Remote commands", its first table): which way the bytes go, how
 * the client reaches them, the copy's offset and size, and the kinds
 * refused with an UnsupportedError naming them, every fd looked at in this
 * process. The fd table is checked after each test (test/setup/fd-table.ts),
 * so planRelay and statusFlags are also seen to leave nothing open.
 */
import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, Socket, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { SystemError, UnsupportedError } from '../../src/errors';
import { closeFd, closeFds, fdIdentity, makeEventfd, makeMemfd, makePipe, openPidfd } from '../../src/fd';
import { rawListen, rawSocketPair, receiveNow } from '../../src/testing';
import { MAX_COPY_BYTES, planRelay, statusFlags, type RelayPlan } from '../../src/transports/remote-kinds';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const O_PATH = 0o10000000;
const O_NOFOLLOW = fsConstants.O_NOFOLLOW;

/** A block device to open for reading (root may; others get EACCES: that case is then skipped, named). */
const BLOCK_DEVICE = '/dev/loop0';
const blockUnopenable = ((): string => {
  try {
    closeSync(openSync(BLOCK_DEVICE, 'r'));
    return '';
  } catch (err) {
    return `${BLOCK_DEVICE}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  }
})();

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-remote-kinds-'));
  writeFileSync(join(dir, 'flags'), '');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** planRelay's refusal of `fd`: the UnsupportedError's message. */
function refusal(fd: number): string {
  let caught: unknown;
  try {
    planRelay(fd);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UnsupportedError);
  return (caught as Error).message;
}

test('the copy limit is 256 MiB (README: "at most 256 MiB")', () => {
  expect(MAX_COPY_BYTES).toBe(268_435_456);
});

describe('statusFlags', () => {
  test.each([
    ['r', fsConstants.O_RDONLY],
    ['r+', fsConstants.O_RDWR],
    ['w', fsConstants.O_WRONLY],
    ['a', fsConstants.O_WRONLY | fsConstants.O_APPEND],
    ['a+', fsConstants.O_RDWR | fsConstants.O_APPEND],
  ])('open(%s): the access mode and O_APPEND as open(2) set them', (how, expected) => {
    const fd = openSync(join(dir, 'flags'), how);
    try {
      expect(statusFlags(fd) & (0o3 | fsConstants.O_APPEND)).toBe(expected);
    } finally {
      closeSync(fd);
    }
  });

  test('a closed number: an error, not flags', () => {
    const [r, w] = makePipe();
    closeFds([r, w]);
    expect(() => statusFlags(r)).toThrow();
  });
});

describe('pipes and FIFOs: reopened, the way their bytes go from the access mode', () => {
  test('read end, write end, and a read-write open of the same pipe', () => {
    const [r, w] = makePipe();
    const rw = openSync(`/proc/self/fd/${r}`, fsConstants.O_RDWR);
    try {
      expect(planRelay(r)).toEqual({ mode: 'up', kind: 'pipe (read end)', access: 'reopen', openFlags: fsConstants.O_RDONLY });
      expect(planRelay(w)).toEqual({ mode: 'down', kind: 'pipe (write end)', access: 'reopen', openFlags: fsConstants.O_WRONLY });
      expect(planRelay(rw)).toEqual({ mode: 'both', kind: 'pipe (read-write)', access: 'reopen', openFlags: fsConstants.O_RDWR });
    } finally {
      closeFds([r, w, rw]);
    }
  });
});

describe('sockets', () => {
  test('a connected stream socket goes both ways, duplicated; datagram and seqpacket are refused, named', () => {
    const stream = rawSocketPair('stream');
    const dgram = rawSocketPair('dgram');
    const seqpacket = rawSocketPair('seqpacket');
    try {
      expect(planRelay(stream[0])).toEqual({ mode: 'both', kind: 'stream socket', access: 'dup' });
      expect(refusal(dgram[0])).toMatch(/a datagram \(SOCK_DGRAM\) socket cannot be relayed \(a byte stream loses its message boundaries\)/);
      expect(refusal(seqpacket[0])).toMatch(/a SOCK_SEQPACKET socket cannot be relayed \(a byte stream loses its message boundaries\)/);
    } finally {
      closeFds([...stream, ...dgram, ...seqpacket]);
    }
  });

  test('a socket of another type is refused with its type number (a netlink SOCK_RAW socket, made by a child and sent here)', async () => {
    const [here, there] = rawSocketPair('stream');
    const script =
      'import socket, sys\n' +
      's = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n' +
      'socket.send_fds(socket.socket(fileno=3), [b"n"], [s.fileno()])\n' +
      'sys.stdin.read()\n';
    const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'ignore', 'inherit', there] });
    closeFd(there);
    const received: number[] = [];
    try {
      const message = await new HangGuard(scaled(10_000)).until('the netlink socket from the child', () => receiveNow(here, 16, 1), (m) => m !== null);
      received.push(...(message?.fds ?? []));
      expect(received.length).toBe(1);
      expect(refusal(received[0] as number)).toMatch(/a type 3 socket cannot be relayed \(a byte stream loses its message boundaries\)/); // SOCK_RAW
    } finally {
      closeFds([here, ...received]);
      child.stdin?.end();
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    }
  });

  test('a listening Unix socket is refused; its connected peer is not', () => {
    const name = join(dir, 'listening.sock');
    const listening = rawListen('stream', name, { backlog: 4 });
    try {
      expect(refusal(listening)).toMatch(/a listening socket cannot be relayed \(it carries connections, not bytes\)/);
    } finally {
      closeFd(listening);
      rmSync(name, { force: true });
    }
  });

  test("names bound to forge /proc/net/unix records of a socket change nothing: listening or not is the socket's own answer", () => {
    const name = join(dir, 'forged-listening.sock');
    const listening = rawListen('stream', name, { backlog: 4 });
    const stream = rawSocketPair('stream');
    // Names anyone may bind (abstract ones, paths in a directory one may
    // write), each ending in a line that reads as a record of one of those
    // sockets (Num RefCount Protocol Flags Type St Inode): the connected one
    // listening (__SO_ACCEPTCON), the listening one not. Spread over the
    // table's order (its hash buckets), some come before the real ones.
    const record = (i: number): string =>
      i % 2 === 0 ? `\nffff000000000000: 00000002 00000000 00010000 0001 01 ${fdIdentity(stream[0]).ino}` : `\nffff000000000000: 00000002 00000000 00000000 0001 01 ${fdIdentity(listening).ino}`;
    const forgers = Array.from({ length: 48 }, (_, i) =>
      DatagramSocket.bind(i % 4 < 2 ? { abstract: `fdb-forge-${process.pid}-${i}${record(i)}` } : join(dir, `f${i}${record(i)}`)),
    );
    try {
      expect(readFileSync('/proc/net/unix', 'utf8')).toContain(`00010000 0001 01 ${fdIdentity(stream[0]).ino}`); // the forgery is there
      expect(planRelay(stream[0])).toEqual({ mode: 'both', kind: 'stream socket', access: 'dup' });
      expect(refusal(listening)).toMatch(/a listening socket cannot be relayed/);
    } finally {
      for (const f of forgers) f.close();
      closeFds([listening, ...stream]);
      rmSync(name, { force: true });
    }
  });

  /** A TCP server on `host` and a connection to it: the fds of the listening socket, the client's and the server's ends. */
  async function tcp(host: string, body: (fds: { listening: number; client: number; accepted: number }) => void): Promise<void> {
    const server: Server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const port = (server.address() as { port: number }).port;
    const client = new Socket();
    await new Promise<void>((resolve, reject) => client.connect(port, host, resolve).once('error', reject));
    const peer = await accepted;
    const fdOf = (h: unknown): number => (h as { _handle: { fd: number } })._handle.fd;
    try {
      body({ listening: fdOf(server), client: fdOf(client), accepted: fdOf(peer) });
    } finally {
      client.destroy();
      peer.destroy();
      await new Promise((r) => server.close(r));
    }
  }

  test.each([['127.0.0.1'], ['::1']])('TCP on %s: the listening socket is refused, both ends of a connection go both ways', async (host) => {
    await tcp(host, ({ listening, client, accepted }) => {
      expect(refusal(listening)).toMatch(/a listening socket cannot be relayed/);
      expect(planRelay(client)).toEqual({ mode: 'both', kind: 'stream socket', access: 'dup' });
      expect(planRelay(accepted)).toEqual({ mode: 'both', kind: 'stream socket', access: 'dup' });
    });
  });
});

describe('regular files', () => {
  test('generated: open for reading (O_RDWR too) is a copy at the client\'s offset with the file\'s size; open only for writing goes down, appending or not', () => {
    let run = 0;
    fc.assert(
      fc.property(fc.constantFrom('r', 'r+', 'w', 'a', 'a+', 'w+'), fc.integer({ min: 0, max: 100_000 }), fc.nat(), (how, size, at) => {
        const path = join(dir, `file-${run++}`);
        writeFileSync(path, Buffer.alloc(size, 'x'));
        const fd = openSync(path, how);
        try {
          // The client's offset, moved by its reads (w and w+ truncated the file; a+ reads from 0).
          const readable = how !== 'w' && how !== 'a';
          const length = how.startsWith('w') ? 0 : size;
          const offset = readable ? at % (length + 1) : 0;
          if (offset > 0) expect(readSync(fd, Buffer.alloc(offset), 0, offset, null)).toBe(offset);
          const plan = planRelay(fd);
          const expected: RelayPlan = readable
            ? { mode: 'copy', kind: `regular file (${how === 'r' ? '' : 'read-write, '}given as a read-only copy)`, access: 'file', offset, size: length }
            : { mode: 'down', kind: `regular file (${how === 'a' ? 'append' : 'write'})`, access: 'file' };
          expect(plan).toEqual(expected);
        } finally {
          closeSync(fd);
          rmSync(path);
        }
      }),
      { numRuns: 40 },
    );
  });

  test('a memfd (read-write) is a read-only copy at its offset', () => {
    const memfd = makeMemfd('remote-kinds');
    try {
      writeFileSync(memfd, 'in memory: 20 bytes.');
      expect(planRelay(memfd)).toEqual({ mode: 'copy', kind: 'regular file (read-write, given as a read-only copy)', access: 'file', offset: 20, size: 20 });
    } finally {
      closeFd(memfd);
    }
  });

  test.each([
    [-1, 'copied'],
    [0, 'copied'],
    [1, 'refused'],
  ])('MAX_COPY_BYTES %i bytes, open for reading: %s (a sparse file)', (past, verdict) => {
    const path = join(dir, 'sparse');
    const w = openSync(path, 'w');
    ftruncateSync(w, MAX_COPY_BYTES + past);
    closeSync(w);
    const fd = openSync(path, 'r');
    try {
      if (verdict === 'copied') expect(planRelay(fd)).toMatchObject({ mode: 'copy', size: MAX_COPY_BYTES + past, offset: 0 });
      else expect(refusal(fd)).toMatch(new RegExp(`a regular file of ${MAX_COPY_BYTES + past} bytes cannot be relayed \\(a file open for reading is copied, and the copy is limited to ${MAX_COPY_BYTES} bytes\\)`));
    } finally {
      closeSync(fd);
      rmSync(path);
    }
  });
});

describe('character devices', () => {
  test('open for writing (O_WRONLY, O_RDWR) goes down, written in place; open only for reading is refused', () => {
    const wo = openSync('/dev/null', 'w');
    const rw = openSync('/dev/null', 'r+');
    const ro = openSync('/dev/null', 'r');
    try {
      expect(planRelay(wo)).toEqual({ mode: 'down', kind: 'character device (write)', access: 'file' });
      expect(planRelay(rw)).toEqual({ mode: 'down', kind: 'character device (write)', access: 'file' });
      expect(refusal(ro)).toMatch(/a character device open for reading cannot be relayed \(only writes to a terminal or device are relayed\)/);
    } finally {
      closeFds([wo, rw, ro]);
    }
  });
});

describe('kinds with no byte stream: refused, named, the fd number in the message', () => {
  test('a directory, eventfd, pidfd; an O_PATH fd of a file, a directory, a symbolic link', () => {
    const link = join(dir, 'link');
    writeFileSync(join(dir, 'target'), 'x');
    symlinkSync(join(dir, 'target'), link);
    const fds: number[] = [];
    const made = (fd: number): number => {
      fds.push(fd);
      return fd;
    };
    try {
      const directory = made(openSync(dir, 'r'));
      expect(refusal(directory)).toBe(`dupFileDescriptor(${directory}) failed on the remote transport: a directory cannot be relayed (it has no bytes to relay)`);
      expect(refusal(made(makeEventfd()))).toMatch(/an fd of kind eventfd cannot be relayed \(it has no byte stream to relay\)/);
      expect(refusal(made(openPidfd(process.pid)))).toMatch(/an fd of kind pidfd cannot/);
      expect(refusal(made(openSync(join(dir, 'target'), O_PATH)))).toMatch(/an O_PATH fd \(regular file\) cannot be relayed \(it opens nothing that can be read or written\)/);
      expect(refusal(made(openSync(dir, O_PATH)))).toMatch(/an O_PATH fd \(directory\) cannot/);
      expect(refusal(made(openSync(link, O_PATH | O_NOFOLLOW)))).toMatch(/an O_PATH fd \(symbolic link \(O_PATH\)\) cannot/);
      expect(refusal(made(openSync('/dev/null', O_PATH)))).toMatch(/an O_PATH fd \(character device\) cannot/);
      expect(refusal(made(openSync(BLOCK_DEVICE, O_PATH)))).toMatch(/an O_PATH fd \(block device\) cannot/);
    } finally {
      closeFds(fds);
      rmSync(link);
    }
  });

  test(`a block device${blockUnopenable ? ` (skipped: ${blockUnopenable})` : ''}`, () => {
    if (blockUnopenable) return;
    const fd = openSync(BLOCK_DEVICE, 'r');
    try {
      expect(refusal(fd)).toMatch(/a block device cannot be relayed \(it is not a byte stream\)/);
    } finally {
      closeSync(fd);
    }
  });

  test('a closed number is EBADF, as on every transport', () => {
    const [r, w] = makePipe();
    closeFds([r, w]);
    const err = (() => {
      try {
        return planRelay(r);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).code).toBe('EBADF');
  });
});
