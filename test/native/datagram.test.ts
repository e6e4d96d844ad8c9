/**
 * Connectionless datagram sockets bound to a name (DatagramSocket): binding
 * with the socket-file rules, sendTo / receive with fds, the sender's
 * address and credentials, and the datagram truths: whole or truncated, a
 * full receiver waits or fails (never drops), a dead peer sends no end of
 * file, unread fds are released with the receiving socket. The jest setup
 * checks the open-fd table after every test; the generated test checks it
 * after every sequence too.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createRng, type Rng } from '../../harness/rng';
import { startDatagramPeer, type DatagramPeer } from '../../scenarios/support/datagram-peer';
import { DatagramSocket, type Datagram } from '../../src/datagram';
import { ClosedError, FdBridgeError, PeerGoneError, QueueFullError, TimeoutError, TruncatedError } from '../../src/errors';
import { diffFdTables, formatFdTableDiff, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { constants, native } from './binding';
import {
  abstractName,
  expectRangeError,
  expectSystemError,
  openBackgroundClosesDone,
  readPipe,
  rejection,
  thrown,
  withScope,
  type Scope,
} from './helpers';

const QLEN = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim());
// unix_recvq_full: a receiver is full once it holds more than max_dgram_qlen.
const CAPACITY = QLEN + 1;

function bindIn(s: Scope, name = 'rx.sock', options: Parameters<typeof DatagramSocket.bind>[1] = {}): DatagramSocket {
  return s.add(DatagramSocket.bind(join(s.dir(), 'private', name), options));
}

/**
 * A client bound in a private directory and a helper process bound beside
 * it that answers "pong" to anything but "die", which kills it before it
 * answers (scenarios/support/datagram-peer).
 */
