/**
 * The remote transport through a local via (`sh -c '"$@"'`, which stays the
 * parent of `fdbridge serve --stdio` as ssh would): calls, relayed byte
 * streams of every kind that has one, the kinds that have none, flow
 * control, and the channel's loss. Besides the global check of this
 * process's fd table, every connection checks the server's table when its
 * command has closed (it must be back to its baseline).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import {
  ClosedError,
  connect,
  LOG_COMMAND,
  logRedirectOption,
  PeerExitedError,
  PROBE_COMMAND,
  RemoteError,
  SystemError,
  UnknownCommandError,
  UnsupportedError,
  type CommandSpec,
  type Connection,
} from '../../src';
import { closeFd, closeFds, diffFdTables, dupFd, fdFloor, fdIdentity, makeEventfd, makeMemfd, makePipe, openFdTable, openPidfd, type FdTable } from '../../src/fd';
import { rawListen, rawShutdown, rawSocketPair } from '../../src/testing';
import { DRAIN_ON_CLOSE_MS, type RemoteConnection } from '../../src/transports/remote';
import { STREAM_WINDOW } from '../../src/transports/remote-channel';
import { UnixSocket } from '../../src/socket';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { CLI, fdTableSettles, runCli } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { scaled } from '../util/time-scale';

/** A via that stays the parent of the server, as ssh does (killing it loses the channel, not the server). */
const VIA = ['sh', '-c', '"$@"', 'sh'];
const { serve: SERVE } = LOCAL_REMOTE;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-remote-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const opened: Connection[] = [];
/** Diffs of the server's fd table found when a command closed (each must be ''). */
const serverDiffs: string[] = [];

/** In each describe block: runs before the global fd-table check (test/setup/fd-table.ts), which is the outer scope's. */
function closeAfterEach(): void {
  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
    expect(serverDiffs.splice(0).filter((d) => d !== '')).toEqual([]);
  });
}

async function open(command: CommandSpec = PROBE_COMMAND): Promise<RemoteConnection> {
  let baseline: FdTable | undefined;
  const conn = (await connect('remote', {
    command,
    via: VIA,
    serve: SERVE,
    // The default time limit, scaled for a slower build (not what these tests check).
    timeoutMs: scaled(10_000),
    onCommandClosed: async (location) => {
      if (baseline) serverDiffs.push(await fdTableSettles(location.pid, baseline));
    },
  })) as RemoteConnection;
  baseline = openFdTable(conn.location.pid);
  opened.push(conn);
  return conn;
}

/** Reads `fd` (borrowed: a copy is read) asynchronously until end of file. */
/**
 * ASCII characters per call when a test moves more than one call carries
 * (MAX_CALL_JSON_BYTES of JSON, on every transport): well within it.
 */
const CALL_PIECE = 150_000;

/** Writes `text` (ASCII) through the command's `far` fd in calls that each fit; the bytes written. */
async function writeInCalls(conn: Connection, far: number, text: string): Promise<number> {
  let written = 0;
  for (let at = 0; at < text.length; at += CALL_PIECE) written += await conn.call<number>('write', far, text.slice(at, at + CALL_PIECE));
  return written;
}

/** NUMBERED, made at its first use (no test takes more than 8 MiB). */
let numbered = '';

/**
 * Characters `from` to `from + length` of NUMBERED: 16-byte records, each
 * its number (15 digits) and a newline, so that a piece carried twice, out
 * of order or not at all shows. A test's successive writes take successive
 * slices (what they carry together is then the slice from 0) of text made
 * once for the file, not again for every write: in jest's sandbox the 8 MiB
 * cost about 0.8 s of CPU.
 */
function numberedText(from: number, length: number): string {
  if (numbered === '') numbered = Array.from({ length: (8 << 20) / 16 }, (_, k) => `${String(k).padStart(15, '0')}\n`).join('');
  if (from + length > numbered.length) throw new RangeError(`numberedText: ${from + length} characters asked, ${numbered.length} made`);
  return numbered.slice(from, from + length);
}

