/**
 * A helper daemon's limits and its hygiene against its own clients, each
 * attacked from another uid (nobody, 65534, allowed to use the daemon):
 * per-client quotas on fds held and requests in flight, a bound on
 * connections, HELLO, idle and stalled-reader timeouts, clients that die
 * holding their own connection, and fds whose close would block.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect, fdFloor, fdLimit, HelperDaemon, makeMemfd, openFdTable, QuotaExceededError, TimeoutError } from '../../src';
import { decodeFrame, encodeJson, FrameType, MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../../src/protocol';
import { backgroundClosesPending, closerThreads } from '../../src/test-hooks';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';
import { DEFAULT_HELPER_LIMITS, fdRoom, NO_PEER_PIDFD_ENV } from '../../src/transports/helper-daemon';
import { hasPython, releaseAttacker, spawnAttacker, tcpSocketsOpen } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY, runAsNobody, type NobodyProcess } from '../util/nobody';
import { fdTableSettles } from '../util/processes';

const describeRoot = isRoot ? describe : describe.skip;
const ROOT_UID = process.getuid?.() ?? 0;

/**
 * Runs `body` as nobody, a client of `daemon`, with connect, closeFd,
 * makeMemfd, the raw-socket helpers (rawConnect, sendNow, receiveNow),
 * frames, sleep, name and step (prints {step}: how far it got, shown if
 * it hangs) in scope; resolves with what it returns.
 */
function asNobody(daemon: HelperDaemon, body: string): Promise<Record<string, unknown>> {
  return nobody(daemon, body).result;
}

/** What a hang guard shows of `daemon` (in this process) besides the process it waited on. */
function describeDaemon(daemon: HelperDaemon): () => string {
  return () => `daemon.status(): ${JSON.stringify(daemon.status())}\ndaemon.stats: ${JSON.stringify(daemon.stats)}`;
}

/** asNobody, and the process itself (its stdin, and JSON lines it prints before its result). */
function nobody(daemon: HelperDaemon, body: string): NobodyProcess & { result: Promise<Record<string, unknown>> } {
  const name = nameOf(daemon);
  const p = runAsNobody(`
    const { closeFd, connect, makeMemfd } = require(${JSON.stringify(DIST_SRC)});
    const { rawConnect, receiveNow, sendNow } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
    const frames = require(${JSON.stringify(join(DIST_SRC, 'protocol.js'))});
    const trustPeer = { uids: [${ROOT_UID}] };
    const socketPath = ${JSON.stringify(`@${name}`)};
    const name = ${JSON.stringify(name)};
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const step = (s) => console.log(JSON.stringify({ step: s }));
    const raw = () => rawConnect('seqpacket', name, true);
    const hello = (fd, command = 'probe') => sendNow(fd, frames.encodeJson(frames.FrameType.HELLO, 0, { version: frames.PROTOCOL_VERSION, command: { name: command } }));
    /** Waits (up to 10 s) for a message or EOF on a raw fd: 'eof', an error code, or the frame type. */
    const awaitAnswer = async (fd) => {
      for (let i = 0; i < 1000; i++) {
        try { const m = receiveNow(fd, 262144, 0); if (m) return m.data[0]; } catch (e) { return e.code === 'ERR_FDBRIDGE_EOF' ? 'eof' : e.code; }
        await sleep(10);
      }
      return 'nothing';
    };
    (async () => { step('started'); ${body} })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, quota: e.quota, message: e.message } })));`,
    {},
    { describe: describeDaemon(daemon) },
  );
  // Resolved once it has exited too: its fds (the test's pipes to it) are gone by then.
  const result = p.line<{ result: Record<string, unknown> }>('result').then(async (r) => {
    await p.exited();
    return r.result;
  });
  return { ...p, result };
}

/** Waits until `ok()` holds (the daemon runs in this process and works meanwhile), at most ~10 s. */
async function until(ok: () => boolean): Promise<boolean> {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
  return ok();
}

