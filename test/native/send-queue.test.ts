/**
 * The send queue: a full socket queues the message (holding its own
 * duplicates of the fds), delivers it when the peer drains, and releases
 * everything when it cannot. Also what closing a socket releases.
 */
import { openSync } from 'node:fs';

import { ClosedError, EofError, QueueFullError, SystemError } from '../../src/errors';
import { closeFds, diffFdTables, fdIdentity, openFdTable, type FdIdentity } from '../../src/fd';
import { constants, native } from './binding';
import { UnixSocket, type SocketKind } from '../../src/socket';
import { expectFdTable, expectRangeError, expectSystemError, openBackgroundClosesDone, readPipe, rejection, thrown, withScope } from './helpers';

const CHUNK = Buffer.alloc(32 * 1024, 0x2e);

interface Filled {
  /** Bytes and messages written, including the first queued one. */
  bytes: number;
  messages: number;
  /** Outcome of every queued write, in order. */
  queued: Array<Promise<Error | null>>;
}

/** Writes CHUNKs until the binding queues one (write() returns false). */
function fill(sock: UnixSocket): Filled {
  const filled: Filled = { bytes: 0, messages: 0, queued: [] };
  for (let i = 0; i < 10000; i++) {
    let settle!: (err: Error | null) => void;
    const outcome = new Promise<Error | null>((r) => (settle = r));
    const now = sock.write(CHUNK, undefined, settle);
    filled.bytes += CHUNK.length;
    filled.messages += 1;
    if (!now) {
      filled.queued.push(outcome);
      return filled;
    }
  }
  throw new Error('the socket never filled up');
}

/** Queues one more write; its outcome. */
function queue(sock: UnixSocket, data: Buffer, fds?: number[]): Promise<Error | null> {
  let settle!: (err: Error | null) => void;
  const outcome = new Promise<Error | null>((r) => (settle = r));
  expect(sock.write(data, fds, settle)).toBe(false);
  return outcome;
}

/** Reads everything until `bytes` bytes arrived; returns the fds seen (receiver-owned). */
function drain(sock: UnixSocket, bytes: number): Promise<{ fds: number[]; messages: number; tail: string }> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    let messages = 0;
    let tail = '';
    const fds: number[] = [];
    sock.setMessageHandler((err, data, got) => {
      if (err) return reject(err);
      seen += data!.length;
      messages += 1;
      fds.push(...got!);
      tail = (tail + data!.toString()).slice(-64);
      if (seen >= bytes) resolve({ fds, messages, tail });
    });
  });
}