async function clientAndHelper(s: Scope): Promise<{ helperPath: string; client: DatagramSocket; helper: DatagramPeer }> {
  const dir = join(s.dir(), 'p');
  const helperPath = join(dir, 'helper.sock');
  const client = s.add(DatagramSocket.bind(join(dir, 'client.sock')));
  const helper = await startDatagramPeer(helperPath);
  s.child(helper.child);
  return { helperPath, client, helper };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('binding a name', () => {
  test('a path: the directory is made private (0700), the file is 0600, close removes it', () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'sockets');
      const path = join(dir, 'rx.sock');
      const rx = s.add(DatagramSocket.bind(path));
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      const st = lstatSync(path);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
      expect(rx.address).toBe(path);
      rx.close();
      expect(existsSync(path)).toBe(false);
      rx.close(); // idempotent
    }));

  test('a directory others can enter or write, or a symlink to one, is refused with nothing bound', () =>
    withScope((s) => {
      const open = join(s.dir(), 'open');
      mkdirSync(open, { mode: 0o755 });
      chmodSync(open, 0o755);
      const err = thrown(() => DatagramSocket.bind(join(open, 'rx.sock')));
      expect(err).toBeInstanceOf(FdBridgeError);
      expect((err as FdBridgeError).code).toBe('ERR_FDBRIDGE_UNSAFE_PATH');
      expect(existsSync(join(open, 'rx.sock'))).toBe(false);

      const target = join(s.dir(), 'target');
      mkdirSync(target, { mode: 0o700 });
      const link = join(s.dir(), 'link');
      symlinkSync(target, link);
      expect((thrown(() => DatagramSocket.bind(join(link, 'rx.sock'))) as FdBridgeError).code).toBe('ERR_FDBRIDGE_UNSAFE_PATH');
      expect(existsSync(join(target, 'rx.sock'))).toBe(false);

      // The way out, for a directory secured some other way.
      s.add(DatagramSocket.bind(join(open, 'rx.sock'), { privateDir: false })).close();
    }));

  test('a stale socket file is replaced; a live one and a non-socket are never taken or removed', () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'private');
      mkdirSync(dir, { mode: 0o700 });
      const path = join(dir, 'rx.sock');
      // Stale: bound by a socket that is gone (the file stays after close(2)).
      native.close(native.listen(constants.SOCK_DGRAM, path, false, 0o600, 0));
      expect(lstatSync(path).isSocket()).toBe(true);
      const rx = s.add(DatagramSocket.bind(path));
      // Live: someone is bound there.
      const live = thrown(() => DatagramSocket.bind(path));
      expect((live as FdBridgeError).code).toBe('ERR_FDBRIDGE_ADDRESS_IN_USE');
      expect((live as Error).message).toContain(path);
      const tx = s.add(DatagramSocket.open());
      await tx.sendTo(path, Buffer.from('still mine'));
      expect((await rx.receive()).data.toString()).toBe('still mine');
      // Not a socket: left alone.
      const file = join(dir, 'file');
      writeFileSync(file, 'keep');
      expect((thrown(() => DatagramSocket.bind(file)) as FdBridgeError).code).toBe('ERR_FDBRIDGE_UNSAFE_PATH');
      expect(readFileSync(file, 'utf8')).toBe('keep');
      // replaceStale: false leaves even a stale file to the caller.
      rx.close();
      native.close(native.listen(constants.SOCK_DGRAM, path, false, 0o600, 0));
      expectSystemError(thrown(() => DatagramSocket.bind(path, { replaceStale: false })), 'EADDRINUSE', 'bind');
    }));

  test('an abstract name: no file; a name in use gives EADDRINUSE', () =>
    withScope(async (s) => {
      const name = abstractName('dgram');
      const rx = s.add(DatagramSocket.bind({ abstract: name }));
      expect(rx.address).toEqual({ abstract: name });
      expectSystemError(thrown(() => DatagramSocket.bind({ abstract: name })), 'EADDRINUSE', 'bind');
      const tx = s.add(DatagramSocket.open());
      await tx.sendTo({ abstract: name }, Buffer.from('x'));
      expect((await rx.receive()).data.toString()).toBe('x');
    }));

  test('bad arguments throw at once', () =>
    withScope(async (s) => {
      expect(thrown(() => DatagramSocket.bind(''))).toBeInstanceOf(TypeError);
      expectRangeError(thrown(() => DatagramSocket.bind(join(s.dir(), 'x'.repeat(120)))), /sun_path/);
      expectRangeError(thrown(() => DatagramSocket.bind(join(s.dir(), 'p', 'a'), { mode: 0o10000 })));
      expect(thrown(() => DatagramSocket.open({ whenFull: 'drop' as never }))).toBeInstanceOf(TypeError);
      const rx = bindIn(s);
      expectRangeError(thrown(() => rx.receive({ timeoutMs: -1 })));
      const tx = s.add(DatagramSocket.open());
      expectRangeError(await rejection(tx.sendTo(rx.address as string, Buffer.alloc(1), new Array(254).fill(0))));
      // (thrown by the addon, from another realm than jest's: compare names)
      expect((await rejection(tx.sendTo(rx.address as string, 'text' as never)) as Error).name).toBe('TypeError');
    }));
});