let seq = 0;
function start(limits: Parameters<typeof HelperDaemon.start>[0] = {}): HelperDaemon {
  return HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-${seq++}`, allowUids: [NOBODY], diagnostics: true, ...limits });
}
const nameOf = (d: HelperDaemon): string => d.socketPath.slice(1);

describeRoot('quotas (client: nobody)', () => {
  test('fds held per client: the DUP past the quota is refused with QuotaExceededError, the ones before it served', async () => {
    const daemon = start({ limits: { maxFdsPerClient: 5 } });
    try {
      const r = await asNobody(daemon, `
        const c = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const fd = makeMemfd('q');
        const got = [];
        for (let i = 0; i < 5; i++) got.push(await c.dupFileDescriptor(fd));
        const batch = await c.dupFileDescriptors([fd, fd]).then(() => 'served', (e) => e.code + ':' + e.quota);
        const one = await c.dupFileDescriptor(fd).then(() => 'served', (e) => e.code + ':' + e.quota);
        // Adopting and closing some makes room again.
        await c.call('closeAdopted', [got[0]]).catch(() => undefined);
        await c.call('adopt', [got[0]]); await c.call('closeAdopted', [got[0]]);
        const after = await c.dupFileDescriptor(fd).then(() => 'served', (e) => e.code);
        await c.close(); closeFd(fd);
        return { served: got.length, batch, one, after };`);
      expect(r).toEqual({ served: 5, batch: 'ERR_FDBRIDGE_QUOTA:fds', one: 'ERR_FDBRIDGE_QUOTA:fds', after: 'served' });
      expect(daemon.stats.quotaHits.fds).toBe(2);
    } finally {
      await daemon.close();
    }
  });

  test('requests in flight per client: the call past the quota is refused, the others still answered; calls answered at once never count', async () => {
    const daemon = start({ limits: { maxCallsInFlight: 2 } });
    try {
      const r = await asNobody(daemon, `
        const c = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const burst = await Promise.allSettled(Array.from({ length: 500 }, (_, i) => c.call('echo', i)));
        const slow = [c.call('later', 300, 'a'), c.call('later', 300, 'b')];
        const third = await c.call('echo', 'c').then(() => 'served', (e) => e.code + ':' + e.quota);
        const done = await Promise.all(slow);
        const fourth = await c.call('echo', 'd');
        await c.close();
        return { burst: burst.filter((s, i) => s.status === 'fulfilled' && s.value === i).length, third, done, fourth };`);
      expect(r).toEqual({ burst: 500, third: 'ERR_FDBRIDGE_QUOTA:calls', done: ['a', 'b'], fourth: 'd' });
      expect(daemon.stats.quotaHits.calls).toBe(1);
    } finally {
      await daemon.close();
    }
  });

  test('connections: past maxConnections a client is refused (PeerRefusedError), the ones in place keep working', async () => {
    const lines: string[] = [];
    const daemon = start({ limits: { maxConnections: 2 }, log: (l) => lines.push(l) });
    try {
      const p = nobody(daemon, `
        const a = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const b = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const third = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer }).then(() => 'served', (e) => e.code + ' ' + e.message);
        const still = await a.call('echo', 'a');
        await a.close(); await b.close();
        return { third, still };`);
      const r = await p.result;
      expect(r['third']).toMatch(/^ERR_FDBRIDGE_REFUSED .*quota connections: this helper serves at most 2 clients at once \(2 now, 0 ended ones whose socket waits behind blocked closes\)$/);
      expect(r['still']).toBe('a');
      expect({ refused: daemon.stats.refused, quota: daemon.stats.quotaHits.connections, served: daemon.stats.connections }).toEqual({ refused: 1, quota: 1, served: 2 });
      // What `fdbridge helper --verbose` shows: each client served, and the one refused, with why.
      expect(lines.filter((l) => l.startsWith(`serving pid ${p.pid} `))).toEqual([`serving pid ${p.pid} (uid ${NOBODY})`, `serving pid ${p.pid} (uid ${NOBODY})`]);
      expect(lines).toContain(`refused pid ${p.pid}: 2 clients already, 0 ended ones' sockets held up in the closer (maxConnections)`);
    } finally {
      await daemon.close();
    }
  });

  test('a client that never sends HELLO is disconnected after the HELLO timeout', async () => {
    const daemon = start({ limits: { helloTimeoutMs: 200 } });
    try {
      const r = await asNobody(daemon, `const fd = raw(); const a = await awaitAnswer(fd); const b = await awaitAnswer(fd); closeFd(fd); return { answer: a, then: b };`);
      // REFUSED (3), naming the quota, then end of file.
      expect(r).toEqual({ answer: 3, then: 'eof' });
      expect(daemon.stats.quotaHits.helloTimeout).toBe(1);
    } finally {
      await daemon.close();
    }
  });

  test('an idle client is disconnected after the idle timeout; one with a call in flight is not', async () => {
    // The daemon's clock (Date) and its sweeper (setInterval) are the test's:
    // time passes only once both clients are where the test wants them. On
    // the real clock a loaded machine could leave the busy client idle past
    // the timeout between its READY and its call, or after its answer.
    jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
    const IDLE = 300;
    const daemon = start({ limits: { idleTimeoutMs: IDLE } });
    try {
      const p = nobody(daemon, `
        const busy = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const long = busy.call('hang').catch((e) => e.code);
        const fd = raw(); hello(fd); const ready = await awaitAnswer(fd);
        console.log(JSON.stringify({ waiting: true }));
        const end = await awaitAnswer(fd); const gone = await awaitAnswer(fd); closeFd(fd);
        const kept = await busy.call('echo', 'kept'); await busy.close();
        return { ready, end, gone, kept, long: await long };`);
      await p.line('waiting');
      // Both served, the busy one's call in flight (the raw one idle since its READY).
      expect(
        await until(() => {
          const clients = daemon.status().clients;
          return clients.length === 2 && clients.every((c) => c.command) && clients.some((c) => c.inFlight === 1);
        }),
      ).toBe(true);
      await jest.advanceTimersByTimeAsync(IDLE * 2);
      expect(await p.result).toEqual({ ready: 2, end: 3, gone: 'eof', kept: 'kept', long: 'ERR_FDBRIDGE_CLOSED' }); // 2: READY, 3: REFUSED
      expect(daemon.stats.quotaHits.idleTimeout).toBe(1);
    } finally {
      jest.useRealTimers();
      await daemon.close();
    }
  });

  test('generated: a client that sends HELLO within the HELLO timeout, up to exactly at it, is served, whatever the idle timeout; the fd table returns', async () => {
    const HELLO = 200;
    const before = openFdTable();
    await fc.assert(
      // How long it waits before its HELLO; the idle timeout (0: none), which a client not yet served never meets.
      fc.asyncProperty(fc.integer({ min: 0, max: HELLO }), fc.oneof(fc.constant(0), fc.integer({ min: 40, max: 400 })), async (waitedMs, idleTimeoutMs) => {
        // The daemon's clock and sweeper are the test's: the wait is exact whatever the machine's load.
        jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
        const daemon = start({ limits: { helloTimeoutMs: HELLO, idleTimeoutMs } });
        const fd = rawConnect('seqpacket', nameOf(daemon), true);
        // Connected with it, and never sends HELLO: refused once past the timeout, told which quota and why.
        const silent = rawConnect('seqpacket', nameOf(daemon), true);
        try {
          expect(await until(() => daemon.stats.connections === 2)).toBe(true);
          await jest.advanceTimersByTimeAsync(waitedMs);
          sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
          expect(await answer(fd)).toBe(FrameType.READY);
          expect({ helloTimeout: daemon.stats.quotaHits.helloTimeout, idleTimeout: daemon.stats.quotaHits.idleTimeout }).toEqual({ helloTimeout: 0, idleTimeout: 0 });
          await jest.advanceTimersByTimeAsync(HELLO + 50 - waitedMs);
          expect(await frame(silent)).toMatchObject({ type: FrameType.REFUSED, message: `quota helloTimeout: no HELLO within ${HELLO} ms of connecting` });
          expect(await answer(silent)).toBe('eof');
          expect(daemon.stats.quotaHits.helloTimeout).toBe(1);
        } finally {
          closeFd(silent);
          closeFd(fd);
          jest.useRealTimers();
          await daemon.close();
        }
      }),
      { numRuns: 8, endOnFailure: true, examples: [[HELLO, 0], [150, 100]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('generated: with idleTimeoutMs 0 no client is cut off for idling, however long it waits; the fd table returns', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 600_000 }), async (waitedMs) => {
        // The daemon's clock and sweeper are the test's (as in the idle timeout's case above).
        jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
        const daemon = start({ limits: { idleTimeoutMs: 0 } });
        try {
          const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
          try {
            await jest.advanceTimersByTimeAsync(waitedMs);
            expect(await conn.call('echo', 'still served')).toBe('still served');
            expect(daemon.stats.quotaHits.idleTimeout).toBe(0);
          } finally {
            await conn.close();
          }
        } finally {
          jest.useRealTimers();
          await daemon.close();
        }
      }),
      { numRuns: 5, endOnFailure: true, examples: [[1], [600_000]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('generated: a client whose only requests are DUPs (answered without reaching JS) is not idle while it sends them; once it stops, it is cut off; the fd table returns', async () => {
    const IDLE = 300;
    const before = openFdTable();
    const memfd = makeMemfd('dups-only');
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: IDLE - 1 }), async (dups, gapMs) => {
          jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
          const daemon = start({ limits: { idleTimeoutMs: IDLE } });
          try {
            const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
            try {
              // A DUP every gapMs (< IDLE): dups x gapMs in all, past IDLE for most.
              for (let i = 0; i < dups; i++) {
                await conn.dupFileDescriptor(memfd);
                await jest.advanceTimersByTimeAsync(gapMs);
              }
              expect(daemon.stats.quotaHits.idleTimeout).toBe(0);
              expect(daemon.stats.active).toBe(1);
              // Then nothing: cut off once idle for longer than IDLE.
              await jest.advanceTimersByTimeAsync(2 * IDLE);
              expect(await until(() => daemon.stats.quotaHits.idleTimeout === 1 && daemon.stats.active === 0)).toBe(true);
            } finally {
              await conn.close().catch(() => undefined);
            }
          } finally {
            jest.useRealTimers();
            await daemon.close();
          }
        }),
        { numRuns: 5, endOnFailure: true, examples: [[6, IDLE - 1]] },
      );
    } finally {
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a client that stops reading its replies is disconnected, not buffered for', async () => {
    const daemon = start({ limits: { maxQueuedBytes: 65536, stalledReaderTimeoutMs: 300 } });
    try {
      const r = await asNobody(daemon, `
        const fd = raw(); hello(fd); await awaitAnswer(fd);
        const big = 'x'.repeat(8000);
        let sent = 0, stop = null;
        // Requests whose replies it never reads, until the kernel refuses more (the daemon stopped reading).
        for (let id = 1; id < 5000 && stop === null; id++) {
          try { sendNow(fd, frames.encodeCall(id, 'echo', [big])); sent++; } catch (e) { if (e.code === 'EAGAIN') await sleep(20); else stop = e.code; }
          if (sent > 200 && id % 50 === 0) await sleep(20);
        }
        return { sent, stop };`);
      // It was cut off (EPIPE/ECONNRESET on its sends) once its replies stopped moving.
      expect(['EPIPE', 'ECONNRESET']).toContain(r['stop']);
      expect(daemon.stats.quotaHits.queuedBytes).toBeGreaterThanOrEqual(1);
      expect(daemon.stats.active).toBe(0);
    } finally {
      await daemon.close();
    }
  });
});