function sameIdentity(a: FdIdentity, b: FdIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

describe.each<SocketKind>(['stream', 'seqpacket'])('%s', (kind) => {
  test('a queued message delivers the right file although the sender closed and reused its fd number (oven-sh/bun#37854)', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const x = s.file('x');
      const xIdentity = fdIdentity(x.fd.fd);
      const filled = fill(a);
      const target = queue(a, Buffer.from('target'), [x.fd.fd]);
      expect(a.queuedSends).toBe(2);
      // The caller closes its copy at once; the number is free for the next open.
      x.fd.close();
      const y = s.own(openSync(`${s.dir()}/y`, 'w'));
      const yIdentity = fdIdentity(y.fd);
      expect(sameIdentity(xIdentity, yIdentity)).toBe(false);

      const got = await drain(b, filled.bytes + 'target'.length);
      s.ownAll(got.fds);
      expect(got.tail.endsWith('target')).toBe(true);
      expect(got.fds).toHaveLength(1);
      // The file that was named when write() was called, never what the number means now.
      expect(sameIdentity(fdIdentity(got.fds[0]!), xIdentity)).toBe(true);
      expect(sameIdentity(fdIdentity(got.fds[0]!), yIdentity)).toBe(false);
      expect(await Promise.all([...filled.queued, target])).toEqual([null, null]);
      expect(a.queuedSends).toBe(0);
    }));

  test('the queue keeps order, and send() resolves once the kernel has each message', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const filled = fill(a);
      const sends = ['one', 'two', 'three'].map((t) => a.send(Buffer.from(t)));
      expect(a.queuedSends).toBe(4);
      let settled = 0;
      for (const p of sends) void p.then(() => (settled += 1));
      await Promise.resolve();
      expect(settled).toBe(0);
      const got = await drain(b, filled.bytes + 'onetwothree'.length);
      expect(got.tail.endsWith('onetwothree')).toBe(true);
      await Promise.all(sends);
      expect(a.queuedSends).toBe(0);
    }));

  test('closing with queued sends rejects them (ECANCELED) and releases their fds', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      const filled = fill(a);
      const withFd = queue(a, Buffer.from('with fd'), [pipe.write.fd]);
      const viaSend = a.send(Buffer.from('promise'), [pipe.write.fd, pipe.write.fd]);
      pipe.write.close();
      // Only the queued duplicates keep the pipe's write end open now.
      expect(readPipe(pipe.read.fd)).toBe('empty');
      const before = openFdTable();
      const aFd = a.fd;
      const closesBefore = native.backgroundClosesDone();
      a.close();
      const outcomes = await Promise.all([...filled.queued, withFd]);
      for (const err of outcomes) expectSystemError(err, 'ECANCELED', 'sendmsg');
      expectSystemError(await rejection(viaSend), 'ECANCELED', 'sendmsg');
      // The duplicates went to the background closer (a copy can be its
      // file's last reference, whose close can block), not closed here.
      await openBackgroundClosesDone();
      expect(native.backgroundClosesDone() - closesBefore).toBe(3);
      // Every duplicate is gone: the pipe reads end-of-file...
      expect(readPipe(pipe.read.fd)).toBe('eof');
      // ...and exactly the socket and the three queued duplicates were closed.
      const diff = diffFdTables(before, openFdTable());
      expect(diff.opened).toEqual([]);
      const fifo = openFdTable().get(pipe.read.fd)!;
      expect(diff.closed.map((e) => e.target).sort()).toEqual([before.get(aFd)!, fifo, fifo, fifo].sort());
      expect(a.queuedSends).toBe(0);
      // The peer got what was sent before the queue, then end-of-file.
      const got = await new Promise<number>((resolve) => {
        let bytes = 0;
        b.setMessageHandler((err, data) => (err ? resolve(bytes) : (bytes += data!.length)));
      });
      expect(got).toBe(filled.bytes - CHUNK.length);
    }));

  test('the peer goes away with sends queued: they fail (EPIPE/ECONNRESET), fds released', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      const filled = fill(a);
      const withFd = queue(a, Buffer.from('with fd'), [pipe.write.fd]);
      pipe.write.close();
      const closesBefore = native.backgroundClosesDone();
      b.close();
      const outcomes = await Promise.all([...filled.queued, withFd]);
      for (const err of outcomes) {
        expect(err).toBeInstanceOf(SystemError);
        expect(['EPIPE', 'ECONNRESET']).toContain((err as SystemError).code);
      }
      expect(a.queuedSends).toBe(0);
      await openBackgroundClosesDone();
      expect(native.backgroundClosesDone() - closesBefore).toBe(1);
      expect(readPipe(pipe.read.fd)).toBe('eof');
    }));

  test('with sends queued, a bad fd or too many fds still fail at once with nothing queued', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      const closedFd = openSync('/dev/null', 'r');
      native.close(closedFd);
      const filled = fill(a);
      const before = openFdTable();
      // The good fd before the bad one was already duplicated for the queue: it must be released.
      expectSystemError(thrown(() => a.write(Buffer.from('x'), [fd.fd, closedFd])), 'EBADF');
      expect(thrown(() => a.write(Buffer.from('x'), [fd.fd, -1]))).toEqual(new TypeError('fds[1] must be a non-negative integer, not -1'));
      expectRangeError(thrown(() => a.write(Buffer.from('x'), new Array<number>(254).fill(fd.fd))), /253/);
      expect(a.queuedSends).toBe(1);
      expectFdTable(before);
      const got = await drain(b, filled.bytes);
      expect(got.fds).toEqual([]);
      expect(await Promise.all(filled.queued)).toEqual([null]);
    }));
});