function readToEnd(fd: number): Promise<Buffer> {
  const sock = new Socket({ fd: dupFd(fd), readable: true, writable: false });
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      sock.destroy();
      resolve(Buffer.concat(chunks));
    });
    sock.on('error', reject);
  });
}

/** Reads `fd` asynchronously until `n` bytes came. */
function readBytes(fd: number, n: number): Promise<Buffer> {
  const sock = new Socket({ fd: dupFd(fd), readable: true, writable: false });
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        sock.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    sock.on('error', reject);
  });
}

/** Resolves once `condition()` holds (checked every 20 ms; no deadline: the test's timeout is one). */
function until(condition: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = (): void => {
      if (condition()) resolve();
      else setTimeout(poll, 20);
    };
    poll();
  });
}

function gone(pid: number): Promise<void> {
  return new Promise((resolve) => {
    const poll = (): void => {
      if (!existsSync(`/proc/${pid}`)) resolve();
      else setTimeout(poll, 20);
    };
    poll();
  });
}

describe('calls', () => {
  closeAfterEach();

  test('reach the command, named, in the server process; errors come back typed', async () => {
    const conn = await open();
    expect(conn.transport).toBe('remote');
    expect(conn.location.pid).not.toBe(process.pid);
    expect(await conn.call('where')).toEqual({ transport: 'remote', pid: conn.location.pid, threadId: conn.location.threadId });
    expect(await conn.call('echo', { a: [1, 'two', null] })).toEqual({ a: [1, 'two', null] });
    const err = await conn.call('fail', 'no luck', 'E_LUCK').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).remote).toMatchObject({ message: 'no luck', code: 'E_LUCK' });
    // The connection goes on after a failed call.
    expect(await conn.call('echo', 7)).toBe(7);
  });

  test('a command the server does not serve is an UnknownCommandError', async () => {
    await expect(connect('remote', { command: { name: 'no-such-command' }, via: VIA, serve: SERVE })).rejects.toBeInstanceOf(UnknownCommandError);
  });

  test('a via that cannot be started is a SystemError; one that exits is a PeerExitedError with its status', async () => {
    const missing = await connect('remote', { command: PROBE_COMMAND, via: ['/nonexistent/ssh'] }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(SystemError);
    expect((missing as SystemError).code).toBe('ENOENT');
    const exits = await connect('remote', { command: PROBE_COMMAND, via: ['sh', '-c', 'echo nope >&2; exit 3', 'sh'] }).catch((e: unknown) => e);
    expect(exits).toBeInstanceOf(PeerExitedError);
    expect(exits).toMatchObject({ transport: 'remote', exitCode: 3 });
  });

  test('dupFileDescriptorSync is an UnsupportedError (the relays need the event loop it would stop)', async () => {
    const conn = await open();
    const [r, w] = makePipe();
    try {
      expect(() => conn.dupFileDescriptorSync(w)).toThrow(UnsupportedError);
      expect(await conn.call('echo', 'still usable')).toBe('still usable');
    } finally {
      closeFds([r, w]);
    }
  });

  test("a number closed before a connection is made is EBADF, never one of the via process's stdio ends", async () => {
    const conn = await open();
    const b = makeMemfd('numbering-b');
    closeFd(b);
    const before = openFdTable();
    // spawn's own pipes would take the lowest free number, `b`.
    const second = await open();
    const made = diffFdTables(before, openFdTable()).opened;
    expect(made.filter(({ fd }) => fd < fdFloor())).toEqual([]);
    for (const c of [conn, second]) {
      await expect(c.dupFileDescriptor(b)).rejects.toMatchObject({ code: 'EBADF' });
      for (const { fd, target } of made) await expect(c.dupFileDescriptor(fd).then(() => `fd ${fd} -> ${target} was relayed`)).rejects.toMatchObject({ code: 'EBADF' });
    }
    expect(await second.call('echo', 'usable')).toBe('usable');
  });

  test('bad options are TypeErrors', async () => {
    await expect(connect('remote', { command: PROBE_COMMAND, via: ['ssh', ''] })).rejects.toThrow(TypeError);
    await expect(connect('remote', { command: PROBE_COMMAND, via: 'ssh host' as unknown as string[] })).rejects.toThrow(TypeError);
  });
});

