/**
 * A helper daemon's stalled-reader timeout, on the test's clock: a client
 * whose replies wait in the daemon's send queue and do not move for
 * stalledReaderTimeoutMs is cut off (REFUSED naming quota queuedBytes,
 * after the replies), never one that keeps reading, whether its queue
 * goes down or is filled again by its next calls between two looks; and a
 * client cut off for another quota with replies still queued is waited for
 * while it reads them, and let go once it stops.
 *
 * The daemon's clock (Date) and its sweeper (setInterval) are the test's:
 * a look happens only when the test moves the clock, so the client's reads
 * and sends, in real time, fall between two looks where the test puts them.
 */
import fc from 'fast-check';

import { closeFd, HelperDaemon, openFdTable } from '../../src';
import { decodeFrame, encodeJson, FrameType, PROTOCOL_VERSION } from '../../src/protocol';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';
import { SERVE_PAUSE_READING_AT } from '../../src/transports/serve';
import { isRoot } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const describeRoot = isRoot ? describe : describe.skip;
const FAKE_CLOCK: Parameters<typeof jest.useFakeTimers>[0] = { doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] };
/** Room for the largest frame. */
const RECEIVE_BYTES = 262_144;
/** A reply's payload more than the kernel's buffer toward the client holds beside the queue's others (SO_SNDBUF, 208 KiB by default). */
const BIG = 180_000;

let seq = 0;

/** A daemon on the test's clock whose sweeps come every stalledReaderTimeoutMs / 4 (no idle timeout unless given). */
function start(limits: { stalledReaderTimeoutMs: number; idleTimeoutMs?: number }): { daemon: HelperDaemon; every: number } {
  jest.useFakeTimers(FAKE_CLOCK);
  const daemon = HelperDaemon.start({
    socketPath: `@fdbridge-stalled-${process.pid}-${seq++}`,
    diagnostics: true,
    limits: { helloTimeoutMs: 600_000, idleTimeoutMs: 0, ...limits },
  });
  return { daemon, every: limits.stalledReaderTimeoutMs / 4 };
}

type Frame = { type: number; id: number; message?: string };

/**
 * The next message waiting on raw socket `fd`: its frame, 'eof', or
 * undefined when none waits. A daemon that closes the connection with
 * requests of the client's unread resets it (ECONNRESET), reported before
 * the messages sent earlier, which stay readable: read on past it.
 */
function readNow(fd: number): Frame | 'eof' | undefined {
  for (;;) {
    try {
      const m = receiveNow(fd, RECEIVE_BYTES, 0);
      return m ? (decodeFrame(m.data, []) as Frame) : undefined;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_FDBRIDGE_EOF') return 'eof';
      if (code !== 'ECONNRESET') throw e;
    }
  }
}

/** What a client reads up to its end of file: `RESULT <id>`, `REFUSED <message>`. */
async function readToEnd(fd: number, guard: HangGuard): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const f = await guard.until('the next message', () => readNow(fd), (m) => m !== undefined);
    if (f === 'eof' || f === undefined) return seen;
    seen.push(f.type === FrameType.RESULT ? `RESULT ${f.id}` : f.type === FrameType.REFUSED ? `REFUSED ${f.message ?? ''}` : `type ${f.type}`);
  }
}

/** `RESULT <first>` and the `count - 1` after it. */
const inOrder = (count: number, first: number): string[] => Array.from({ length: count }, (_, i) => `RESULT ${first + i}`);

/** A raw client served `probe`: connected, its HELLO answered with READY. */
async function client(daemon: HelperDaemon, guard: HangGuard): Promise<number> {
  const fd = rawConnect('seqpacket', daemon.socketPath.slice(1), true);
  sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
  expect(await guard.until('READY', () => readNow(fd), (m) => m !== undefined)).toMatchObject({ type: FrameType.READY });
  return fd;
}

/** The reply bytes waiting in the daemon's send queue for its one client. */
const queued = (daemon: HelperDaemon): number => daemon.status().clients[0]?.queuedBytes ?? 0;

/**
 * Sends echo calls of `size` bytes, one at a time, each answered before
 * the next (the kernel's buffer toward the client fills first), while the
 * daemon's send queue holds less than `below` bytes; returns the next call
 * id. Past SERVE_PAUSE_READING_AT the daemon reads no more requests: with
 * `below` above it, the calls stop once it has stopped reading, its queue
 * at the first reply past that point.
 */