describe('sending and receiving', () => {
  test('the sender is named: a bound sender by its address, an unbound one as null; credentials on request', () =>
    withScope(async (s) => {
      const rx = s.add(DatagramSocket.bind(join(s.dir(), 'p', 'rx.sock'), { credentials: true }));
      const plain = bindIn(s, 'plain.sock');
      const unbound = s.add(DatagramSocket.open());
      const bound = bindIn(s, 'tx.sock');
      const abstract = s.add(DatagramSocket.bind({ abstract: abstractName('tx') }));
      await unbound.sendTo(rx.address as string, Buffer.from('u'));
      await bound.sendTo(rx.address as string, Buffer.from('b'));
      await abstract.sendTo(rx.address as string, Buffer.from('a'));
      await bound.sendTo(plain.address as string, Buffer.from('p'));
      const me = { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() };
      const got: Array<Datagram<true>> = [await rx.receive(), await rx.receive(), await rx.receive()];
      expect(got.map((d) => [d.data.toString(), d.from])).toEqual([
        ['u', null],
        ['b', bound.address],
        ['a', abstract.address],
      ]);
      for (const d of got) expect(d.credentials).toEqual(me);
      const p = await plain.receive();
      expect(p.from).toBe(bound.address);
      expect(p.credentials).toBeUndefined();
    }));

  test('an answer goes back to the address the request came from, fds both ways', () =>
    withScope(async (s) => {
      const server = bindIn(s, 'server.sock');
      const client = bindIn(s, 'client.sock');
      const file = s.file('f');
      writeFileSync(file.path, 'content');
      await client.sendTo(server.address as string, Buffer.from('request'), [file.fd.fd]);
      const req = await server.receive();
      const [theirs] = s.ownAll(req.fds);
      expect(sameFile(theirs!.fd, file.fd.fd)).toBe(true);
      await server.sendTo(req.from as string, Buffer.from('reply'), [theirs!.fd]);
      const reply = await client.receive();
      const [back] = s.ownAll(reply.fds);
      expect(reply.data.toString()).toBe('reply');
      expect(sameFile(back!.fd, file.fd.fd)).toBe(true);
      expect(native.getFlags(back!.fd) & 1).toBe(1); // close-on-exec on arrival
    }));

  test('sending to nobody fails with a clear error and nothing queued', () =>
    withScope(async (s) => {
      const tx = s.add(DatagramSocket.open());
      const dir = join(s.dir(), 'p');
      const err = await rejection(tx.sendTo(join(dir, 'none.sock'), Buffer.from('x')));
      expectSystemError(err, 'ENOENT', 'sendto');
      const rx = s.add(DatagramSocket.bind(join(dir, 'gone.sock')));
      const path = rx.address as string;
      native.close(native.dup(rx.fd)); // (a no-op: proves the fd is live)
      rx.close();
      native.close(native.listen(constants.SOCK_DGRAM, path, false, 0o600, 0)); // a stale file at the path
      const refused = await rejection(tx.sendTo(path, Buffer.from('x'), [tx.fd]));
      expectSystemError(refused, 'ECONNREFUSED', 'sendto');
      expect((refused as Error).message).toContain('nobody is bound');
      expect(tx.queuedSends).toBe(0);
      expectSystemError(await rejection(tx.sendTo(path, Buffer.from('x'), [987654])), 'EBADF', 'sendto');
      tx.close();
      expect(await rejection(tx.sendTo(path, Buffer.from('x')))).toBeInstanceOf(ClosedError);
    }));

  test('a datagram is whole or truncated: a typed error, its fds closed (on the background closer), the next one intact', () =>
    withScope(async (s) => {
      const rx = bindIn(s, 'rx.sock', { bufferSize: 16, maxFds: 2 });
      const tx = s.add(DatagramSocket.open());
      const f = s.file('f').fd;
      const before = openFdTable();
      await tx.sendTo(rx.address as string, Buffer.alloc(17, 7), [f.fd]); // one byte too many
      await tx.sendTo(rx.address as string, Buffer.from('ok'), [f.fd, f.fd, f.fd]); // one fd too many
      await tx.sendTo(rx.address as string, Buffer.alloc(16, 1), [f.fd, f.fd]); // exactly fits
      const data = await rejection(rx.receive());
      expect(data).toBeInstanceOf(TruncatedError);
      expect(data).toMatchObject({ what: 'data', bytes: 17, fdsClosed: 1 });
      expect((data as TruncatedError).data).toEqual(Buffer.alloc(16, 7));
      const control = await rejection(rx.receive());
      expect(control).toMatchObject({ what: 'control', fdsClosed: 3 });
      expect((control as TruncatedError).data.toString()).toBe('ok');
      // A peer's fds, whose last close can block: closed off the event loop.
      await openBackgroundClosesDone();
      expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
      const whole = await rx.receive();
      s.ownAll(whole.fds);
      expect(whole.data).toEqual(Buffer.alloc(16, 1));
      expect(whole.fds).toHaveLength(2);
    }));
});