describe('relayed byte streams', () => {
  closeAfterEach();

  test('a pipe end, each way: bytes in order, end of file carried both ways', async () => {
    const conn = await open();
    const [r, w] = makePipe();
    try {
      // Down: the command writes into its end, closes it; we read to EOF.
      const farW = await conn.dupFileDescriptor(w);
      closeFd(w);
      const got = readToEnd(r);
      expect(await conn.call('write', farW, 'one ')).toBe(4);
      expect(await conn.call('write', farW, 'two')).toBe(3);
      await conn.call('adopt', [farW]);
      await conn.call('closeAdopted', [farW]);
      expect((await got).toString()).toBe('one two');
    } finally {
      closeFds([r]);
    }
    const [r2, w2] = makePipe();
    try {
      // Up: we write and close; the command reads the bytes, then end of file ('').
      const farR = await conn.dupFileDescriptor(r2);
      closeFd(r2);
      writeSync(w2, 'upward');
      closeFd(w2);
      expect(await conn.call('read', farR, 64)).toBe('upward');
      expect(await conn.call('read', farR, 64)).toBe('');
    } finally {
      closeFds([r2, w2].filter((fd) => fd !== r2 && fd !== w2));
    }
  });

  test('a stream socket, both ways: half-close from the client, close from the command', async () => {
    const conn = await open();
    const [a, b] = rawSocketPair('stream');
    try {
      const farA = await conn.dupFileDescriptor(a);
      closeFd(a);
      const down = readToEnd(b);
      expect(await conn.call('write', farA, 'from the command')).toBe(16);
      writeSync(b, 'from the client');
      expect(await conn.call('read', farA, 64)).toBe('from the client');
      rawShutdown(b, 'write');
      expect(await conn.call('read', farA, 64)).toBe('');
      await conn.call('adopt', [farA]);
      await conn.call('closeAdopted', [farA]);
      expect((await down).toString()).toBe('from the command');
    } finally {
      closeFd(b);
    }
  });

  test('a read-only regular file arrives as a read-only copy, at the client\'s offset; it is not the same file', async () => {
    const conn = await open();
    const file = join(dir, 'copy.txt');
    writeFileSync(file, 'skip:the rest of it');
    const fd = openSync(file, 'r');
    try {
      expect(readSync(fd, Buffer.alloc(5), 0, 5, null)).toBe(5);
      const far = await conn.dupFileDescriptor(fd);
      expect(await conn.call('read', far, 64)).toBe('the rest of it');
      expect(await conn.call('write', far, 'x').catch((e: unknown) => e)).toBeInstanceOf(RemoteError); // EBADF: read-only
      const [id] = await conn.call<Array<{ ino: string }>>('identities', [far]);
      expect(id?.ino).not.toBe(String(fdIdentity(fd).ino));
    } finally {
      closeSync(fd);
    }
  });

  test('a read-write file (a memfd) arrives as a read-only copy: the command\'s writes fail, none is lost silently', async () => {
    const conn = await open();
    const memfd = makeMemfd('remote-rw');
    try {
      writeSync(memfd, 'in memory');
      const far = await conn.dupFileDescriptor(memfd);
      expect(await conn.call('read', far, 64)).toBe(''); // at our offset: the end
      const err = await conn.call('write', far, 'x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteError);
      expect((err as RemoteError).remote.code).toBe('EBADF');
    } finally {
      closeFd(memfd);
    }
  });

  test('--logfile forms: PATH appends, !PATH truncates first, through the command\'s own writes', async () => {
    const file = join(dir, 'app.log');
    writeFileSync(file, 'before\n');
    const conn = await open(LOG_COMMAND);
    await logRedirectOption(conn, file);
    await conn.call('log', 'one');
    await logRedirectOption(conn, file);
    await conn.call('log', 'two');
    await conn.close();
    expect(readFileSync(file, 'utf8')).toBe('before\none\ntwo\n');
    const again = await open(LOG_COMMAND);
    await logRedirectOption(again, `!${file}`);
    await again.call('log', 'fresh');
    await again.close();
    expect(readFileSync(file, 'utf8')).toBe('fresh\n');
  });

  test('generated: a file open for writing gets the command\'s writes whole and in order, each there when its call resolves', async () => {
    const conn = await open();
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 1_500_000 }), { minLength: 1, maxLength: 4 }), fc.boolean(), async (sizes, append) => {
        const file = join(dir, `ordered-${run++}.log`);
        writeFileSync(file, 'head:');
        const fd = openSync(file, append ? 'a' : 'w');
        try {
          const far = await conn.dupFileDescriptor(fd);
          const head = append ? 'head:' : '';
          let sent = 0;
          for (const size of sizes) {
            const text = numberedText(sent, size);
            expect(await writeInCalls(conn, far, text)).toBe(size);
            sent += size;
            expect(readFileSync(file, 'latin1') === head + numberedText(0, sent)).toBe(true);
          }
          await conn.call('adopt', [far]);
          await conn.call('closeAdopted', [far]);
        } finally {
          closeSync(fd);
        }
      }),
      { numRuns: 6 },
    );
  });

  test('generated: what a command writes into a relayed pipe past the window, to a slow reader, arrives whole and in order before end of file', async () => {
    const conn = await open();
    // The first write alone passes the window; a second may follow it.
    const writes = fc
      .tuple(fc.integer({ min: STREAM_WINDOW + 1, max: STREAM_WINDOW + STREAM_WINDOW / 4 }), fc.array(fc.integer({ min: 1, max: STREAM_WINDOW / 2 }), { maxLength: 1 }))
      .map(([first, more]) => [first, ...more]);
    await fc.assert(
      fc.asyncProperty(writes, fc.integer({ min: 0, max: 2 }), async (sizes, lag) => {
        const [r, w] = makePipe();
        // A reader that stops for `lag` ms after each chunk: the server's
        // reads of the command's pipe pause on the window while replies go by.
        const sock = new Socket({ fd: dupFd(r), readable: true, writable: false });
        const chunks: Buffer[] = [];
        const got = new Promise<string>((resolve, reject) => {
          sock.on('data', (c: Buffer) => {
            chunks.push(c);
            if (lag > 0) {
              sock.pause();
              setTimeout(() => sock.resume(), lag);
            }
          });
          sock.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
          sock.on('error', reject);
        });
        try {
          const farW = await conn.dupFileDescriptor(w);
          closeFd(w);
          let sent = 0;
          for (const size of sizes) {
            expect(await writeInCalls(conn, farW, numberedText(sent, size))).toBe(size);
            sent += size;
          }
          const expected = numberedText(0, sent);
          await conn.call('adopt', [farW]);
          await conn.call('closeAdopted', [farW]);
          const text = await got;
          expect(text.length).toBe(expected.length);
          expect(text === expected).toBe(true);
        } finally {
          sock.destroy();
          closeFd(r);
        }
      }),
      { numRuns: 4 },
    );
  });

  test('a consumer that stops reading holds back its own stream only: calls and other streams go on', async () => {
    const conn = await open();
    const [stuckR, stuckW] = makePipe();
    const [r, w] = makePipe();
    // 64 MiB offered upward to a command end nobody reads.
    const writer = spawn('head', ['-c', String(64 << 20), '/dev/zero'], { stdio: ['ignore', stuckW, 'ignore'] });
    try {
      await conn.dupFileDescriptor(stuckR);
      closeFd(stuckW);
      const farW = await conn.dupFileDescriptor(w);
      // Let the stuck stream fill everything it may.
      for (let i = 0; i < 20; i++) await conn.call('echo', i);
      const got = readBytes(r, 5);
      expect(await conn.call('write', farW, 'alive')).toBe(5);
      expect((await got).toString()).toBe('alive');
      const stuck = conn.relays().find((s) => s.bytesOut > 0);
      // The stuck stream sent at most its window (plus the read that crossed it).
      expect(stuck?.bytesOut ?? 0).toBeLessThanOrEqual(STREAM_WINDOW + (1 << 20));
    } finally {
      writer.kill('SIGKILL');
      await new Promise((r2) => (writer.exitCode !== null || writer.signalCode !== null ? r2(null) : writer.once('exit', r2)));
      closeFds([stuckR, r, w]);
    }
  });

  test('generated: chunks each way through a relayed socket arrive whole and in order', async () => {
    const chunk = fc.tuple(fc.integer({ min: 1, max: 300_000 }), fc.integer({ min: 0, max: 25 })).map(([n, k]) => Buffer.alloc(n, 97 + k));
    // One connection for every run (each run's socket is closed by the
    // command before the next): its server's table is checked when it closes.
    const conn = await open();
    await fc.assert(
      fc.asyncProperty(fc.array(chunk, { minLength: 1, maxLength: 5 }), fc.array(fc.string({ minLength: 1, maxLength: 200 }), { minLength: 1, maxLength: 6 }), async (up, down) => {
        const [a, b] = rawSocketPair('stream');
        const sock = new Socket({ fd: dupFd(b), readable: true, writable: true, allowHalfOpen: true });
        try {
          const farA = await conn.dupFileDescriptor(a);
          closeFd(a);
          const received: Buffer[] = [];
          const ended = new Promise<void>((resolve) => sock.on('end', resolve));
          sock.on('data', (c: Buffer) => received.push(c));
          for (const c of up) sock.write(c);
          const expected = Buffer.concat(up).toString('latin1');
          // The command reads all we sent, in order (ASCII: its UTF-8 read is exact).
          let read = '';
          while (read.length < expected.length) read += await conn.call<string>('read', farA, CALL_PIECE);
          expect(read === expected).toBe(true);
          for (const d of down) await conn.call('write', farA, d);
          await conn.call('adopt', [farA]);
          await conn.call('closeAdopted', [farA]);
          await ended;
          expect(Buffer.concat(received).toString()).toBe(down.join(''));
        } finally {
          sock.destroy();
          closeFd(b);
        }
      }),
      { numRuns: 5 },
    );
  });
});

