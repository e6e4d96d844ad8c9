/**
 * Bursts past the socket buffer, on every transport: requests made faster
 * than the command's side reads them wait in a bounded send queue and each
 * settles exactly once, with its own result, in the order made. A caller
 * that outruns the command beyond the bound gets QueueFullError for the
 * excess (nothing of those sent) and the connection stays usable. Besides
 * the global check of this process's fd table, the helper daemon's table
 * returns to its baseline after each test.
 */
import { ClosedError, QueueFullError, type TransportName, type WireIdentity } from '../../src';
import { closeFd, closeFds, makeMemfd, openFdTable } from '../../src/fd';
import { decodeFrame, encodeCall, encodeFdList, encodeResult, FRAME_SOCKET_OPTIONS, FrameType, type Frame } from '../../src/protocol';
import { rawSocketPair } from '../../src/testing';
import { UnixSocket, type UnixSocketOptions } from '../../src/socket';
import type { ChildConnection } from '../../src/transports/child';
import { SocketConnection } from '../../src/transports/socket-connection';
import { MAX_CALLS_IN_FLIGHT, SERVE_PAUSE_READING_AT, serveConnection, type ServedConnection, type ServeStats } from '../../src/transports/serve';
import { settleInOrder, wireIdentity } from '../../scenarios/support/common';
import { rawFrame, rawSocket, sayHello } from '../../scenarios/support/hostile';
import { fdTableSettles, helperForSuite } from '../util/processes';
import { connectionsPerTest, TRANSPORTS } from '../util/transport-suite';

/** Transports with a socket, a send queue and its bound (a worker's calls are bounded too). */
const SOCKETS = new Set<TransportName>(['child', 'helper', 'pidfd']);

const suite = helperForSuite('fdbridge-burst-');