describe('a full receiver', () => {
  test("'fail': EAGAIN once the receiver holds max_dgram_qlen + 1, nothing sent, nothing dropped", () =>
    withScope(async (s) => {
      const rx = bindIn(s);
      const tx = s.add(DatagramSocket.open({ whenFull: 'fail' }));
      const f = s.file('f').fd;
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(rx.address as string, Buffer.from(`m${i}`), [f.fd]);
      const err = await rejection(tx.sendTo(rx.address as string, Buffer.from('over'), [f.fd]));
      expectSystemError(err, 'EAGAIN', 'sendto');
      expect((err as Error).message).toContain("whenFull: 'wait'");
      expect(tx.queuedSends).toBe(0);
      const got: string[] = [];
      for (let i = 0; i < CAPACITY; i++) {
        const d = await rx.receive();
        s.ownAll(d.fds);
        expect(d.fds).toHaveLength(1);
        got.push(d.data.toString());
      }
      expect(got).toEqual(Array.from({ length: CAPACITY }, (_, i) => `m${i}`));
      await expect(rx.receive({ timeoutMs: 20 })).rejects.toBeInstanceOf(TimeoutError);
    }));

  test("'wait': the datagram waits (the loop sleeps: no retry per turn) and leaves when the receiver reads", () =>
    withScope(async (s) => {
      const rxPath = join(s.dir(), 'p', 'rx.sock');
      const rx = s.add(DatagramSocket.bind(rxPath));
      // The native socket, to count the retries of a waiting send.
      const txFd = native.dgramSocket();
      const settled: Array<Error | null> = [];
      const tx = new native.Socket(txFd, constants.SOCK_DGRAM, { maxFds: 0 });
      s.defer(() => tx.close());
      const f = s.file('f').fd;
      for (let i = 0; i < CAPACITY; i++) expect(tx.sendTo(rxPath, false, Buffer.from(`m${i}`), [f.fd], true)).toBe(0);
      expect(tx.sendTo(rxPath, false, Buffer.from('waits'), [f.fd], true, (err) => settled.push(err))).toBe(1);
      // A 'fail' send never overtakes the one waiting.
      expectSystemError(thrown(() => tx.sendTo(rxPath, false, Buffer.from('no'), [], false)), 'EAGAIN', 'sendto');
      expect(tx.queuedSends).toBe(1);
      // Many event-loop turns (timers, I/O of other tests) go by while it waits.
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 50));
      expect(settled).toEqual([]);
      expect(tx.fullSends).toBe(1); // tried once, then slept on its pin
      const first = await rx.receive();
      s.ownAll(first.fds);
      await until(() => settled.length === 1, 'the waiting datagram left');
      expect(settled).toEqual([null]);
      expect(tx.fullSends).toBeLessThanOrEqual(2);
      const rest: string[] = [];
      for (let i = 1; i <= CAPACITY; i++) {
        const d = await rx.receive();
        s.ownAll(d.fds);
        rest.push(d.data.toString());
      }
      expect(rest).toEqual([...Array.from({ length: CAPACITY - 1 }, (_, i) => `m${i + 1}`), 'waits']);
    }));

  test("'wait': a receiver that goes away rejects the waiting datagram and its held fds are closed", () =>
    withScope(async (s) => {
      const dir = s.dir();
      const before = openFdTable();
      const rx = s.add(DatagramSocket.bind(join(dir, 'p', 'rx.sock')));
      const tx = s.add(DatagramSocket.open());
      const f = s.file('f').fd;
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(rx.address as string, Buffer.from('x'), [f.fd]);
      const waiting = tx.sendTo(rx.address as string, Buffer.from('waits'), [f.fd, f.fd]);
      expect(tx.queuedSends).toBe(1);
      rx.close(); // the kernel releases the CAPACITY fds queued unread in it, and the file goes
      const err = await rejection(waiting);
      // Sent through its pin, connected to that receiver: it is gone.
      expectSystemError(err, 'ECONNREFUSED', 'sendto');
      expect((err as Error).message).toContain('when it was sent is gone');
      expect(tx.queuedSends).toBe(0);
      tx.close(); // and its pin
      f.close();
      // The waiting datagram's copies went to the background closer.
      await openBackgroundClosesDone();
      expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
    }));

  test("'wait' is bounded: past the send queue's limit a sendTo rejects with QueueFullError, nothing sent or held", () =>
    withScope(async (s) => {
      const rx = bindIn(s);
      const tx = s.add(DatagramSocket.open({ sendQueueLimit: 1000 }));
      const f = s.file('f').fd;
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(rx.address as string, Buffer.from(`k${i}`));
      // Each waiting datagram is charged its bytes + 256: three fit under 1000, the fourth does not.
      const waiting = [0, 1, 2, 3].map((i) => tx.sendTo(rx.address as string, Buffer.alloc(100, i), [f.fd]));
      const full = await rejection(waiting.pop()!);
      expect(full).toBeInstanceOf(QueueFullError);
      expect(tx.queuedSends).toBe(3);
      for (let i = 0; i < CAPACITY + 3; i++) s.ownAll((await rx.receive()).fds);
      await Promise.all(waiting);
      expect(tx.queuedSends).toBe(0);
      await expect(rx.receive({ timeoutMs: 20 })).rejects.toBeInstanceOf(TimeoutError);
    }));

  test("'wait': closing the sender rejects what waits (ECANCELED), holding no fd", () =>
    withScope(async (s) => {
      const rx = bindIn(s);
      const tx = s.add(DatagramSocket.open());
      const f = s.file('f').fd;
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(rx.address as string, Buffer.from('x'));
      const waiting = [tx.sendTo(rx.address as string, Buffer.from('a'), [f.fd]), tx.sendTo(rx.address as string, Buffer.from('b'), [f.fd])];
      tx.close();
      for (const w of waiting) expectSystemError(await rejection(w), 'ECANCELED', 'sendto');
    }));
});