describe('kinds with no byte stream', () => {
  closeAfterEach();

  test('fail with UnsupportedError naming the kind; a batch holding one fails whole', async () => {
    const conn = await open();
    const sock = join(dir, 'listening.sock');
    const listening = rawListen('stream', sock, { mode: 0o600, backlog: 8 });
    const directory = openSync(dir, 'r');
    const eventfd = makeEventfd();
    const pidfd = openPidfd(process.pid);
    const [d1, d2] = rawSocketPair('dgram');
    const [r, w] = makePipe();
    const cases: Array<[number, RegExp]> = [
      [listening, /a listening socket/],
      [directory, /a directory/],
      [eventfd, /kind eventfd/],
      [pidfd, /kind pidfd/],
      [d1, /datagram/],
    ];
    try {
      const before = openFdTable(conn.location.pid);
      for (const [fd, kind] of cases) {
        const err = await conn.dupFileDescriptor(fd).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(UnsupportedError);
        expect((err as Error).message).toMatch(kind);
        const batch = await conn.dupFileDescriptors([r, fd, w]).catch((e: unknown) => e);
        expect(batch).toBeInstanceOf(UnsupportedError);
      }
      expect(await fdTableSettles(conn.location.pid, before)).toBe('');
    } finally {
      closeFds([listening, directory, eventfd, pidfd, d1, d2, r, w]);
      rmSync(sock, { force: true });
    }
  });
});