describe.each(TRANSPORTS)('%s transport', (transport) => {
  const { open } = connectionsPerTest(transport, suite);

  test('5,000 calls at once: each resolves with its own value, in order, and the connection stays usable', async () => {
    const conn = await open();
    const { results, order } = await settleInOrder(Array.from({ length: 5000 }, (_, i) => conn.call<number>('echo', i)));
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(results.map((r) => (r as PromiseFulfilledResult<number>).value)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(order).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(await conn.call('echo', 'after')).toBe('after');
  });

  test('1,000 concurrent dupFileDescriptors([fd]): each gets the right file at a distinct number', async () => {
    const conn = await open();
    const sources = Array.from({ length: 10 }, (_, i) => makeMemfd(`burst-${i}`));
    try {
      const { results, order } = await settleInOrder(Array.from({ length: 1000 }, (_, i) => conn.dupFileDescriptors([sources[i % 10]!])));
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const remote = results.map((r) => (r as PromiseFulfilledResult<number[]>).value);
      expect(remote.every((r) => r.length === 1)).toBe(true);
      expect(new Set(remote.flat()).size).toBe(1000);
      expect(order).toEqual(Array.from({ length: 1000 }, (_, i) => i));
      const far = await conn.call<WireIdentity[]>('identities', remote.flat());
      expect(far).toEqual(Array.from({ length: 1000 }, (_, i) => wireIdentity(sources[i % 10]!)));
      // Singles in the same burst, folded or not, and a call behind them.
      const singles = await Promise.all(Array.from({ length: 1000 }, (_, i) => conn.dupFileDescriptor(sources[i % 10]!)));
      expect(await conn.call('identities', singles)).toEqual(Array.from({ length: 1000 }, (_, i) => wireIdentity(sources[i % 10]!)));
    } finally {
      for (const fd of sources) closeFd(fd);
    }
  });

  test('a dozen large calls while the command is busy: all arrive whole, answered in order', async () => {
    const conn = await open();
    const busy = conn.call<number>('block', 300);
    // 12 x 150 KB: far more than the socket buffer holds while nothing is read.
    const values = Array.from({ length: 12 }, (_, i) => String.fromCharCode(97 + i).repeat(150_000));
    const { results, order } = await settleInOrder<unknown>([busy, ...values.map((v) => conn.call<string>('echo', v))]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : r.reason))).toEqual([300, ...values]);
    expect(order).toEqual(Array.from({ length: 13 }, (_, i) => i));
    expect(await conn.call('echo', 'after')).toBe('after');
  });

  // A worker's calls travel as messages, bounded the same way (its
  // duplications are dup(2) here: no message, nothing queued).
  if (transport !== 'direct') {
    test('past the bound: the excess rejects with QueueFullError, nothing of it sent; every accepted call resolves; the connection stays usable', async () => {
      const limit = 64 * 1024;
      const conn = await open({ sendQueueLimit: limit });
      const busy = conn.call<number>('block', 500);
      const { results, order } = await settleInOrder(Array.from({ length: 3000 }, (_, i) => conn.call<number>('echo', i)));
      const accepted = results.findIndex((r) => r.status === 'rejected');
      // The kernel's buffer and then the queue took a prefix; the rest, made
      // in the same tick, met the full queue.
      expect(accepted).toBeGreaterThan(0);
      results.slice(0, accepted).forEach((r, i) => expect(r).toEqual({ status: 'fulfilled', value: i }));
      for (const r of results.slice(accepted)) {
        expect(r.status).toBe('rejected');
        const err = (r as PromiseRejectedResult).reason as QueueFullError;
        expect(err).toBeInstanceOf(QueueFullError);
        expect(err.code).toBe('ERR_FDBRIDGE_QUEUE_FULL');
        expect(err.limit).toBe(limit);
        expect(err.message).toMatch(/^echo\(\) failed: the send queue is full: .*ConnectOptions\.sendQueueLimit$/);
      }
      // The refused ones settled at once, the accepted ones as replies came, in order.
      expect(order).toEqual([...Array.from({ length: 3000 - accepted }, (_, i) => accepted + i), ...Array.from({ length: accepted }, (_, i) => i)]);
      expect(await busy).toBe(500);
      // Nothing refused reached the command: the next request's reply is its own.
      expect(await Promise.all([conn.call('echo', 'after'), conn.call('echo', 'and again')])).toEqual(['after', 'and again']);
    });
  }

  if (!SOCKETS.has(transport)) return;

  if (transport === 'pidfd') {
    test('closed with pulls still unread by a busy command: the pins stay open until its process can no longer pull them', async () => {
      const conn = await open();
      const memfd = makeMemfd('pinned');
      try {
        const busy = conn.call('block', 400).catch((e: unknown) => e);
        const before = openFdTable();
        const dups = Array.from({ length: 20 }, () => conn.dupFileDescriptors([memfd]).catch((e: unknown) => e));
        // The pins: this process's new fds for the memfd, made when the requests were.
        const target = openFdTable().get(memfd);
        const pins = [...openFdTable()].filter(([fd, t]) => !before.has(fd) && t === target).map(([fd]) => fd);
        expect(pins).toHaveLength(20);
        const closing = conn.close();
        for (const err of await Promise.all([busy, ...dups])) expect(err).toBeInstanceOf(ClosedError);
        // The command reads those GETFDs once it is done blocking, and pulls
        // by number: until then every pin must still name the same file.
        const now = openFdTable();
        expect(pins.map((fd) => now.get(fd))).toEqual(pins.map(() => target));
        await closing;
        expect((conn as ChildConnection).child.exitCode).toBe(0);
        const after = openFdTable();
        expect(pins.filter((fd) => after.get(fd) === target)).toEqual([]);
      } finally {
        closeFd(memfd);
      }
    });
  }

  test('past the bound with duplications: the excess rejects, the rest get the right files, no pin or duplicate is left behind', async () => {
    const conn = await open({ sendQueueLimit: 16 * 1024 });
    const sources = Array.from({ length: 4 }, (_, i) => makeMemfd(`bound-${i}`));
    try {
      const busy = conn.call('block', 300);
      const { results } = await settleInOrder([
        ...Array.from({ length: 1000 }, (_, i) => conn.dupFileDescriptors([sources[i % 4]!])),
        ...Array.from({ length: 500 }, (_, i) => conn.dupFileDescriptor(sources[i % 4]!).then((fd) => [fd])),
      ]);
      await busy;
      const got: number[] = [];
      const wanted: WireIdentity[] = [];
      let refused = 0;
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') {
          got.push(...r.value);
          wanted.push(wireIdentity(sources[(i < 1000 ? i : i - 1000) % 4]!));
        } else {
          expect(r.reason).toBeInstanceOf(QueueFullError);
          refused += 1;
        }
      });
      expect(refused).toBeGreaterThan(0);
      expect(got.length).toBeGreaterThan(0);
      expect(new Set(got).size).toBe(got.length);
      expect(await conn.call('identities', got)).toEqual(wanted);
      // The command holds exactly the duplicates that were answered.
      expect(await conn.call('adopt', got)).toBe(got.length);
      await conn.call('closeAdopted', got);
      expect(await conn.dupFileDescriptor(sources[0]!).then((fd) => conn.call('identities', [fd]))).toEqual([wireIdentity(sources[0]!)]);
    } finally {
      for (const fd of sources) closeFd(fd);
    }
  });
});