async function fillTo(daemon: HelperDaemon, fd: number, below: number, size: number, id: number, guard: HangGuard): Promise<number> {
  const payload = 'q'.repeat(size);
  while (queued(daemon) < below) {
    sendNow(fd, encodeJson(FrameType.CALL, id++, { method: 'echo', args: [payload] }));
    // The daemon, on this event loop, reads the call and answers it (into the kernel, or its queue).
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    await guard.until('the call answered', () => daemon.status().clients[0]?.inFlight ?? -1, (n) => n === 0, { pollMs: 1 });
  }
  return id;
}

/** Up to the point where the daemon stops reading requests: the first queue past SERVE_PAUSE_READING_AT. */
const PAUSED = SERVE_PAUSE_READING_AT + 1;

/** Reads replies (counting them into `read`) until the daemon's send queue has gone below `from`: some bytes of it have left. */
async function readUntilItMoves(daemon: HelperDaemon, fd: number, from: number, read: { results: number }, guard: HangGuard): Promise<void> {
  await guard.until(
    'the send queue moving',
    () => {
      const f = readNow(fd);
      if (f !== undefined && f !== 'eof' && f.type === FrameType.RESULT) read.results++;
      return queued(daemon);
    },
    (q) => q < from,
    { pollMs: 2 },
  );
}

