/**
 * The model-based test: random sequences of duplications (0..1000 fds, some
 * closed before the call, some closed in the same tick right after it),
 * bursts of calls past the socket buffer, slow, held and blocking calls,
 * close() and the peer's death, on every transport, each request checked
 * against one reference model (world.ts: which file every returned number
 * names in the command's process, which requests fail and with which typed
 * error, that every request settles once, that every fd table ends where it
 * started). Steps: steps.ts.
 *
 * `npm test` runs a few sequences per transport with a fixed seed. A long
 * run (README, "Testing"):
 *
 *     FDBRIDGE_MODEL_MINUTES=25 FDBRIDGE_MODEL_SEED=7 npm run test:model
 *
 * FDBRIDGE_MODEL_RUNS sequences per batch (seeds SEED, SEED+1, ... until
 * the minutes are spent; without MINUTES, one batch), FDBRIDGE_MODEL_COMMANDS
 * steps at most per sequence (fast-check's maxCommands), FDBRIDGE_MODEL_TRANSPORTS a comma list. A
 * failure prints the shrunk sequence and the variables that replay it
 * (FDBRIDGE_MODEL_PATH, FDBRIDGE_MODEL_REPLAY).
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';

import fc from 'fast-check';

import type { TransportName } from '../../src';
import { scaled } from '../util/time-scale';
import { stepArbitraries } from './steps';
import { counters, HelperProcess, World } from './world';

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`${name} must be a non-negative number, not ${raw}`);
  return n;
}

const ALL: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd'];
const TRANSPORTS = (process.env['FDBRIDGE_MODEL_TRANSPORTS'] ?? ALL.join(','))
  .split(',')
  .filter((t) => t !== '')
  .map((t) => {
    if (!ALL.includes(t as TransportName)) throw new RangeError(`FDBRIDGE_MODEL_TRANSPORTS: unknown transport ${t}`);
    return t as TransportName;
  });
const SEED = envNumber('FDBRIDGE_MODEL_SEED', 9);
const RUNS = envNumber('FDBRIDGE_MODEL_RUNS', 8);
const MAX_STEPS = envNumber('FDBRIDGE_MODEL_COMMANDS', 25);
const MINUTES = envNumber('FDBRIDGE_MODEL_MINUTES', 0);
const PATH = process.env['FDBRIDGE_MODEL_PATH'];
const REPLAY = process.env['FDBRIDGE_MODEL_REPLAY'];
/** Where each batch's figures are appended as a JSON line (the long run's record). */
const LOG = process.env['FDBRIDGE_MODEL_LOG'];
const BUDGET_MS = (MINUTES * 60_000) / TRANSPORTS.length;
/**
 * jest's limit on a transport's test: its budget, and room beyond it for a
 * failure's shrinking (each try is a new sequence, a new process for child
 * and pidfd). A hang guard, scaled.
 */
const LIMIT_MS = BUDGET_MS + scaled(600_000);
/**
 * What the limit keeps back from the checks: the sequence running when
 * their time is up (a check interrupts between sequences, not in one; each
 * wait of one ends by HANG_MS), its teardown, and the report.
 */
const ROOM_MS = scaled(120_000);

const SIZES = { maxFds: 1000, maxBurst: 5000, maxBurstBytes: 8 << 20 };

// An abstract name: nothing in the filesystem for a crashed run to leave behind.
const HELPER_SOCKET = `@fdbridge-model-${process.pid}-${randomBytes(6).toString('hex')}`;
let helper: HelperProcess | undefined;

async function liveHelper(): Promise<HelperProcess> {
  if (!helper?.alive) helper = await HelperProcess.start(HELPER_SOCKET);
  return helper;
}

async function runSequence(transport: TransportName, cmds: Iterable<fc.AsyncCommand<World['model'], World>>): Promise<void> {
  const world = await World.start(transport, transport === 'helper' ? await liveHelper() : undefined, 4);
  let failure: unknown;
  try {
    await fc.asyncModelRun(() => ({ model: world.model, real: world }), cmds);
    await world.finish();
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    await world.teardown(failure);
  }
}

/** The replay hint fast-check writes into a counterexample of fc.commands. */
function replayPathOf(counterexample: unknown): string | undefined {
  return /replayPath="([^"]*)"/.exec(String(counterexample))?.[1];
}

