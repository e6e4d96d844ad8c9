/**
 * statusWhen (helper-status.ts), the wait of many attack tests for a
 * helper daemon's status: it resolves with the first status that holds,
 * and one that never comes is a hang guard's typed timeout that says the
 * last status the daemon gave, not a test stuck until jest's own limit.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import fc from 'fast-check';

import { HelperDaemon } from '../../src';
import { helperStatus } from '../../src/transports/helper';
import { runCli } from './processes';
import { TimeoutError } from '../../src/errors';
import { fakeHelperDaemon, type FakeHelperDaemon } from './fake-helper-daemon';
import { STATUS_WHEN_GUARD_MS, statusWhen } from './helper-status';
import { scaled } from './time-scale';
import { assertGuarded, HangGuard } from './wait-for';

test('generated: statusWhen resolves with a status that holds, and past its guard rejects with a TimeoutError saying the last status it saw', async () => {
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-when-${process.pid}` });
  try {
    await assertGuarded(
      fc.asyncProperty(fc.integer({ min: 0, max: 200 }), async (guardMs) => {
        const held = await statusWhen(daemon.socketPath, (s) => s.fdsClosing === 0, guardMs);
        expect(held.fdsClosing).toBe(0);
        // A status that never comes: the guard ends the wait.
        let seen: unknown;
        const error = await statusWhen(
          daemon.socketPath,
          (s) => {
            seen = s;
            return false;
          },
          guardMs,
        ).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(TimeoutError);
        expect((error as Error).message).toContain(`within ${guardMs} ms`);
        expect((error as Error).message).toContain(`the last status it gave: ${JSON.stringify(seen)}`);
      }),
      { numRuns: 5 },
    );
  } finally {
    await daemon.close();
  }
});

/**
 * The guard ends a wait with what the daemon last said only if it comes
 * before jest's limit on the test: every limit given in a test file that
 * waits with statusWhen (itself or through withAttackedDaemon) is scaled as
 * the guard is (time-scale.ts) and longer than the guard unscaled, so that
 * guard < limit holds at every time scale. A limit is the number or
 * scaled(number) that ends a test's call, after its function's body.
 */
test("every test file waiting with statusWhen gives its tests limits scaled as the guard is, and past it", () => {
  const root = join(__dirname, '..');
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.test.ts')).sort();
  const waiting = files.filter((f) => /\b(statusWhen|withAttackedDaemon)\(/.test(readFileSync(join(root, f), 'utf8')));
  expect(waiting.length).toBeGreaterThan(0);
  const wrong: string[] = [];
  let limits = 0;
  for (const f of waiting) {
    for (const m of readFileSync(join(root, f), 'utf8').matchAll(/(?<!\{)\}\s*,\s*(scaled\(\s*)?(\d[\d_]*)\s*\)?\s*,?\s*\)\s*;/g)) {
      limits++;
      const ms = Number(m[2]!.replace(/_/g, ''));
      if (m[1] === undefined) wrong.push(`${f}: ${ms} (not scaled)`);
      else if (scaled(ms) <= STATUS_WHEN_GUARD_MS) wrong.push(`${f}: scaled(${ms}) = ${scaled(ms)} ms (not past the guard, ${STATUS_WHEN_GUARD_MS} ms)`);
    }
  }
  expect(limits).toBeGreaterThan(0);
  expect(wrong).toEqual([]);
});

/**
 * A fake daemon that takes every connection and stays silent: before READY
 * (`silentFrom: 'hello'`), or once it has answered HELLO with READY, to
 * every call after it (`'call'`), as a daemon whose event loop got stuck
 * between the two would.
 */
function silentDaemon(silentFrom: 'hello' | 'call'): FakeHelperDaemon {
  return fakeHelperDaemon(`silent-status-${silentFrom}`, { hello: silentFrom === 'call' ? 'ready' : 'silent', other: 'silent' });
}

test("generated: helperStatus (statusOf's, fdbridge helper --status's) of a daemon that takes the connection and never answers, before READY or after it, rejects with a TimeoutError naming the daemon", async () => {
  const daemons = { hello: silentDaemon('hello'), call: silentDaemon('call') };
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('hello' as const, 'call' as const), fc.integer({ min: 20, max: 300 }), async (silentFrom, timeoutMs) => {
        const { socketPath } = daemons[silentFrom];
        const err = await helperStatus(socketPath, timeoutMs).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TimeoutError);
        expect((err as Error).message).toContain(socketPath);
        expect((err as Error).message).toContain(`${timeoutMs} ms`);
      }),
      { numRuns: 6, examples: [['call', 50], ['hello', 50]] },
    );
  } finally {
    daemons.hello.close();
    daemons.call.close();
  }
}, scaled(120_000));