describe('closing a socket', () => {
  test('releases fds in flight to it that were never received', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      await a.send(Buffer.from('never read'), [pipe.write.fd]);
      pipe.write.close();
      expect(readPipe(pipe.read.fd)).toBe('empty');
      const before = openFdTable();
      b.close();
      // close() read it (a peer's fd, whose last close can block) and handed
      // the write end to the background closer: closed once that is done.
      await openBackgroundClosesDone();
      expect(readPipe(pipe.read.fd)).toBe('eof');
      // Nothing stays installed in this process.
      expect([...openFdTable().keys()].filter((fd) => !before.has(fd))).toEqual([]);
    }));

  test('a socket nobody reads from closes what it receives instead of leaking it', () =>
    withScope(async (s) => {
      const [x, y] = native.socketpair(constants.SOCK_SEQPACKET);
      // No message callback: received fds have no owner to go to.
      const raw = s.add(new native.Socket(x, constants.SOCK_SEQPACKET));
      const peer = s.add(new UnixSocket(y, 'seqpacket'));
      const pipe = s.pipe();
      await peer.send(Buffer.from('to nobody'), [pipe.write.fd]);
      pipe.write.close();
      const before = openFdTable();
      raw.startReading();
      // Once the socket has read the message, the write end is closed: EOF.
      // (Nothing else to wait on: the socket has no callback to tell us.)
      const deadline = Date.now() + 5000;
      while (readPipe(pipe.read.fd) === 'empty' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      expect(readPipe(pipe.read.fd)).toBe('eof');
      expectFdTable(before);
    }));

  test('rejects pending receives with ClosedError; close() twice is harmless; later calls are typed errors', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pending = a.receive();
      const fd = a.fd;
      a.close();
      expect(await rejection(pending)).toBeInstanceOf(ClosedError);
      expect(a.closed).toBe(true);
      expect(a.fd).toBe(-1);
      expect(openFdTable().get(fd) ?? 'closed').not.toMatch(/^socket:/);
      a.close();
      a[Symbol.dispose]();
      expect(thrown(() => a.write(Buffer.from('x')))).toBeInstanceOf(ClosedError);
      expect(await rejection(a.send(Buffer.from('x')))).toBeInstanceOf(ClosedError);
      expect(await rejection(a.receive())).toBeInstanceOf(ClosedError);
      expect(thrown(() => a.setMessageHandler(() => {}))).toBeInstanceOf(ClosedError);
      // The peer sees the close.
      expect(await rejection(b.receive())).toHaveProperty('code', 'ERR_FDBRIDGE_EOF');
    }));
});