/** The next frame on a raw socket, decoded, waiting while the daemon (in this process) works; undefined if none came within ~10 s (a hang guard). */
async function frame(fd: number): Promise<ReturnType<typeof decodeFrame> | undefined> {
  for (let i = 0; i < 2000; i++) {
    const m = receiveNow(fd, 65536, 0);
    if (m) return decodeFrame(m.data, []);
    await new Promise((r) => setTimeout(r, 5));
  }
  return undefined;
}

/** The next frame's type on a raw socket, or 'eof', waiting while the daemon (in this process) works. */
async function answer(fd: number): Promise<number | string> {
  for (;;) {
    try {
      const m = receiveNow(fd, 65536, 0);
      if (m) return m.data[0] as number;
    } catch (e) {
      return (e as { code?: string }).code === 'ERR_FDBRIDGE_EOF' ? 'eof' : String((e as { code?: string }).code);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

describeRoot('what a refused or long-served client costs and counts (client: root)', () => {

  test('a refused connection gets a receive buffer of a few bytes, never a frame-sized one', async () => {
    const daemon = start({ limits: { maxConnections: 1 } });
    const REFUSED = 64;
    const raws: number[] = [];
    try {
      const first = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      const before = process.memoryUsage().arrayBuffers;
      const hello = encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } });
      for (let i = 0; i < REFUSED; i++) {
        const fd = rawConnect('seqpacket', nameOf(daemon), true);
        raws.push(fd);
        sendNow(fd, hello);
      }
      // Each is told REFUSED (3) and then held (until it hangs up, or a second) with what it sent unread or drained.
      for (const fd of raws) expect(await answer(fd)).toBe(3);
      expect(daemon.stats.refused).toBe(REFUSED);
      // A frame-sized buffer each would be REFUSED * 192 KiB (12 MiB); an eighth of that is room for everything else.
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan((REFUSED * MAX_FRAME_BYTES) / 8);
      await first.close();
    } finally {
      for (const fd of raws) closeFd(fd);
      await daemon.close();
    }
  });

  test('a client is idle from the moment its last call was answered, not from when it asked', async () => {
    const daemon = start();
    const LONG = 2000;
    const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
    try {
      const askedAt = Date.now();
      expect(await conn.call('later', LONG, 'answered')).toBe('answered');
      const [client] = daemon.status().clients;
      // The answer went out at least LONG ms (less a timer's 1 ms rounding)
      // after the request left: idle since then at most. The idle timeout
      // measures the same (a client whose only call ran longer than it is
      // not cut the moment it is answered).
      expect(client?.idleMs).toBeLessThanOrEqual(Date.now() - askedAt - LONG + 2);
      expect(client?.inFlight).toBe(0);
    } finally {
      await conn.close();
      await daemon.close();
    }
  });
});