describe('closing while a call waits on a relayed stream', () => {
  closeAfterEach();

  /** Writes past the window through `far`, in calls sent at once: the server runs them in turn, and one waits. */
  async function writePastWindow(conn: RemoteConnection, far: number): Promise<Array<Promise<unknown>>> {
    const calls: Array<Promise<unknown>> = [];
    for (let n = 0; n < STREAM_WINDOW + (1 << 20); n += CALL_PIECE) calls.push(conn.call('write', far, 'x'.repeat(CALL_PIECE)));
    // The window is spent: the server reads no more of the command's end.
    await until(() => conn.relays().some((s) => s.bytesIn >= STREAM_WINDOW));
    return calls;
  }

  /**
   * Each staging leaves the command's thread in a call that waits on a
   * relayed stream nothing here moves; the calls are sent before close(), so
   * the server runs them before the command's close(), which waits for them.
   */
  const holds: Array<[string, (conn: RemoteConnection) => Promise<{ calls: Array<Promise<unknown>>; fds: number[] }>]> = [
    [
      'writeSync past the window into a pipe whose reader here does not read',
      async (conn) => {
        const [r, w] = makePipe();
        return { calls: await writePastWindow(conn, await conn.dupFileDescriptor(w)), fds: [r, w] };
      },
    ],
    [
      'readSync of a pipe whose writer here stays open',
      async (conn) => {
        const [r, w] = makePipe();
        return { calls: [conn.call('read', await conn.dupFileDescriptor(r), 16)], fds: [r, w] };
      },
    ],
    [
      'writeSync past the window into a stream socket nobody here reads',
      async (conn) => {
        const [a, b] = rawSocketPair('stream');
        return { calls: await writePastWindow(conn, await conn.dupFileDescriptor(a)), fds: [a, b] };
      },
    ],
  ];

  test.each(holds)('%s: close() ends with no timer but its drain time, the calls left reject with ClosedError, the server exits', async (_name, hold) => {
    const conn = (await connect('remote', { command: PROBE_COMMAND, via: VIA, serve: SERVE })) as RemoteConnection;
    opened.push(conn);
    const serverPid = conn.location.pid;
    const { calls, fds } = await hold(conn);
    const settled = Promise.allSettled(calls);
    // Only setTimeout and setInterval are jest's: close() may count on its
    // drain time passing (DRAIN_ON_CLOSE_MS), and on no other timer.
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'hrtime', 'performance', 'Date'] });
    try {
      const closing = conn.close();
      await jest.advanceTimersByTimeAsync(DRAIN_ON_CLOSE_MS);
      jest.useRealTimers();
      await closing;
      const outcomes = (await settled).map((s) => (s.status === 'fulfilled' ? 'written' : s.reason instanceof ClosedError ? 'ClosedError' : s.reason));
      // The last call was still waiting (or queued behind the one that was).
      expect(outcomes.at(-1)).toBe('ClosedError');
      expect(outcomes.filter((o) => o !== 'written' && o !== 'ClosedError')).toEqual([]);
      await gone(serverPid);
    } finally {
      jest.useRealTimers();
      closeFds(fds);
    }
  });
});