describeRoot('stalled readers (client: root, in this process)', () => {
  afterEach(() => jest.useRealTimers());

  test('generated: a client whose replies stop moving is cut off once they have not moved for longer than stalledReaderTimeoutMs, not at it; it reads them, then the REFUSED naming queuedBytes; the fd table returns', async () => {
    const before = openFdTable();
    await fc.assert(
      // The timeout (a multiple of 4: looks a quarter of it apart, exactly) and the replies' size.
      fc.asyncProperty(fc.integer({ min: 20, max: 500 }).map((k) => 4 * k), fc.integer({ min: 1000, max: 60_000 }), async (timeoutMs, size) => {
        const guard = new HangGuard(scaled(15_000));
        const { daemon, every } = start({ stalledReaderTimeoutMs: timeoutMs });
        let fd = -1;
        try {
          fd = await client(daemon, guard);
          await fillTo(daemon, fd, PAUSED, size, 1, guard);
          const waiting = queued(daemon);
          // The first look finds the queue stuck; for timeoutMs after it, it is waited for.
          await jest.advanceTimersByTimeAsync(every + timeoutMs);
          expect({ cut: daemon.stats.quotaHits.queuedBytes, served: daemon.stats.active, waiting: queued(daemon) }).toEqual({ cut: 0, served: 1, waiting });
          // The look after: cut off.
          await jest.advanceTimersByTimeAsync(every);
          expect(daemon.stats.quotaHits.queuedBytes).toBe(1);
          // Reading now, it gets every reply (to the calls the daemon read), then why it was cut off.
          const seen = await readToEnd(fd, guard);
          expect(seen.slice(0, -1)).toEqual(inOrder(seen.length - 1, 1));
          expect(seen.length).toBeGreaterThan(1);
          expect(seen[seen.length - 1]).toBe(`REFUSED quota queuedBytes: ${waiting} bytes of replies waited unread for ${timeoutMs} ms: the client stopped reading`);
          await guard.until('the client let go', () => daemon.status().clients.length, (n) => n === 0);
          expect(daemon.stats.quotaHits.queuedBytes).toBe(1);
        } finally {
          if (fd >= 0) closeFd(fd);
          jest.useRealTimers();
          await daemon.close();
        }
      }),
      { numRuns: 6, endOnFailure: true, examples: [[400, 8000]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 120_000);

  test('generated: a client that keeps reading is never cut off as a stalled reader, whether its queue is lower at the next look or its next calls have filled it again to where it was; the fd table returns', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 20, max: 500 }).map((k) => 4 * k),
        fc.integer({ min: 1000, max: 30_000 }),
        // Between two looks it reads until its queue moves, then sends calls again until the daemon stops reading them (true) or not.
        fc.array(fc.boolean(), { minLength: 8, maxLength: 12 }),
        async (timeoutMs, size, refills) => {
          const guard = new HangGuard(scaled(15_000));
          const { daemon, every } = start({ stalledReaderTimeoutMs: timeoutMs });
          let fd = -1;
          try {
            fd = await client(daemon, guard);
            let id = await fillTo(daemon, fd, PAUSED, size, 1, guard);
            const read = { results: 0 };
            await jest.advanceTimersByTimeAsync(every);
            for (const refill of refills) {
              const level = queued(daemon);
              if (level > 0) await readUntilItMoves(daemon, fd, level, read, guard);
              if (refill || queued(daemon) === 0) id = await fillTo(daemon, fd, PAUSED, size, id, guard);
              // Eight looks or more, a quarter of the timeout apart: twice the timeout or more.
              await jest.advanceTimersByTimeAsync(every);
              expect(daemon.stats.quotaHits.queuedBytes).toBe(0);
            }
            expect(daemon.stats.active).toBe(1);
            // Then it stops: cut off within the timeout and two looks, and told so after its replies.
            await jest.advanceTimersByTimeAsync(timeoutMs + 2 * every);
            expect(daemon.stats.quotaHits.queuedBytes).toBe(1);
            const seen = await readToEnd(fd, guard);
            expect(seen.slice(0, -1)).toEqual(inOrder(seen.length - 1, read.results + 1));
            expect(seen[seen.length - 1]).toMatch(/^REFUSED quota queuedBytes: /);
          } finally {
            if (fd >= 0) closeFd(fd);
            jest.useRealTimers();
            await daemon.close();
          }
        },
      ),
      { numRuns: 6, endOnFailure: true, examples: [[400, 8000, [true, true, true, true, true, true, true, true]]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 120_000);

  test('generated: a client cut off for idling with replies queued is waited for while it reads them, and let go once they stop moving for stalledReaderTimeoutMs; cut off past the idle timeout, not at it; one idle timeout, no queuedBytes; the fd table returns', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 20, max: 500 }).map((k) => 4 * k), fc.integer({ min: 500, max: 3000 }), fc.boolean(), async (timeoutMs, size, readsToTheEnd) => {
        const guard = new HangGuard(scaled(15_000));
        // The idle timeout equals the stalled reader's: looks a quarter of it apart.
        const { daemon, every } = start({ stalledReaderTimeoutMs: timeoutMs, idleTimeoutMs: timeoutMs });
        let fd = -1;
        try {
          fd = await client(daemon, guard);
          // Small replies up to just below the point where the daemon stops reading, then one of BIG bytes past
          // it: more than the kernel takes at once, so that the REFUSED still waits once some of them have left.
          const id = await fillTo(daemon, fd, SERVE_PAUSE_READING_AT - 2 * size, size, 1, guard);
          await fillTo(daemon, fd, PAUSED, BIG, id, guard);
          // Idle (nothing in flight) for exactly the timeout at a look: still served. Past it, at the next look: cut
          // off, the REFUSED behind the replies.
          await jest.advanceTimersByTimeAsync(timeoutMs);
          expect(daemon.stats.quotaHits.idleTimeout).toBe(0);
          await jest.advanceTimersByTimeAsync(every);
          expect(daemon.stats.quotaHits.idleTimeout).toBe(1);
          // It reads until some of its replies have left, and is looked at: the rest are still sent.
          const read = { results: 0 };
          await readUntilItMoves(daemon, fd, queued(daemon), read, guard);
          expect(queued(daemon)).toBeGreaterThan(0);
          await jest.advanceTimersByTimeAsync(every);
          if (readsToTheEnd) {
            const seen = await readToEnd(fd, guard);
            expect(seen.slice(0, -1)).toEqual(inOrder(seen.length - 1, read.results + 1));
            expect(seen[seen.length - 1]).toBe(`REFUSED quota idleTimeout: idle for more than ${timeoutMs} ms`);
          } else {
            // It stops reading: let go once the timeout has passed, whatever it left unread.
            await jest.advanceTimersByTimeAsync(timeoutMs + 2 * every);
          }
          await guard.until('the client let go', () => daemon.status().clients.length, (n) => n === 0);
          expect({ idle: daemon.stats.quotaHits.idleTimeout, stalled: daemon.stats.quotaHits.queuedBytes }).toEqual({ idle: 1, stalled: 0 });
        } finally {
          if (fd >= 0) closeFd(fd);
          jest.useRealTimers();
          await daemon.close();
        }
      }),
      { numRuns: 6, endOnFailure: true, examples: [[400, 2000, false], [400, 2000, true]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 120_000);
});