describeRoot('a client cut off is counted once (client: root)', () => {
  test('an idle client whose command takes a while to close is one idle timeout, however many sweeps its ending sees', async () => {
    const SLOW = { module: join(__dirname, '..', 'fixtures', 'slow-close-command.js'), export: 'SlowCloseCommand' };
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-slow-close`, limits: { idleTimeoutMs: 100 }, commands: { slow: SLOW } });
    const fd = rawConnect('seqpacket', nameOf(daemon), true);
    try {
      sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'slow' } }));
      // READY, then nothing: cut off once idle, and its command's close()
      // runs for 300 ms (a dozen sweeps at this timeout) before the client is gone.
      expect([await answer(fd), await answer(fd), await answer(fd)]).toEqual([FrameType.READY, FrameType.REFUSED, 'eof']);
      expect(await until(() => daemon.status().clients.length === 0)).toBe(true);
      expect(daemon.stats.quotaHits.idleTimeout).toBe(1);
    } finally {
      closeFd(fd);
      await daemon.close();
    }
  });
});

describeRoot('a client cut off is told why (client: root)', () => {
  test('a synchronous call that ran longer than the idle timeout leaves its client active, not idle, once answered', async () => {
    // The daemon's clock (Date) and its sweeper (setInterval) are the test's;
    // the method moves the clock as a long synchronous call would take it.
    jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
    const hook = globalThis as { fdbridgeTestClockJump?: (ms: number) => void };
    hook.fdbridgeTestClockJump = (ms) => jest.setSystemTime(Date.now() + ms);
    const IDLE = 1000;
    const JUMP = { module: join(__dirname, '..', 'fixtures', 'clock-jump-command.js'), export: 'ClockJumpCommand' };
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-sync-active`, limits: { idleTimeoutMs: IDLE }, commands: { jump: JUMP } });
    let conn: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      conn = await connect('helper', { command: { name: 'jump' }, socketPath: daemon.socketPath });
      for (const ran of [IDLE * 5, IDLE - 1, IDLE * 2]) {
        expect(await conn.call('run', ran)).toBe(ran);
        // Sweeps, a quarter of the timeout apart, over less than the timeout since the answer.
        await jest.advanceTimersByTimeAsync(IDLE / 2);
        expect(await conn.call('echo', 'still served')).toBe('still served');
      }
      expect(daemon.stats.quotaHits.idleTimeout).toBe(0);
      // And idle it is cut off as before.
      await jest.advanceTimersByTimeAsync(IDLE * 2);
      expect(daemon.stats.quotaHits.idleTimeout).toBe(1);
    } finally {
      jest.useRealTimers();
      delete hook.fdbridgeTestClockJump;
      await conn?.close();
      await daemon.close();
    }
  });


  test('an fdbridge client cut off for idling fails its later requests with QuotaExceededError idleTimeout, not as a daemon that went away', async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-idle-told`, diagnostics: true, limits: { idleTimeoutMs: 100 } });
    const source = makeMemfd('idle-told');
    let conn: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      expect(await until(() => daemon.stats.quotaHits.idleTimeout === 1 && daemon.status().clients.length === 0)).toBe(true);
      // One poll of the event loop after the daemon wrote and hung up: the client has read both.
      await new Promise((r) => setImmediate(r));
      const outcomes = await Promise.all([conn.call('echo', 'late'), conn.dupFileDescriptor(source), conn.dupFileDescriptors([source, source])].map((p) => p.then(() => 'resolved', (e: unknown) => e)));
      for (const err of outcomes) {
        expect(err).toBeInstanceOf(QuotaExceededError);
        expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'idleTimeout', message: expect.stringMatching(/^quota idleTimeout: .*the helper daemon \(pid \d+\) ended this connection/) });
      }
    } finally {
      closeFd(source);
      await conn?.close();
      await daemon.close();
    }
  });
});

describeRoot('fairness between uids (nobody takes all it may; root still gets its share)', () => {
  test('connections per uid: nobody cannot take every connection; root is served beside it', async () => {
    const lines: string[] = [];
    const daemon = start({ limits: { maxConnections: 6, maxConnectionsPerUid: 3 }, log: (l) => lines.push(l) });
    try {
      const r = nobody(daemon, `
        const open = [];
        let refused;
        for (let i = 0; i < 6 && refused === undefined; i++) {
          await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer }).then((c) => open.push(c), (e) => (refused = e.code + ':' + e.quota + ':' + e.message));
        }
        process.stdout.write(JSON.stringify({ holding: open.length }) + '\\n');
        // Hold them until root has been served.
        await new Promise((resolve) => process.stdin.once('data', resolve));
        const still = await open[0].call('echo', 'kept');
        for (const c of open) await c.close();
        return { served: open.length, refused, still };`);
      expect(await r.line('holding')).toEqual({ holding: 3 });
      const mine = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      expect(await mine.call('echo', 'root')).toBe('root');
      r.child.stdin?.end('go\n');
      expect(await r.result).toEqual({
        served: 3,
        refused: expect.stringMatching(
          new RegExp(`^ERR_FDBRIDGE_REFUSED:uidConnections:.*quota uidConnections: this helper serves at most 3 clients of one uid \\(${NOBODY}\\) at once \\(3 now, 0 ended ones whose socket waits behind blocked closes\\)$`),
        ),
        still: 'kept',
      });
      await mine.close();
      expect({ refused: daemon.stats.refused, uidConnections: daemon.stats.quotaHits.uidConnections, connections: daemon.stats.quotaHits.connections }).toEqual({ refused: 1, uidConnections: 1, connections: 0 });
      expect(lines).toContain(`refused pid ${r.pid}: uid ${NOBODY} has 3 clients already, 0 ended ones' sockets held up in the closer (maxConnectionsPerUid)`);
      expect(await until(() => daemon.status().uids.length === 0)).toBe(true);
    } finally {
      await daemon.close();
    }
  });

  test('fds per uid: two connections of nobody share one allowance (refused in C++ and in JS alike); root keeps its own', async () => {
    const daemon = start({ limits: { maxFdsPerClient: 4, maxFdsPerUid: 6 } });
    const memfd = makeMemfd('root');
    try {
      const r = nobody(daemon, `
        const a = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const b = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const fd = makeMemfd('q');
        const outcome = (p) => p.then(() => 'served', (e) => e.code + ':' + e.quota);
        const got = [];
        for (let i = 0; i < 4; i++) got.push(await a.dupFileDescriptor(fd));
        const b1 = await outcome(b.dupFileDescriptors([fd, fd]));
        const bOne = await outcome(b.dupFileDescriptor(fd));
        const bBatch = await outcome(b.dupFileDescriptors([fd, fd]));
        process.stdout.write(JSON.stringify({ held: true }) + '\\n');
        await new Promise((resolve) => process.stdin.once('data', resolve));
        // One adopted and closed by a's command: room for one more, on b.
        await a.call('adopt', [got[0]]); await a.call('closeAdopted', [got[0]]);
        const after = await outcome(b.dupFileDescriptor(fd));
        await a.close(); await b.close(); closeFd(fd);
        return { b1, bOne, bBatch, after };`);
      await r.line('held');
      // A refusal is answered once the fds it brought are closed: none of them counts any more.
      expect(daemon.status().uids).toEqual([{ uid: NOBODY, connections: 2, fdsHeld: 6, fdsClosing: 0, socketsClosing: 0, logBytes: 0 }]);
      // Another uid's allowance is its own.
      const mine = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      for (let i = 0; i < 4; i++) await mine.dupFileDescriptor(memfd);
      await expect(mine.dupFileDescriptor(memfd)).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'fds' });
      await mine.close();
      r.child.stdin?.end('go\n');
      expect(await r.result).toEqual({
        b1: 'served',
        bOne: 'ERR_FDBRIDGE_QUOTA:uidFds',
        bBatch: 'ERR_FDBRIDGE_QUOTA:uidFds',
        after: 'served',
      });
      expect(daemon.stats.quotaHits.uidFds).toBe(2);
      expect(await until(() => daemon.status().fdsHeld === 0 && daemon.status().uids.length === 0)).toBe(true);
    } finally {
      closeFd(memfd);
      await daemon.close();
    }
  });

  test('fds in all: past maxFdsTotal every uid is refused (totalFds) until fds are released', async () => {
    const daemon = start({ limits: { maxFdsPerClient: 100, maxFdsPerUid: 100, maxFdsTotal: 5 } });
    const memfd = makeMemfd('root');
    try {
      const r = nobody(daemon, `
        const a = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        const fd = makeMemfd('q');
        const got = await a.dupFileDescriptors([fd, fd, fd, fd, fd]);
        const more = await a.dupFileDescriptor(fd).then(() => 'served', (e) => e.code + ':' + e.quota);
        process.stdout.write(JSON.stringify({ held: more }) + '\\n');
        await new Promise((resolve) => process.stdin.once('data', resolve));
        await a.call('adopt', [got[0]]); await a.call('closeAdopted', [got[0]]);
        process.stdout.write(JSON.stringify({ released: 1 }) + '\\n');
        await new Promise((resolve) => process.stdin.once('data', resolve));
        await a.close(); closeFd(fd);
        return { done: true };`);
      expect(await r.line('held')).toEqual({ held: 'ERR_FDBRIDGE_QUOTA:totalFds' });
      const mine = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      await expect(mine.dupFileDescriptor(memfd)).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'totalFds' });
      r.child.stdin?.write('go\n');
      await r.line('released');
      // Each refusal was answered once the fds it brought were closed, and
      // the release once its fd was: the room it made is there now, whole.
      expect(daemon.status()).toMatchObject({ fdsHeld: 4, fdsClosing: 0 });
      await mine.dupFileDescriptor(memfd);
      await mine.close();
      r.child.stdin?.end('go\n');
      expect(await r.result).toEqual({ done: true });
      expect(daemon.stats.quotaHits.totalFds).toBe(2);
    } finally {
      closeFd(memfd);
      await daemon.close();
    }
  });

  test('the fd total is clipped to what RLIMIT_NOFILE leaves, and a per-uid limit not given to a quarter of it when other uids are served', async () => {
    const [soft] = fdLimit();
    const lines: string[] = [];
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-clip`, allowUids: [65534], limits: { maxConnections: 10, maxFdsTotal: soft * 2 }, log: (l) => lines.push(l) });
    try {
      // Its lane and closer owners: root's, nobody's and the others' (3).
      expect(daemon.limits.maxFdsTotal).toBe(fdRoom(soft, fdFloor(), 10, 3).clientFds);
      expect(daemon.limits.maxFdsTotal).toBeLessThan(soft - 20);
      expect(daemon.limits.maxFdsPerUid).toBe(Math.min(DEFAULT_HELPER_LIMITS.maxFdsPerUid, Math.floor(fdRoom(soft, fdFloor(), 10, 3).clientFds / 4)));
      expect(daemon.limits.maxConnectionsPerUid).toBe(DEFAULT_HELPER_LIMITS.maxConnectionsPerUid);
      expect(lines.join('\n')).toMatch(/RLIMIT_NOFILE .* maxFdsTotal \d+ lowered to \d+/);
    } finally {
      await daemon.close();
    }
  });

  test('a daemon serving its own uid alone has per-uid limits equal to the totals unless given', async () => {
    const [soft] = fdLimit();
    const own = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-own`, limits: { maxConnections: 10, maxFdsTotal: soft * 2 } });
    const given = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-given`, limits: { maxConnections: 10, maxConnectionsPerUid: 3, maxFdsPerUid: 7 } });
    try {
      expect(own.limits.maxFdsPerUid).toBe(own.limits.maxFdsTotal);
      expect(own.limits.maxFdsTotal).toBe(fdRoom(soft, fdFloor(), 10, 2).clientFds); // owners: its uid's and the others'
      expect(own.limits.maxConnectionsPerUid).toBe(10);
      expect(given.limits.maxConnectionsPerUid).toBe(3);
      expect(given.limits.maxFdsPerUid).toBe(7);
    } finally {
      await own.close();
      await given.close();
    }
  });
});

describeRoot("the background closer's reserve (client: none)", () => {
  test('a daemon keeps a reserve thread for each uid it serves and one for the others, and gives them back as it closes', async () => {
    const before = closerThreads();
    const uids = Array.from({ length: 100 }, (_, i) => 30000 + i);
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-${process.pid}-reserve`, allowUids: uids });
    try {
      // 100 uids, its own (root), and the others'.
      const owners = before.reservedOwners + uids.length + 2;
      expect(closerThreads()).toMatchObject({ reservedOwners: owners, reserve: Math.min(before.maxReserve, Math.max(before.minReserve, owners)) });
    } finally {
      await daemon.close();
    }
    expect(closerThreads()).toMatchObject({ reservedOwners: before.reservedOwners, reserve: before.reserve });
  });
});