describe('losing the channel', () => {
  closeAfterEach();

  test('the via process killed mid-transfer: every pending request rejects with PeerExitedError, the server exits', async () => {
    const conn = await open();
    const serverPid = conn.location.pid;
    const [r, w] = makePipe();
    const feeder = spawn('head', ['-c', String(32 << 20), '/dev/zero'], { stdio: ['ignore', w, 'ignore'] });
    try {
      await conn.dupFileDescriptor(r);
      const pending: Array<Promise<unknown>> = [conn.call('hang')];
      for (let i = 0; i < 50; i++) pending.push(i % 2 ? conn.dupFileDescriptor(w) : conn.call('echo', i));
      conn.via.kill('SIGKILL');
      const settled = await Promise.allSettled(pending);
      const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
      expect(rejected.length).toBeGreaterThan(0);
      for (const { reason } of rejected) {
        expect(reason).toBeInstanceOf(PeerExitedError);
        expect(reason).toMatchObject({ transport: 'remote', signal: 'SIGKILL' });
      }
      await expect(conn.call('echo', 1)).rejects.toBeInstanceOf(PeerExitedError);
      await expect(conn.dupFileDescriptor(w)).rejects.toBeInstanceOf(PeerExitedError);
      // Its stdin ended: the orphaned server closes its command and exits.
      await gone(serverPid);
    } finally {
      feeder.kill('SIGKILL');
      await new Promise((r2) => (feeder.exitCode !== null || feeder.signalCode !== null ? r2(null) : feeder.once('exit', r2)));
      closeFds([r, w]);
    }
  });

  test("the channel's input closed behind fdbridge's back (a copy of it kept: the via does not see it go), its number then taken by a socket of fdbridge's: pending and later requests fail at once with a ClosedError naming that close, not a PeerExitedError", async () => {
    const had = registeredFds();
    const conn = await open();
    // The via's stdin, stdout and stderr ends, made in that order: the input reads its stdout.
    const ends = [...registeredSince(had)].filter(([, t]) => t.startsWith('socket:')).map(([fd]) => fd).sort((a, b) => a - b);
    expect(ends).toHaveLength(3);
    const input = ends[1] as number;
    // Sockets of fdbridge's on the free numbers below the input's, so that the socket made next lands there.
    const fillers: Array<ReturnType<typeof UnixSocket.pair>> = [];
    let socket: ReturnType<typeof UnixSocket.pair> | undefined;
    const copy = dupFd(input);
    const [r, w] = makePipe();
    try {
      do fillers.push(UnixSocket.pair('seqpacket', { own: true }));
      while ((fillers[fillers.length - 1] as ReturnType<typeof UnixSocket.pair>)[0].fd < input);
      // The command's thread is in hang(): the echoes behind it wait too.
      const pending: Array<Promise<unknown>> = [conn.call('hang'), conn.call('echo', 1), conn.call('echo', 2)];
      closeSync(input); // the program's close, behind fdbridge's back
      socket = UnixSocket.pair('seqpacket', { own: true });
      expect(socket[0].fd).toBe(input);
      const errors = await Promise.all(pending.map((p) => p.then(() => undefined, (e: unknown) => e)));
      // Told without waiting for the via, which did not exit: it has not yet (its stdin ends only now).
      expect({ exitCode: conn.via.exitCode, signal: conn.via.signalCode }).toEqual({ exitCode: null, signal: null });
      const later = await Promise.all(
        [conn.call('echo', 3), conn.dupFileDescriptor(r), conn.dupFileDescriptors([r, w])].map((p) => p.then(() => undefined, (e: unknown) => e)),
      );
      for (const err of [...errors, ...later]) {
        expect(err).toBeInstanceOf(ClosedError);
        expect(err).not.toBeInstanceOf(PeerExitedError);
        expect(err).toMatchObject({
          code: 'ERR_FDBRIDGE_CLOSED',
          message: expect.stringContaining(`the remote connection ended: its channel's input (fd ${input}) was closed by someone other than fdbridge`) as unknown,
        });
      }
    } finally {
      for (const end of [...(socket ?? []), ...fillers.flat()]) end.close();
      closeFds([copy, r, w]);
    }
  });
});