/**
 * Between the code's reading of the monotonic clock for a timer and the
 * spy's, a pause of this process (a GC, preemption on a loaded machine) may
 * come: that much past the deadline is not a wait helperStatus chose. Far
 * below the 5 s a close's default wait for CLOSED adds.
 */
const CLOCK_READ_SLACK_MS = 50;

test("generated: helperStatus of a daemon that never answers, before READY or after it: its TimeoutError, and no timer it sets (connecting's, the handshake's, the call's, the close's wait for CLOSED) waits past its deadline", async () => {
  const daemons = { hello: silentDaemon('hello'), call: silentDaemon('call') };
  const realSetTimeout = global.setTimeout;
  try {
    await assertGuarded(
      fc.asyncProperty(fc.constantFrom('hello' as const, 'call' as const), fc.integer({ min: 20, max: 300 }), async (silentFrom, timeoutMs) => {
        // The timers fdbridge's code sets (not the hang guard's below): when each was set, and for how long.
        const timers: Array<{ setAt: number; ms: number; where: string }> = [];
        const spy = jest.spyOn(global, 'setTimeout').mockImplementation(((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
          const where = (new Error().stack ?? '').split('\n').find((line) => /[\\/]src[\\/]/.test(line));
          if (where !== undefined) timers.push({ setAt: performance.now(), ms: ms ?? 0, where: where.trim() });
          return realSetTimeout(fn, ms, ...args);
        }) as typeof setTimeout);
        let deadline: number;
        let err: unknown;
        try {
          const status = helperStatus(daemons[silentFrom].socketPath, timeoutMs);
          // helperStatus read the clock for its deadline before it returned.
          deadline = performance.now() + timeoutMs;
          err = await new HangGuard(scaled(30_000)).within(
            status.catch((e: unknown) => e),
            `helperStatus(${timeoutMs} ms) of a daemon silent from its ${silentFrom}`,
          );
        } finally {
          spy.mockRestore();
        }
        expect(err).toBeInstanceOf(TimeoutError);
        expect(timers.length).toBeGreaterThan(0);
        // One set past the deadline (this process starved of the CPU meanwhile) waits nothing.
        expect(timers.filter((t) => t.setAt + t.ms > Math.max(deadline, t.setAt) + CLOCK_READ_SLACK_MS)).toEqual([]);
      }),
      { numRuns: 8, examples: [['call', 50], ['hello', 50]] },
    );
  } finally {
    daemons.hello.close();
    daemons.call.close();
  }
}, scaled(120_000));

test('generated: helperStatus\'s timeout is on the monotonic clock: the wall clock stepped back an hour during the call, it still rejects with its TimeoutError when its time is up', async () => {
  const daemon = silentDaemon('call');
  const wallClock = Date.now;
  try {
    await assertGuarded(
      fc.asyncProperty(fc.integer({ min: 20, max: 200 }), async (timeoutMs) => {
        // The first reading as it is, every later one an hour back: a step while the call runs.
        let readings = 0;
        const stepped = jest.spyOn(Date, 'now').mockImplementation(() => (readings++ === 0 ? wallClock() : wallClock() - 3_600_000));
        try {
          const status = helperStatus(daemon.socketPath, timeoutMs).catch((e: unknown) => e);
          const err = await new HangGuard(scaled(10_000)).within(status, 'helperStatus past its own timeout, the wall clock stepped back');
          expect(err).toBeInstanceOf(TimeoutError);
          expect((err as Error).message).toContain(`did not answer within ${timeoutMs} ms`);
        } finally {
          stepped.mockRestore();
        }
      }),
      { numRuns: 4 },
    );
  } finally {
    daemon.close();
  }
}, scaled(120_000));

test('fdbridge helper --status against a daemon that answers HELLO and never the call: fails with a TimeoutError, does not hang', async () => {
  const daemon = silentDaemon('call');
  try {
    const run = await runCli(['helper', '--status', '--socket', daemon.socketPath]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`the helper daemon at ${daemon.socketPath} did not answer`);
  } finally {
    daemon.close();
  }
}, scaled(120_000));