describe.each<SocketKind>(['stream', 'seqpacket'])('the send queue, bounded (%s)', (kind) => {
  test('a queued send calls done exactly once with its own tag, whatever value the tag is', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const object = { o: 1 };
      const fn = (): void => undefined;
      // Node-API before version 10 cannot refer to a primitive: every kind of value.
      const tags: unknown[] = [7, -0.5, 'seven', '', null, true, false, 10n, Symbol('tag'), object, fn, [1, 2], undefined];
      const filled = fill(a);
      const calls: Array<[Error | null, unknown]> = [];
      for (const tag of tags) {
        expect(a.write<unknown>(Buffer.from('t'), undefined, (err, got) => calls.push([err, got]), tag)).toBe(false);
      }
      expect(a.queuedSends).toBe(1 + tags.length);
      await drain(b, filled.bytes + tags.length);
      await Promise.all(filled.queued);
      expect(calls).toHaveLength(tags.length);
      calls.forEach(([err, got], i) => {
        expect(err).toBeNull();
        expect(Object.is(got, tags[i])).toBe(true);
      });
      expect(a.queuedSends).toBe(0);
      expect(a.queuedSendBytes).toBe(0);
    }));

  test('at its limit a send throws QueueFullError, with nothing sent, queued or duplicated; what was queued still arrives in order', () =>
    withScope(async (s) => {
      const limit = 4 * 1024;
      const [a, b] = UnixSocket.pair(kind, { sendQueueLimit: limit }).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      const filled = fill(a);
      // One message always fits an empty queue, even one larger than the limit.
      expect(a.queuedSendBytes).toBeGreaterThanOrEqual(limit);
      const before = openFdTable();
      const err = thrown(() => a.write(Buffer.from('refused'), [pipe.write.fd], () => undefined, 'tag'));
      expect(err).toBeInstanceOf(QueueFullError);
      expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_QUEUE_FULL', queuedMessages: 1, limit });
      expect(await rejection(a.send(Buffer.from('refused too')))).toBeInstanceOf(QueueFullError);
      expect(a.queuedSends).toBe(1);
      // A cleanup message may go past the limit; it still waits its turn.
      let exempt!: (err: Error | null) => void;
      const exemptDone = new Promise<Error | null>((r) => (exempt = r));
      expect(a.write(Buffer.from('X'), undefined, exempt, undefined, { exemptFromLimit: true })).toBe(false);
      expect(a.queuedSends).toBe(2);
      filled.bytes += 1;
      filled.queued.push(exemptDone);
      // No duplicate of the pipe was made for the refused sends.
      expectFdTable(before);
      const got = await drain(b, filled.bytes);
      expect(got.fds).toEqual([]);
      expect(got.tail.endsWith('.X')).toBe(true);
      expect(await Promise.all(filled.queued)).toEqual([null, null]);
      expect(a.queuedSendBytes).toBe(0);
      // Usable again: small sends go out, then queue up to the limit; all
      // arrive, in order.
      b.pause();
      let bytes = 0;
      let tail = '';
      let queued = 0;
      const outcomes: Array<Promise<Error | null>> = [];
      for (let i = 0; ; i++) {
        const text = `#${i};`;
        let settle!: (err: Error | null) => void;
        const outcome = new Promise<Error | null>((r) => (settle = r));
        try {
          if (!a.write(Buffer.from(text), undefined, settle)) {
            queued += 1;
            outcomes.push(outcome);
          }
        } catch (e) {
          expect(e).toBeInstanceOf(QueueFullError);
          break;
        }
        bytes += text.length;
        tail = (tail + text).slice(-64);
      }
      // Charged at data + 256 bytes per message, 4 KiB is about 15 of them.
      expect(queued).toBeGreaterThan(1);
      expect(a.queuedSends).toBe(queued);
      expect(a.queuedSendBytes).toBeGreaterThanOrEqual(limit);
      b.resume();
      const rest = await drain(b, bytes);
      expect(rest.tail).toBe(tail);
      expect(await Promise.all(outcomes)).toEqual(new Array(queued).fill(null));
    }));

  test('watchHangup: a paused socket hears of its peer hanging up at once, its unread messages left unread and released on close', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      const events: Array<Error | string> = [];
      a.setMessageHandler((err, data, fds) => {
        if (err) events.push(err);
        else {
          events.push(data!.toString());
          closeFds(fds);
        }
      });
      a.pause();
      a.watchHangup(true);
      await b.send(Buffer.from('unread'), [pipe.write.fd]);
      pipe.write.close();
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      expect(events).toEqual([]);
      b.close();
      while (events.length === 0) await new Promise((r) => setImmediate(r));
      expect(events).toHaveLength(1);
      expect(events[0]).toBeInstanceOf(EofError);
      // The unread message's fd is still in flight to a; closing a releases it.
      expect(readPipe(pipe.read.fd)).toBe('empty');
      a.close();
      await openBackgroundClosesDone(); // the queue's fds go to the background closer
      expect(readPipe(pipe.read.fd)).toBe('eof');
    }));

  test('pauseReadingAt: while the queue holds more, nothing is read; reading resumes once it drains', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const received: string[] = [];
      a.setMessageHandler((err, data) => {
        if (!err) received.push(data!.toString());
      });
      a.setSendQueueLimits({ pauseReadingAt: 0 });
      const filled = fill(a);
      await b.send(Buffer.from('ping'));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      expect(received).toEqual([]);
      // The peer reads: a's queue drains and a reads again.
      await drain(b, filled.bytes);
      await Promise.all(filled.queued);
      while (received.length === 0) await new Promise((r) => setImmediate(r));
      expect(received).toEqual(['ping']);
      // null turns the pause off: a full queue no longer stops reading.
      a.setSendQueueLimits({ pauseReadingAt: null });
      b.pause();
      fill(a);
      await b.send(Buffer.from('pong'));
      while (received.length === 1) await new Promise((r) => setImmediate(r));
      expect(received).toEqual(['ping', 'pong']);
      expectRangeError(thrown(() => a.setSendQueueLimits({ limit: -1 })), /limit/);
      expectRangeError(thrown(() => a.setSendQueueLimits({ pauseReadingAt: 1.5 })), /pauseReadingAt/);
      const [x, y] = native.socketpair(constants.SOCK_SEQPACKET);
      s.own(x);
      s.own(y);
      expectRangeError(thrown(() => new UnixSocket(x, 'seqpacket', { sendQueueLimit: -1 })), /sendQueueLimit/);
    }));
});
