/**
 * A helper daemon whose start fails part-way leaves nothing behind: the
 * background closer's reserve it took for its uids is given back, it is no
 * longer registered (as a daemon of this thread for the status command and
 * for dupFileDescriptorSync, which refuses to block on a daemon whose event
 * loop is this thread's), and its listening socket and socket file are
 * gone, so that another daemon can take the address at once.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, HelperDaemon, PROBE_COMMAND, SystemError } from '../../src';
import { HELPER_DAEMONS } from '../../src/commands/status-command';
import { closeFd, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { closerThreads, failNativeCall } from '../../src/test-hooks';
import { DEFAULT_HELPER_LIMITS, MAX_UID } from '../../src/transports/helper-daemon';
import { echoFromNewDaemon } from '../util/helper-status';
import { fdTableSettles, runCli } from '../util/processes';
import { daemonOnWorkerThread } from '../util/worker-daemon';

/** Enough uids that the closer's reserve cannot keep a thread for each (its maxReserve): the start says so in its log. */
const MANY_UIDS = Array.from({ length: closerThreads().maxReserve + 1 }, (_, i) => 100_000 + i);

type Step = 'log' | 'peerCred' | 'setPassRights';

/** Daemons registered on this thread (for the status command and daemonOnThisThread), a started one until its close. */
function registeredDaemons(): number {
  return ((globalThis as Record<symbol, unknown>)[HELPER_DAEMONS] as Map<number, unknown> | undefined)?.size ?? 0;
}

/** Starts a daemon at `socketPath` whose start throws at `step` (a log callback that throws, or the addon's call failing); returns what it threw. */
function failedStart(socketPath: string, step: Step): unknown {
  const failure = new SystemError(-5 /* EIO */, step, `${step} failed (injected)`);
  const restore = step === 'log' ? () => undefined : failNativeCall(step, failure);
  try {
    HelperDaemon.start({
      socketPath,
      diagnostics: true,
      ...(step === 'log'
        ? {
            allowUids: MANY_UIDS,
            log: (line: string) => {
              if (/reserve of \d+ threads/.test(line)) throw failure;
            },
          }
        : {}),
    });
  } catch (err) {
    return err;
  } finally {
    restore();
  }
  return 'started';
}