test('the scenario matrix\'s remote column (default profile, local via): every row passes, or is skipped for a capability it needs', async () => {
  const json = join(dir, 'matrix.json');
  // Not synchronous (jest's timeout could not end it) and no time limit of its own: each row ends by its --timeout
  // (the default 30 s, scaled for a slower build).
  const run = await runCli(['run', '--transport', 'remote', '--settle', '300', '--timeout', String(scaled(30_000)), '--json', json], {
    env: { FDBRIDGE_SCENARIOS_DIR: '', FDBRIDGE_REMOTE_VIA: '' },
  });
  const rows = (JSON.parse(readFileSync(json, 'utf8')) as { results: Array<{ scenario: string; status: string; error?: string }> }).results;
  expect(rows.filter((x) => x.status === 'fail').map((x) => `${x.scenario}: ${x.error ?? ''}`)).toEqual([]);
  const skipped = rows.filter((x) => x.status === 'skip');
  for (const x of skipped) expect(x.error).toMatch(/^needs (identity|every-kind)(, [a-z-]+)*: the remote transport relays bytes/);
  // The log scenarios (the log command's --logfile forms included) run there.
  for (const name of ['append-log-file', 'truncate-log-file', 'redirect-log-to-stdout', 'redirect-log-to-stderr']) {
    expect(rows.find((x) => x.scenario === name)?.status).toBe('pass');
  }
  expect(run).toMatchObject({ code: 0 });
}, scaled(300_000));