describe('what a connection would have told', () => {
  test('fds in datagrams nobody read are released when the receiving socket closes', () =>
    withScope(async (s) => {
      const rx = bindIn(s);
      const tx = s.add(DatagramSocket.open());
      const pipe = s.pipe();
      await tx.sendTo(rx.address as string, Buffer.from('take this'), [pipe.write.fd]);
      await tx.sendTo(rx.address as string, Buffer.from('and this'), [pipe.write.fd, pipe.write.fd]);
      pipe.write.close();
      // The write end lives on in flight: no end of file yet.
      expect(readPipe(pipe.read.fd)).toBe('empty');
      rx.close();
      await until(() => readPipe(pipe.read.fd) === 'eof', 'the in-flight write ends were released');
    }));

  test('a peer that died sends no end of file: a receive without a deadline would wait forever, with one it rejects', () =>
    withScope(async (s) => {
      const { helperPath, client, helper } = await clientAndHelper(s);
      await client.sendTo(helperPath, Buffer.from('ping'));
      expect((await client.receive({ timeoutMs: 20_000 })).data.toString()).toBe('pong');
      helper.child.kill('SIGKILL');
      await helper.exited;
      // The request is sent to a dead name (the file stays: ECONNREFUSED), and
      // the receive for its answer ends only by its deadline.
      expectSystemError(await rejection(client.sendTo(helperPath, Buffer.from('ping'))), 'ECONNREFUSED', 'sendto');
      const timedOut = await rejection(client.receive({ timeoutMs: 100 }));
      expect(timedOut).toBeInstanceOf(TimeoutError);
      expect((timedOut as Error).message).toContain('no end of file');
      // The next process to bind the name replaces the stale file.
      s.add(DatagramSocket.bind(helperPath)).close();
    }));

  test("with the peer's pidfd, a receive ends when the peer dies (PeerGoneError), no deadline needed; an answer first wins", () =>
    withScope(async (s) => {
      const { helperPath, client, helper } = await clientAndHelper(s);
      const pidfd = s.own(native.pidfdOpen(helper.child.pid!));
      const before = openFdTable();
      await client.sendTo(helperPath, Buffer.from('ping'));
      expect((await client.receive({ peerPidfd: pidfd.fd })).data.toString()).toBe('pong');
      expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe(''); // the watch went with the answer
      await client.sendTo(helperPath, Buffer.from('die'));
      const gone = await rejection(client.receive({ peerPidfd: pidfd.fd }));
      expect(gone).toBeInstanceOf(PeerGoneError);
      expect((gone as FdBridgeError).code).toBe('ERR_FDBRIDGE_PEER_GONE');
      // (the helper's stdout pipe closes with it: the table is checked once the test ends)
      // Already dead: at once.
      expect(await rejection(client.receive({ peerPidfd: pidfd.fd }))).toBeInstanceOf(PeerGoneError);
      // Not an fd: rejected, nothing waited for.
      expectSystemError(await rejection(client.receive({ peerPidfd: 987654 })), 'EBADF');
      expectRangeError(thrown(() => client.receive({ peerPidfd: -1 })));
    }));

  test('a pending receive rejects with ClosedError when the socket closes', () =>
    withScope(async (s) => {
      const rx = bindIn(s);
      const pending = rx.receive({ timeoutMs: 60_000 });
      rx.close();
      expect(await rejection(pending)).toBeInstanceOf(ClosedError);
    }));
});