beforeAll(async () => {
  // Warm up before any baseline: the runtime opens some fds once per
  // process, lazily, and keeps them (libuv's signal pipe at the first
  // spawn, its /dev/null reserve at the first pipe handle). They are not
  // the library's, and a sequence must not be blamed for them.
  for (const transport of TRANSPORTS) await runSequence(transport, []);
}, scaled(60_000));

afterAll(async () => {
  await helper?.stop();
});

describe.each(TRANSPORTS)('%s transport', (transport) => {

  /** What a failed batch found, and the variables that replay it. */
  function describeFailure(details: fc.RunDetails<[Iterable<fc.AsyncCommand<World['model'], World>>]>): string {
    const replay = replayPathOf(details.counterexample?.[0]);
    if (details.counterexample === null) {
      return `the ${transport} transport's sequences ran out of the test's time (seed ${details.seed}, ${details.numRuns} sequence(s) run, none failed)\n\n${fc.defaultReportMessage(details)}`;
    }
    return (
      `the ${transport} transport disagrees with the model (seed ${details.seed}, shrunk ${details.numShrinks} time(s)${details.interrupted ? ', shrinking cut short by the test\'s time' : ''}).\n` +
      `Shrunk sequence: ${String(details.counterexample?.[0])}\n` +
      `What went wrong: ${details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)}\n` +
      `Replay it: FDBRIDGE_MODEL_TRANSPORTS=${transport} FDBRIDGE_MODEL_SEED=${details.seed} FDBRIDGE_MODEL_RUNS=${RUNS} ` +
      `FDBRIDGE_MODEL_COMMANDS=${MAX_STEPS} FDBRIDGE_MODEL_PATH=${details.counterexamplePath ?? ''}` +
      `${replay ? ` FDBRIDGE_MODEL_REPLAY=${replay}` : ''} npm run test:model\n\n` +
      fc.defaultReportMessage(details)
    );
  }
  test(
    'random sequences of requests, bursts, holds, close and peer death agree with the model',
    async () => {
      const started = Date.now();
      const before = { ...counters };
      const property = fc.asyncProperty(
        fc.commands(stepArbitraries(SIZES), { maxCommands: MAX_STEPS, size: 'max', ...(REPLAY ? { replayPath: REPLAY } : {}) }),
        (cmds) => runSequence(transport, cmds),
      );
      let batch = 0;
      const failures: string[] = [];
      do {
        const seed = SEED + batch;
        // Bounded in time, shrinking included: a sequence that hangs waits out
        // HANG_MS at each try of its shrinking, and a check that ran into
        // jest's limit would end the test with nothing of what it found. Past
        // the time, the check stops and says what it has (markInterruptAsFailure:
        // one that found nothing yet fails, as the limit would have failed it).
        const details = await fc.check(property, {
          seed,
          numRuns: RUNS,
          ...(PATH ? { path: PATH } : {}),
          interruptAfterTimeLimit: Math.max(1, LIMIT_MS - ROOM_MS - (Date.now() - started)),
          markInterruptAsFailure: true,
        });
        batch++;
        const failure = details.failed ? describeFailure(details) : undefined;
        if (LOG) {
          appendFileSync(
            LOG,
            `${JSON.stringify({ transport, seed, runs: details.numRuns, failed: details.failed, sequences: counters.sequences - before.sequences, steps: counters.steps - before.steps, requests: counters.requests - before.requests, fdsSent: counters.fdsSent - before.fdsSent, elapsedMs: Date.now() - started, ...(failure ? { failure } : {}) })}\n`,
          );
        }
        if (failure) {
          // At once, too: a long run that overruns its test timeout still shows what it found.
          if (BUDGET_MS > 0) process.stderr.write(`${failure}\n\n`);
          failures.push(failure);
          // A long run goes on with the next seed (each failure is worth
          // knowing); a replay or the bounded run stops here.
          if (BUDGET_MS === 0 || PATH !== undefined) break;
        }
      } while (PATH === undefined && Date.now() - started < BUDGET_MS);
      console.log(
        `model ${transport}: ${counters.sequences - before.sequences} sequences (seeds ${SEED}..${SEED + batch - 1}), ` +
          `${counters.steps - before.steps} steps, ${counters.requests - before.requests} requests, ` +
          `${counters.fdsSent - before.fdsSent} fds sent, ${((Date.now() - started) / 1000).toFixed(1)} s, ${failures.length} failed batch(es)`,
      );
      if (failures.length > 0) throw new Error(failures.join('\n\n'));
    },
    LIMIT_MS,
  );
});