test('the CLI refuses serve without --stdio', () => {
  expect(() => execFileSync(process.execPath, [CLI, 'serve'], { stdio: 'pipe' })).toThrow(/--stdio is required/);
});

/**
 * Through OpenSSH to this machine, where an sshd answers without a
 * password (BatchMode); skipped otherwise, the reason in the test's name.
 * $FDBRIDGE_TEST_SSH_VIA (words separated by spaces) names another way
 * there, e.g. `ssh -F ./ssh_config 127.0.0.1 --` for an sshd on another
 * port with a key of its own.
 */
const SSH_VIA = process.env['FDBRIDGE_TEST_SSH_VIA']?.trim()
  ? (process.env['FDBRIDGE_TEST_SSH_VIA'] as string).trim().split(/\s+/)
  : ['ssh', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'StrictHostKeyChecking=accept-new', '127.0.0.1', '--'];
const sshUnreachable = ((): string | undefined => {
  const probe = spawnSync(SSH_VIA[0] as string, [...SSH_VIA.slice(1), 'true'], { encoding: 'utf8', timeout: 15_000 });
  if (probe.error) return `no ssh client (${probe.error.message})`;
  if (probe.status !== 0) return `no sshd reachable at 127.0.0.1 without a password: ${(probe.stderr || `exit ${probe.status}`).trim().split('\n').pop()}`;
  return undefined;
})();

describe(`through ssh 127.0.0.1${sshUnreachable ? ` (skipped: ${sshUnreachable})` : ''}`, () => {
  closeAfterEach();
  (sshUnreachable ? test.skip : test)('calls, a relayed pipe each way and a log file, over the channel OpenSSH carries', async () => {
    const conn = (await connect('remote', { command: PROBE_COMMAND, via: SSH_VIA, serve: SERVE })) as RemoteConnection;
    opened.push(conn);
    expect(await conn.call('echo', 'over ssh')).toBe('over ssh');
    const [r, w] = makePipe();
    try {
      const farW = await conn.dupFileDescriptor(w);
      closeFd(w);
      const got = readToEnd(r);
      await conn.call('write', farW, 'through sshd');
      await conn.call('adopt', [farW]);
      await conn.call('closeAdopted', [farW]);
      expect((await got).toString()).toBe('through sshd');
    } finally {
      closeFd(r);
    }
    const file = join(dir, 'ssh.log');
    const log = await connect('remote', { command: LOG_COMMAND, via: SSH_VIA, serve: SERVE });
    opened.push(log);
    await logRedirectOption(log, file);
    await log.call('log', 'over ssh');
    expect(readFileSync(file, 'utf8')).toBe('over ssh\n');
  });

  (sshUnreachable ? test.skip : test)('the scenario matrix\'s remote column through ssh (FDBRIDGE_REMOTE_VIA)', async () => {
    const json = join(dir, 'ssh-matrix.json');
    // As above: each row ends by its --timeout.
    const run = await runCli(['run', '--transport', 'remote', '--settle', '300', '--json', json], {
      env: { FDBRIDGE_REMOTE_VIA: SSH_VIA.join(' '), FDBRIDGE_SCENARIOS_DIR: '' },
    });
    const results = JSON.parse(readFileSync(json, 'utf8')) as { results: Array<{ scenario: string; status: string; error?: string }> };
    expect(results.results.filter((x) => x.status === 'fail').map((x) => `${x.scenario}: ${x.error ?? ''}`)).toEqual([]);
    expect(results.results.some((x) => x.status === 'pass')).toBe(true);
    expect(run).toMatchObject({ code: 0 });
  }, scaled(300_000));
});