test('generated: a start that fails after taking the closer\'s reserve and registering gives both back, and frees its address', async () => {
  const before = openFdTable(process.pid);
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-start-failure-'));
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<Step>('log', 'peerCred', 'setPassRights'), fc.boolean(), async (step, abstract) => {
        const socketPath = abstract ? `@fdbridge-start-failure-${process.pid}-${run++}` : join(dir, `s${run++}`);
        const reserved = closerThreads().reservedOwners;
        const registered = registeredDaemons();
        const thrown = failedStart(socketPath, step);
        expect(thrown).toBeInstanceOf(SystemError);
        expect((thrown as Error).message).toBe(`${step} failed (injected)`);
        // The closer's reserve is what it was; the failed daemon is not registered on this thread.
        expect(closerThreads().reservedOwners).toBe(reserved);
        expect(registeredDaemons()).toBe(registered);
        if (!abstract) expect(existsSync(socketPath)).toBe(false);
        // The address is free: a daemon started there now serves.
        expect(await echoFromNewDaemon({ socketPath, diagnostics: true }, 'served')).toBe('served');
        expect(closerThreads().reservedOwners).toBe(reserved);
      }),
      { numRuns: 12, examples: [['log', true], ['peerCred', false], ['setPassRights', true]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("after a start at an address failed here, a daemon on a worker thread at that address answers this thread's dupFileDescriptorSync", async () => {
  const socketPath = `@fdbridge-start-failure-worker-${process.pid}`;
  expect(failedStart(socketPath, 'peerCred')).toBeInstanceOf(SystemError);
  const daemonThread = await daemonOnWorkerThread(socketPath);
  const conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
  const fd = makeMemfd('start-failure-worker-daemon');
  try {
    const remote = conn.dupFileDescriptorSync(fd, { timeoutMs: 60_000 });
    const id = fdIdentity(fd);
    expect(await conn.call('identities', [remote])).toEqual([{ dev: String(id.dev), ino: String(id.ino), type: id.type }]);
  } finally {
    closeFd(fd);
    await conn.close();
    await daemonThread.stop();
  }
});

test('generated: an allowUids entry that is not a uid (0 to 2^31 - 1) fails the start with a TypeError or RangeError naming it, before anything is made', async () => {
  const before = openFdTable(process.pid);
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-start-allow-uids-'));
  let run = 0;
  const notAUid = fc.oneof(
    fc.integer({ min: -(2 ** 40), max: -1 }).map((v) => ({ v, type: RangeError })),
    fc.integer({ min: 2 ** 31, max: 2 ** 40 }).map((v) => ({ v, type: RangeError })),
    fc.double({ noInteger: true, noDefaultInfinity: true, noNaN: true }).map((v) => ({ v, type: RangeError })),
    fc.constantFrom(Number.NaN, Infinity, -Infinity, 2 ** 32, 2 ** 32 - 1).map((v) => ({ v, type: RangeError })),
    fc.constantFrom<unknown>('7', null, undefined, 7n, {}, [7], true).map((v) => ({ v, type: TypeError })),
  );
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(MAX_UID), { maxLength: 4 }), fc.nat(4), notAUid, fc.boolean(), async (good, at, bad, abstract) => {
        const socketPath = abstract ? `@fdbridge-start-allow-uids-${process.pid}-${run++}` : join(dir, `s${run++}`);
        const index = Math.min(at, good.length);
        const allowUids: unknown[] = [...good];
        allowUids.splice(index, 0, bad.v);
        const reserved = closerThreads().reservedOwners;
        const registered = registeredDaemons();
        let thrown: unknown;
        try {
          // Closed again should it start, so that a failure here leaves nothing listening.
          await HelperDaemon.start({ socketPath, diagnostics: true, allowUids: allowUids as number[] }).close();
        } catch (err) {
          thrown = err;
        }
        expect(thrown).toBeInstanceOf(bad.type);
        expect((thrown as Error).message).toMatch(new RegExp(`^allowUids\\[${index}\\] must be an integer from 0 to ${MAX_UID}, not `));
        // Nothing made: no reserve taken, no daemon registered, no socket file; the address is free.
        expect(closerThreads().reservedOwners).toBe(reserved);
        expect(registeredDaemons()).toBe(registered);
        if (!abstract) expect(existsSync(socketPath)).toBe(false);
        expect(await echoFromNewDaemon({ socketPath, diagnostics: true, allowUids: good }, 'served')).toBe('served');
      }),
      { numRuns: 40, examples: [[[], 0, { v: -5, type: RangeError }, true], [[1000], 1, { v: 1.5, type: RangeError }, false], [[], 0, { v: '7', type: TypeError }, true], [[], 0, { v: 2 ** 32, type: RangeError }, false], [[2], 0, { v: Number.NaN, type: RangeError }, true]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('generated: a limits key that is no limit (maxFds for maxFdsPerClient) fails the start with a TypeError naming it and listing the limits, before anything is made', async () => {
  const before = openFdTable(process.pid);
  const known = Object.keys(DEFAULT_HELPER_LIMITS);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.string({ minLength: 1 }).filter((k) => !known.includes(k) && k !== '__proto__'),
      fc.nat(1000),
      // Real limits beside it, each valid: the unknown key alone is refused.
      fc.record({ maxFdsPerClient: fc.nat(1000), maxCallsInFlight: fc.nat(100) }, { requiredKeys: [] }),
      async (key, value, real) => {
        const socketPath = `@fdbridge-start-limits-${process.pid}-${run++}`;
        const reserved = closerThreads().reservedOwners;
        const registered = registeredDaemons();
        let thrown: unknown;
        try {
          await HelperDaemon.start({ socketPath, diagnostics: true, limits: { ...real, [key]: value } }).close();
        } catch (err) {
          thrown = err;
        }
        expect(thrown).toBeInstanceOf(TypeError);
        expect(thrown).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
        expect((thrown as Error).message.startsWith(`limits.${key} must be left out: it is no limit (the limits are ${known.join(', ')}), not ${value}`)).toBe(true);
        expect(closerThreads().reservedOwners).toBe(reserved);
        expect(registeredDaemons()).toBe(registered);
      },
    ),
    { numRuns: 40, examples: [['maxFds', 10, {}], ['maxfdsPerClient', 5, { maxFdsPerClient: 7 }]] },
  );
  for (const limits of ['maxFds', 5, null, [10]]) {
    expect(() => HelperDaemon.start({ socketPath: `@fdbridge-start-limits-${process.pid}-${run++}`, diagnostics: true, limits: limits as never })).toThrow(
      expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/^limits must be an object of limits, not /) }),
    );
  }
  // The real key is taken.
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-start-limits-${process.pid}-${run++}`, diagnostics: true, limits: { maxFdsPerClient: 10 } });
  expect(daemon.limits.maxFdsPerClient).toBe(10);
  await daemon.close();
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('the CLI refuses an --allow-uid past 2^31 - 1 as a usage error, as the API does', async () => {
  const run = await runCli(['helper', '--socket', `@fdbridge-start-allow-uids-cli-${process.pid}`, '--allow-uid', `1000,${2 ** 32}`]);
  expect(run.code).toBe(2);
  expect(run.stderr).toContain(`--allow-uid must be a uid from 0 to ${MAX_UID}, not ${2 ** 32}`);
});