describeRoot("a client's death is noticed whatever fds it left with the daemon (client: nobody)", () => {
  test.each([
    ['its own connection socket', 'own'],
    ['a cycle: each of two connections carries the other', 'cycle'],
  ])('a client that sends %s and exits is swept as it exits (no periodic sweep runs here)', async (_what, shape) => {
    // The daemon's periodic timer (HELLO, idle and stalled-reader timeouts)
    // never fires in this test: the exit must be seen as an event.
    jest.useFakeTimers({ doNotFake: ['Date', 'hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setTimeout', 'clearTimeout'] });
    const lines: string[] = [];
    const daemon = start({ log: (line) => lines.push(`${Date.now()} ${line}`) });
    jest.useRealTimers();
    try {
      const r = await asNobody(daemon, `
        const a = raw(); hello(a); await awaitAnswer(a);
        const b = raw(); hello(b); await awaitAnswer(b);
        const dup = (over, fd) => sendNow(over, frames.encodeDup(1), [fd]);
        if (${JSON.stringify(shape)} === 'own') { dup(a, a); dup(b, b); } else { dup(a, b); dup(b, a); }
        const replies = [await awaitAnswer(a), await awaitAnswer(b)];
        process.stdout.write(JSON.stringify({ result: { replies } }) + '\\n');
        // Exit without closing anything: the kernel closes its fds; the daemon still holds them.
        process.exit(0);`);
      expect(r).toEqual({ replies: [5, 5] }); // DUP_OK
      // The daemon holds both client endpoints, so no EOF ever comes: only the pidfd tells.
      // Served until both are swept; the daemon's TimeoutError names any still served.
      await daemon.idle(20_000).catch((err: Error) => {
        throw new Error(`${err.message}\ndaemon log:\n${lines.join('\n')}`);
      });
      // Each connection was swept as its client's exit, not ended by the other's sweep.
      // (The daemon's log comes with a failure: whose end came when, and why.)
      expect({ clientsExited: daemon.stats.clientsExited, active: daemon.stats.active, log: lines }).toEqual({ clientsExited: 2, active: 0, log: expect.any(Array) });
      // (The test's fd-table check afterwards proves every fd it held is closed.)
    } finally {
      await daemon.close();
    }
  });

  test("the daemon's watch on a client's process is an fd numbered above the fd floor", async () => {
    const daemon = start();
    const before = openFdTable();
    const pidfds = (): number[] => [...openFdTable()].filter(([fd, target]) => !before.has(fd) && target === 'anon_inode:[pidfd]').map(([fd]) => fd);
    try {
      const r = nobody(daemon, `
        const c = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        process.stdout.write(JSON.stringify({ connected: true }) + '\\n');
        await new Promise((resolve) => process.stdin.once('data', resolve));
        await c.close();
        return { closed: true };`);
      await r.line('connected');
      const held = pidfds();
      r.child.stdin?.end('go\n');
      expect(await r.result).toEqual({ closed: true });
      expect(held).toHaveLength(1);
      expect(held[0]).toBeGreaterThanOrEqual(fdFloor());
      expect(await until(() => daemon.stats.active === 0 && pidfds().length === 0)).toBe(true);
    } finally {
      await daemon.close();
    }
  });

  test(`without SO_PEERPIDFD (${NO_PEER_PIDFD_ENV}=1, for tests only) the daemon refuses its own connection endpoints and serves other fds`, async () => {
    process.env[NO_PEER_PIDFD_ENV] = '1';
    const daemon = start();
    try {
      const r = await asNobody(daemon, `
        const a = raw(); hello(a); await awaitAnswer(a);
        const b = raw(); hello(b); await awaitAnswer(b);
        const dup = async (over, fd) => { sendNow(over, frames.encodeDup(1), [fd]); return awaitAnswer(over); };
        const reply = async (over) => { for (let i = 0; i < 1000; i++) { const m = receiveNow(over, 262144, 0); if (m) return m; await sleep(10); } };
        sendNow(a, frames.encodeDup(7), [a]);
        const own = await reply(a);
        const cycle = await dup(a, b);
        const memfd = makeMemfd('fine');
        const fine = await dup(b, memfd);
        closeFd(memfd);
        closeFd(a); closeFd(b);
        return { own: own.data[0], ownCode: JSON.parse(own.data.toString('utf8', 8)).code, cycle, fine };`);
      expect(r).toEqual({ own: 8, ownCode: 'ERR_FDBRIDGE_FD_REFUSED', cycle: 8, fine: 5 }); // ERROR, ERROR, DUP_OK
      // Nothing of theirs held it open: both connections end at their end of file.
      expect(await until(() => daemon.stats.active === 0)).toBe(true);
      expect(daemon.stats.connections).toBe(2);
    } finally {
      delete process.env[NO_PEER_PIDFD_ENV];
      await daemon.close();
    }
  });

  test(`without SO_PEERPIDFD (${NO_PEER_PIDFD_ENV}=1), a client whose process was reaped before it was accepted cannot be watched: its connection ends, and the next client is served; the fd table returns`, async () => {
    const before = openFdTable();
    process.env[NO_PEER_PIDFD_ENV] = '1';
    const daemon = start();
    try {
      // The daemon runs in this process: while execFileSync waits, it accepts
      // nothing, so the client connects, exits and is reaped before that
      // (pidfd_open of its pid then fails: nothing to watch).
      execFileSync(process.execPath, ['-e', `require(${JSON.stringify(join(DIST_SRC, 'testing.js'))}).rawConnect('seqpacket', ${JSON.stringify(nameOf(daemon))}, true)`]);
      expect(await until(() => daemon.stats.connections === 1 && daemon.stats.active === 0)).toBe(true);
      const c = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      try {
        expect((await c.call('where')) as unknown).toMatchObject({ transport: 'helper' });
      } finally {
        await c.close();
      }
      expect(await until(() => daemon.stats.connections === 2 && daemon.stats.active === 0)).toBe(true);
    } finally {
      delete process.env[NO_PEER_PIDFD_ENV];
      await daemon.close();
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describeRoot('a close that would block never runs on the event loop, nor holds back another client (client: nobody)', () => {
  const withPython = hasPython() ? test : test.skip;

  /**
   * The attacker (test/util/linger-attacker.ts, mode dup) leaves a TCP socket
   * with SO_LINGER and unsent data with the daemon and hangs up: the
   * daemon's close of it blocks (up to an hour) until it is told to reset
   * the connection at the peer.
   */
  async function lingeringClose(daemon: HelperDaemon): Promise<NobodyProcess> {
    const attacker = spawnAttacker('dup', nameOf(daemon), 1, NOBODY, { describe: describeDaemon(daemon) });
    expect(await attacker.line('ready')).toEqual({ ready: 2, dupOk: 5 });
    expect(await until(() => daemon.stats.active === 0)).toBe(true);
    // Its close has started and blocks: the client fd still waiting to be
    // closed, and out of this process's fd table (tcpSocketsOpen: until
    // then a process spawned here would take the close over).
    expect(await until(() => closerThreads().busy >= 1 && tcpSocketsOpen() === 0)).toBe(true);
    expect(daemon.status().fdsClosing).toBe(1);
    return attacker;
  }

  withPython('a TCP socket with SO_LINGER and unsent data, left with the daemon, does not stall other clients', async () => {
    const daemon = start();
    const attacker = await lingeringClose(daemon);
    try {
      const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath, timeoutMs: 5000 });
      expect(await conn.call('echo', 'not stalled')).toBe('not stalled');
      await conn.close();
    } finally {
      await releaseAttacker(attacker);
      await daemon.close();
    }
  });

  withPython("while its close blocks, another client's RELEASE is answered, and its close() gets CLOSED once its own fds are closed", async () => {
    const daemon = start();
    const attacker = await lingeringClose(daemon);
    const memfd = makeMemfd('victim');
    const target = openFdTable().get(memfd);
    /** Copies of the victim's memfd open in this process (the daemon's, and ours). */
    const copies = (): number => [...openFdTable().values()].filter((t) => t === target).length;
    try {
      let atCommandClosed: { copies: number; fdsClosing: number; active: number } | undefined;
      const conn = await connect('helper', {
        command: { name: 'probe' },
        socketPath: daemon.socketPath,
        onCommandClosed: () => {
          atCommandClosed = { copies: copies(), fdsClosing: daemon.status().fdsClosing, active: daemon.stats.active };
        },
      });
      const got = await conn.dupFileDescriptors([memfd, memfd, memfd]);
      expect(copies()).toBe(4);
      // RELEASE (what a batch that failed part-way sends) is answered once
      // its own fds are closed, not after the lingering one.
      await (conn as unknown as { release(fds: number[]): Promise<void> }).release(got.slice(0, 2));
      expect(copies()).toBe(2);
      await conn.close();
      // CLOSED came (close() did not end by its grace): when the hook ran the
      // daemon had closed the command's last fd, while the lingering close
      // still blocked, and it still served the connection (waiting for the
      // client to hang up).
      expect(atCommandClosed).toEqual({ copies: 1, fdsClosing: 1, active: 1 });
      expect(await until(() => daemon.stats.active === 0)).toBe(true);
    } finally {
      closeFd(memfd);
      await releaseAttacker(attacker);
      await daemon.close();
    }
  });

  withPython('the sockets of ended connections never count against the fd total, nor wait behind a blocked close; the client fds waiting do count', async () => {
    const TOTAL = 4;
    const daemon = start({ limits: { maxFdsTotal: TOTAL } });
    const name = nameOf(daemon);
    const attacker = await lingeringClose(daemon);
    const memfd = makeMemfd('total');
    try {
      // Connections that end now leave their sockets to the background
      // closer, which closes them while the lingering close still blocks.
      for (let i = 0; i < TOTAL + 2; i++) closeFd(rawConnect('seqpacket', name, true));
      expect(await until(() => daemon.stats.connections === TOTAL + 3 && daemon.stats.active === 0)).toBe(true);
      expect(await until(() => backgroundClosesPending() === 1)).toBe(true);
      // Every fd of the total but the waiting one is served; the one past it is refused, naming it.
      const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      const got = await conn.dupFileDescriptors(new Array<number>(TOTAL - 1).fill(memfd));
      expect(got).toHaveLength(TOTAL - 1);
      await expect(conn.dupFileDescriptor(memfd)).rejects.toMatchObject({ quota: 'totalFds', message: expect.stringMatching(/\(1 of them still being closed; at most 4\)/) });
      await conn.close();
      expect(daemon.status().fdsClosing).toBe(1);
    } finally {
      closeFd(memfd);
      await releaseAttacker(attacker);
      await daemon.close();
    }
  });

  withPython("a lingering socket waiting for a closer thread is still in this process's fd table, where a process spawned here would take a copy: tcpSocketsOpen counts it, and closerThreads().busy does not tell", async () => {
    const daemon = start();
    const per = closerThreads().perOwner;
    // One more than nobody's closes may run at once: the last waits, queued, open.
    const attacker = spawnAttacker('dup', nameOf(daemon), per + 1, NOBODY, { describe: describeDaemon(daemon) });
    try {
      expect(await attacker.line('ready')).toEqual({ ready: 2, dupOk: 5 });
      expect(await until(() => daemon.stats.active === 0 && closerThreads().busy >= per && daemon.status().fdsClosing === per + 1)).toBe(true);
      // Every thread nobody may have is in a close, its socket out of the table; the one left is in it.
      expect(await until(() => tcpSocketsOpen() === 1)).toBe(true);
      expect(closerThreads().busy).toBe(per);
    } finally {
      await releaseAttacker(attacker);
      await daemon.close();
    }
    expect(await until(() => tcpSocketsOpen() === 0)).toBe(true);
  });

  withPython("the fds a uid gave that wait to be closed count against that uid's limit: it cannot fill the total with closes it made block", async () => {
    const daemon = start({ limits: { maxFdsPerUid: 2 } });
    const attacker = spawnAttacker('dup', nameOf(daemon), 2, NOBODY, { describe: describeDaemon(daemon) });
    const memfd = makeMemfd('root');
    try {
      expect(await attacker.line('ready')).toEqual({ ready: 2, dupOk: 5 });
      expect(await until(() => daemon.stats.active === 0)).toBe(true);
      // Both closes block (nobody's), and the fds count as nobody's still.
      // Both have begun, too: neither socket is left in this process's fd
      // table, where the nobody process spawned below would take a copy of
      // it, whose close-on-exec, after the closer's close, would be the
      // last one and block that process's exec for the linger time
      // (tcpSocketsOpen). busy alone does not say so: it counts a thread
      // from the moment it takes a close, before its close(2), and a
      // thread closing the attacker's connection as well.
      expect(await until(() => closerThreads().busy >= 2 && tcpSocketsOpen() === 0)).toBe(true);
      expect(daemon.status().fdsClosing).toBe(2);
      const r = await asNobody(daemon, `
        const c = await connect('helper', { command: { name: 'probe' }, socketPath, trustPeer });
        step('connected');
        const fd = makeMemfd('q');
        const one = await c.dupFileDescriptor(fd).then(() => 'served', (e) => e.code + ':' + e.quota + ':' + e.message);
        step('answered');
        await c.close(); closeFd(fd);
        step('closed');
        return { one };`);
      expect(r['one']).toMatch(/^ERR_FDBRIDGE_QUOTA:uidFds:.*\(2 of them still being closed; at most 2\)/);
      // Another uid is served from its own allowance.
      const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      expect(await conn.dupFileDescriptors([memfd, memfd])).toHaveLength(2);
      expect(daemon.status().uids).toEqual([{ uid: ROOT_UID, connections: 1, fdsHeld: 2, fdsClosing: 0, socketsClosing: 0, logBytes: 0 }]);
      await conn.close();
    } finally {
      closeFd(memfd);
      await releaseAttacker(attacker);
      await daemon.close();
    }
  });

  withPython("close() waits for the closer's news (no polling), and gives up on a close blocked for good", async () => {
    const daemon = start();
    const attacker = await lingeringClose(daemon);
    const timers = jest.spyOn(global, 'setTimeout');
    try {
      await daemon.close();
      // It gave up: the lingering close still blocks.
      expect(daemon.status().fdsClosing).toBe(1);
      const delays = timers.mock.calls.map((call) => call[1]);
      // One timer, its give-up; nothing that looks again every few ms.
      expect(delays.filter((ms) => ms === 5000)).toHaveLength(1);
      expect(delays.filter((ms) => ms !== undefined && ms < 100)).toEqual([]);
    } finally {
      timers.mockRestore();
      await releaseAttacker(attacker);
    }
  });
});

describe('idle(): the news that no client is served', () => {
  test('resolves at once with no client; with one served, rejects with a TimeoutError naming it once timeoutMs passes, and resolves once it has gone', async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-limits-idle-${process.pid}`, diagnostics: true });
    try {
      await daemon.idle(0);
      for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => void daemon.idle(bad)).toThrow(RangeError);
      // A string is not read as the number it spells: refused as every timeout is, showing it quoted.
      expect(() => void daemon.idle('100' as unknown as number)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('not "100"') }));
      const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      const err = await daemon.idle(0).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as Error).message).toContain(`"pid":${process.pid}`);
      const idle = daemon.idle();
      await conn.close();
      await idle;
      expect(daemon.stats.active).toBe(0);
    } finally {
      await daemon.close();
    }
  });
});