describe("the command's side, against a client that reads slowly or not at all", () => {
  /** serveConnection in this process over a socketpair, with `options` on its socket; `client` is the raw far end. */
  function served(options: UnixSocketOptions = {}): {
    client: UnixSocket;
    server: UnixSocket;
    connection: ServedConnection;
    ended: Promise<{ reason: Error | null; stats: ServeStats }>;
  } {
    const [c, s] = rawSocketPair('seqpacket');
    const server = new UnixSocket(s, 'seqpacket', { ...FRAME_SOCKET_OPTIONS, ...options });
    let resolve!: (v: { reason: Error | null; stats: ServeStats }) => void;
    const ended = new Promise<{ reason: Error | null; stats: ServeStats }>((r) => (resolve = r));
    const connection = serveConnection(server, { transport: 'child', onEnd: (reason, stats) => resolve({ reason, stats: { ...stats } }) });
    return { client: rawSocket(c), server, connection, ended };
  }

  /** Reads replies until end-of-file: [type, id] of each, in arrival order. */
  async function readAll(client: UnixSocket): Promise<Array<[number, number, number]>> {
    const out: Array<[number, number, number]> = [];
    for (;;) {
      let m;
      try {
        m = await client.receive();
      } catch (err) {
        expect((err as { code?: string }).code).toMatch(/^(ERR_FDBRIDGE_EOF|ECONNRESET)$/);
        return out;
      }
      expect(m.fds).toEqual([]);
      out.push([m.data[0] as number, m.data.readUInt32LE(4), m.data.length]);
    }
  }

  const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

  test('it stops reading while its replies back up; every reply arrives, in order, once the client reads', async () => {
    const { client, server, connection, ended } = served();
    const memfd = makeMemfd('slow-reader');
    try {
      await sayHello(client);
      // DUPs (answered in C++) and CALLs (answered in JS), interleaved, none read.
      const n = 6000;
      for (let id = 1; id <= n; id++) {
        if (id % 3 === 0) client.write(encodeCall(id, 'echo', [id]));
        else client.write(rawFrame(FrameType.DUP, id), [memfd]);
      }
      // The command's side fills the kernel's buffer toward the client, queues
      // replies up to the mark, then stops reading: the rest of the requests
      // back up in the kernel and in the client's queue.
      while (client.queuedSends === 0 || server.queuedSendBytes <= SERVE_PAUSE_READING_AT) await turn();
      for (let i = 0; i < 50; i++) await turn();
      expect(server.queuedSendBytes).toBeGreaterThan(SERVE_PAUSE_READING_AT);
      // At most one read batch (32 requests) past the mark.
      expect(server.queuedSendBytes).toBeLessThanOrEqual(SERVE_PAUSE_READING_AT + 32 * (64 + 256));
      expect(client.queuedSends).toBeGreaterThan(0);
      // The client reads: everything flows, in order, none lost or doubled.
      const replies: Array<[number, number, number]> = [];
      while (replies.length < n) {
        const m = await client.receive();
        replies.push([m.data[0] as number, m.data.readUInt32LE(4), m.data.length]);
      }
      expect(replies.map(([, id]) => id)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      for (const [type, id, length] of replies) {
        if (id % 3 === 0) expect(type).toBe(FrameType.RESULT);
        else expect([type, length]).toEqual([FrameType.DUP_OK, 12]);
      }
      expect(connection.activity().fdsHeld).toBe(n - n / 3);
    } finally {
      client.close();
      closeFd(memfd);
    }
    const { reason } = await ended;
    expect(reason).toBeNull();
  });

  test(`at ${MAX_CALLS_IN_FLIGHT} calls not yet answered it reads no more requests; they are all served as calls settle, in order`, async () => {
    const { client, server, ended } = served();
    try {
      await sayHello(client);
      const n = 3000;
      for (let id = 1; id <= n; id++) client.write(encodeCall(id, 'later', [20, id]));
      // No reply is due yet, so only the cap stops reading: the requests back
      // up in the kernel and the client's queue, though the reply queue is empty.
      for (let i = 0; i < 100 && client.queuedSends === 0; i++) await turn();
      expect(client.queuedSends).toBeGreaterThan(0);
      expect(server.queuedSendBytes).toBe(0);
      const replies: number[] = [];
      while (replies.length < n) {
        const m = await client.receive();
        expect(m.data[0]).toBe(FrameType.RESULT);
        replies.push(m.data.readUInt32LE(4));
      }
      // Calls settle in the order they were read: every reply, in order.
      expect(replies).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    } finally {
      client.close();
    }
    expect((await ended).reason).toBeNull();
  });

  test('a client that hangs up while reading is paused is seen at once: the connection ends, its fds are closed', async () => {
    const before = openFdTable();
    const { client, ended } = served();
    const memfd = makeMemfd('hangup');
    try {
      await sayHello(client);
      client.write(rawFrame(FrameType.DUP, 1), [memfd]);
      // Calls that never settle: reading stops at the cap, for good.
      for (let id = 2; id <= MAX_CALLS_IN_FLIGHT + 500; id++) client.write(encodeCall(id, 'hang', []));
      for (let i = 0; i < 100 && client.queuedSends === 0; i++) await turn();
      expect(client.queuedSends).toBeGreaterThan(0);
    } finally {
      client.close();
      closeFd(memfd);
    }
    // No call will ever settle and nothing is read, yet the hangup ends it.
    const { reason } = await ended;
    expect(reason).toBeNull();
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('replies to requests it already read pile past the limit: the client is cut off with QueueFullError, nothing buffered for it, every fd closed', async () => {
    const before = openFdTable();
    const { client, server, ended } = served({ sendQueueLimit: 64 * 1024 });
    const memfd = makeMemfd('cut-off');
    try {
      await sayHello(client);
      client.write(rawFrame(FrameType.DUP, 1), [memfd]);
      // All read at once (no reply yet, nothing to pause for), then all
      // answered together, while the client reads nothing.
      for (let id = 2; id <= 600; id++) client.write(encodeCall(id, 'later', [100, 'x'.repeat(1000)]));
      const { reason } = await ended;
      expect(reason).toBeInstanceOf(QueueFullError);
      expect(reason?.message).toMatch(/^the client stopped reading its replies/);
      expect(server.closed).toBe(true);
      // What was sent before the cut arrives, in order, then end-of-file.
      const replies = await readAll(client);
      expect(replies.length).toBeGreaterThan(1);
      expect(replies.length).toBeLessThan(600);
      expect(replies.map(([, id]) => id)).toEqual(Array.from({ length: replies.length }, (_, i) => i + 1));
    } finally {
      client.close();
      closeFd(memfd);
    }
    // The duplicate it was given went with the connection.
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a DUP that finds the reply queue full is never answered from C++ into a dropped reply: it goes to the JS side, which cuts the client off', async () => {
    // A limit below the reading pause: the queue fills before reading stops.
    const { client, connection, ended } = served({ sendQueueLimit: 4 * 1024 });
    const memfd = makeMemfd('full-dup');
    try {
      await sayHello(client);
      for (let id = 1; id <= 3000; id++) client.write(rawFrame(FrameType.DUP, id), [memfd]);
      const { reason } = await ended;
      expect(reason).toBeInstanceOf(QueueFullError);
      const served = connection.activity().servedDuplications;
      const replies = await readAll(client);
      // Every DUP answered in C++ got its reply, in order: the client reads
      // all of them but those still queued when it was cut off.
      expect(replies.length + (reason as QueueFullError).queuedMessages).toBe(served);
      expect(replies.length).toBeGreaterThan(0);
      expect(replies.map(([, id]) => id)).toEqual(Array.from({ length: replies.length }, (_, i) => i + 1));
      expect(replies.every(([type, , length]) => type === FrameType.DUP_OK && length === 12)).toBe(true);
      expect(served).toBeLessThan(3000);
    } finally {
      client.close();
      closeFd(memfd);
    }
  });
});

describe("the client's side, against a command's side played by the test", () => {
  test('a batch the bound cut part-way is all or nothing even with the queue still full: its arrived piece is released past the limit', async () => {
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = rawSocket(f);
    const conn = new SocketConnection(client, 'helper', { pid: process.pid, threadId: 0 }, async () => ({
      transport: 'helper',
      pid: process.pid,
      exitCode: null,
      signal: null,
    }));
    const memfd = makeMemfd('all-or-nothing');
    const calls: Array<Promise<unknown>> = [];
    let next = 0;
    const call = (): void => {
      calls.push(conn.call('echo', next++).catch((e: unknown) => e));
    };
    /** Answers CALLs as the command would, until a frame of `type` arrives; returns it. */
    const serveUntil = async (type: number): Promise<Frame> => {
      for (;;) {
        const m = await fake.receive();
        const frame = decodeFrame(m.data, m.fds);
        closeFds(m.fds);
        if (frame.type === type) return frame;
        if (frame.type !== FrameType.CALL) throw new Error(`unexpected frame of type ${frame.type}`);
        fake.write(encodeResult(frame.id, frame.args[0]));
      }
    };
    try {
      // The command reads nothing: calls fill the kernel's buffer, then one waits in the queue.
      while (client.queuedSends === 0) call();
      const limit = client.queuedSendBytes + 1;
      client.setSendQueueLimits({ limit });
      // 600 fds, three pieces: the first still fits the queue, the other two find it full.
      const batch = conn.dupFileDescriptors(new Array<number>(600).fill(memfd)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(client.queuedSends).toBe(2);
      const dup = await serveUntil(FrameType.DUP);
      // Before the piece is answered, the caller fills the queue again.
      while (!(client.queuedSends > 0 && client.queuedSendBytes >= limit)) call();
      const numbers = Array.from({ length: 253 }, (_, i) => 1000 + i);
      fake.write(encodeFdList(FrameType.DUP_OK, dup.id, numbers));
      // The piece that arrived is given back: RELEASE, behind the calls queued before it.
      const release = await serveUntil(FrameType.RELEASE);
      expect(release.type === FrameType.RELEASE && release.fds).toEqual(numbers);
      fake.write(encodeResult(release.id, undefined));
      // Then the batch fails with what failed it, not with its own clean-up.
      const err = (await batch) as QueueFullError;
      expect(err).toBeInstanceOf(QueueFullError);
      expect(err.message).toMatch(/^dupFileDescriptors failed: the send queue is full/);
      // Every call made settled once: answered, or refused by the full queue.
      const settled = await Promise.all(calls);
      settled.forEach((v, i) => {
        if (v instanceof QueueFullError) return;
        expect(v).toBe(i);
      });
    } finally {
      fake.close();
      await conn.close();
      closeFd(memfd);
    }
  });
});