/**
 * Generated sequences, checked against a model: senders (bound, unbound,
 * abstract) send datagrams of random sizes and fd counts, under 'wait' or
 * 'fail', to a receiver that reads at random moments. Every datagram must
 * arrive exactly once, in its sender's order, whole (same bytes, same
 * files) or, when it exceeds the receiver's buffer or fd room, as a
 * TruncatedError that closed every fd that came; a 'fail' send rejects with
 * EAGAIN exactly when the model says the receiver is full or that sender
 * has datagrams waiting; and the fd table ends where it started.
 */
describe('generated sequences against a model', () => {
  const SEQUENCES = 12;
  const BUFFER = 64;
  const MAX_FDS = 3;

  interface Sent {
    sender: number;
    seq: number;
    size: number;
    fds: number[];
  }

  function payload(sender: number, seq: number, size: number): Buffer {
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i++) b[i] = (sender * 31 + seq * 7 + i) & 0xff;
    b[0] = sender;
    b.writeUInt16LE(seq, 1);
    return b;
  }

  const seen = { waited: 0, refused: 0, truncated: 0, whole: 0 };

  async function runSequence(rng: Rng): Promise<void> {
    await withScope(async (s) => {
      const rx = s.add(DatagramSocket.bind(join(s.dir(), 'p', 'rx.sock'), { bufferSize: BUFFER, maxFds: MAX_FDS, credentials: true }));
      const senders = [
        s.add(DatagramSocket.open()),
        bindIn(s, 'tx1.sock'),
        s.add(DatagramSocket.bind({ abstract: abstractName('gen') })),
      ];
      const files = [makeMemfd('a'), makeMemfd('b'), makeMemfd('c')].map((fd) => s.own(fd).fd);
      const seqs = senders.map(() => 0);
      // The model: the receiver's kernel queue (in arrival order) and each sender's own queue.
      const kernel: Sent[] = [];
      const waiting: Sent[][] = senders.map(() => []);
      const pending: Array<Promise<void>> = [];

      const receiveOne = async (): Promise<void> => {
        let d: Datagram<true> | undefined;
        let err: unknown;
        try {
          d = await rx.receive({ timeoutMs: 10_000 });
        } catch (e) {
          err = e;
        }
        const want = kernel.shift()!;
        const head = err instanceof TruncatedError ? err.data : (d as Datagram<true>).data;
        expect([head[0], head.readUInt16LE(1)]).toEqual([want.sender, want.seq]);
        if (want.size > BUFFER || want.fds.length > MAX_FDS) {
          expect(err).toBeInstanceOf(TruncatedError);
          const t = err as TruncatedError;
          // MSG_TRUNC wins when both: the fds did fit the kernel's room (sized for more than
          // maxFds), and were closed for being over maxFds only after.
          expect(t.what).toBe(want.size > BUFFER ? 'data' : 'control');
          expect(t.fdsClosed).toBe(want.fds.length);
          expect(t.data).toEqual(payload(want.sender, want.seq, want.size).subarray(0, BUFFER));
          seen.truncated++;
        } else {
          expect(err).toBeUndefined();
          const got = d as Datagram<true>;
          const owned = s.ownAll(got.fds);
          expect(got.data).toEqual(payload(want.sender, want.seq, want.size));
          expect(got.from).toEqual(senders[want.sender]!.address);
          expect(got.credentials.pid).toBe(process.pid);
          expect(got.fds.length).toBe(want.fds.length);
          got.fds.forEach((fd, i) => expect(sameFile(fd, want.fds[i]!)).toBe(true));
          owned.forEach((fd) => fd.close());
          seen.whole++;
        }
        // One slot is free: a waiting datagram (if any) must now get in, by the pin's wake-up alone.
        await until(
          () => waiting.every((q) => q.length === 0) || kernel.length >= CAPACITY,
          'a waiting sender was woken when the receiver made room',
        );
      };

      const steps = rng.int(20, 60);
      for (let step = 0; step < steps; step++) {
        if (rng.next() < 0.6 || kernel.length === 0) {
          const sender = rng.int(0, senders.length - 1);
          const size = rng.int(3, BUFFER + 16);
          const fds = Array.from({ length: rng.int(0, MAX_FDS + 2) }, () => rng.pick(files));
          const whenFull = rng.pick(['wait', 'fail'] as const);
          const seq = seqs[sender]!;
          const full = waiting[sender]!.length > 0 || kernel.length >= CAPACITY;
          const p = senders[sender]!.sendTo(rx.address as string, payload(sender, seq, size), fds, { whenFull });
          if (whenFull === 'fail' && full) {
            expectSystemError(await rejection(p), 'EAGAIN', 'sendto');
            seen.refused++;
            continue;
          }
          seqs[sender]!++;
          const sent: Sent = { sender, seq, size, fds };
          if (!full) {
            await p;
            kernel.push(sent);
          } else {
            waiting[sender]!.push(sent);
            seen.waited++;
            pending.push(
              p.then(() => {
                // Settled in the callback of the very send that queued it in the kernel.
                kernel.push(waiting[sender]!.shift()!);
              }),
            );
          }
        } else {
          await receiveOne();
        }
      }
      while (kernel.length > 0) await receiveOne();
      await Promise.all(pending);
      expect(waiting.flat()).toEqual([]);
      expect(senders.map((t) => t.queuedSends)).toEqual([0, 0, 0]);
    });
  }

  test(`${SEQUENCES} seeded sequences: every datagram once, in order, whole or truncated with its fds closed; EAGAIN exactly when full`, async () => {
    const rng = createRng(Number(process.env['FDBRIDGE_DGRAM_SEED'] ?? 16));
    for (let i = 0; i < SEQUENCES; i++) {
      const before = openFdTable();
      await runSequence(rng.fork(`sequence ${i}`));
      await openBackgroundClosesDone(); // truncated datagrams' fds, and those still queued at close
      expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
    }
    // The sequences did reach every case the model distinguishes.
    for (const [what, n] of Object.entries(seen)) expect([what, n > 0]).toEqual([what, true]);
  });
});
