/**
 * The seeded, bounded fuzz run that `npm test` includes (a few seconds). A
 * longer run is the same test with more iterations (README, "Fuzzing"):
 *
 *     FDBRIDGE_FUZZ_ITERATIONS=200000 FDBRIDGE_FUZZ_SEED=7 npx jest test/fuzz
 *
 * ITERATIONS is the number of frames given to decodeFrame; a tenth of it
 * goes through each receive path (the command's and the client's) in
 * sessions of a few frames. The global jest setup then checks this
 * process's fd table against its baseline.
 */
import { createRng } from '../../harness/rng';
import { fuzzClientSide, fuzzCommandSide, fuzzDecoder } from './driver';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a non-negative integer, not ${raw}`);
  return n;
}

const ITERATIONS = envInt('FDBRIDGE_FUZZ_ITERATIONS', 20_000);
const SEED = envInt('FDBRIDGE_FUZZ_SEED', 6);
const FRAMES = Math.ceil(ITERATIONS / 10);
// Generous: about 1 ms a frame through a receive path, on a loaded 2-core machine.
const TIMEOUT_MS = 30_000 + FRAMES * 5;

/** Runs `fn` and fails if anything escaped it as an uncaught exception or an unhandled rejection. */
async function noStrayErrors<T>(fn: () => Promise<T>): Promise<T> {
  const stray: unknown[] = [];
  const onError = (err: unknown): void => {
    stray.push(err);
  };
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  try {
    const result = await fn();
    // Let anything left on the event loop surface.
    await new Promise((r) => setTimeout(r, 20));
    if (stray.length > 0) throw new Error(`fuzz: ${stray.length} uncaught error(s), the first: ${String(stray[0])}`);
    return result;
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  }
}

const log = (what: string, stats: unknown, ms: number): void => {
  // eslint-disable-next-line no-console
  console.log(`fuzz ${what} (seed ${SEED}, ${ms.toFixed(0)} ms): ${JSON.stringify(stats)}`);
};

describe(`fuzz (seed ${SEED}, ${ITERATIONS} decoder iterations, ${FRAMES} frames per receive path)`, () => {
  test(
    'decodeFrame returns a well-formed Frame or throws ProtocolError, nothing else',
    () => {
      const t0 = performance.now();
      const stats = fuzzDecoder(createRng(SEED).fork('decoder'), ITERATIONS);
      log('decoder', stats, performance.now() - t0);
      expect(stats.rejected).toBeGreaterThan(0);
      // The generator reaches every frame type the decoder accepts.
      expect(Object.keys(stats.decoded).length).toBe(12);
    },
    TIMEOUT_MS,
  );

  test(
    "the command's receive path (serveConnection): clean or ProtocolError endings, every fd closed",
    async () => {
      const t0 = performance.now();
      const stats = await noStrayErrors(() => fuzzCommandSide(createRng(SEED).fork('command'), FRAMES));
      log('command side', stats, performance.now() - t0);
      expect(stats.endings['ProtocolError']).toBeGreaterThan(0);
      expect(stats.endings['clean']).toBeGreaterThan(0);
      expect(stats.unexpectedFds).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );

  test(
    "the client's receive path (SocketConnection): requests settle, failures are ProtocolErrors, every fd closed",
    async () => {
      const t0 = performance.now();
      const stats = await noStrayErrors(() => fuzzClientSide(createRng(SEED).fork('client'), FRAMES));
      log('client side', stats, performance.now() - t0);
      expect(stats.endings['ProtocolError']).toBeGreaterThan(0);
      expect(stats.endings['clean']).toBeGreaterThan(0);
      // Both kernels were exercised: fds refused by SO_PASSRIGHTS, and fds
      // that arrived (simulated older kernel) and were closed and counted.
      expect(stats.refusedByKernel).toBeGreaterThan(0);
      expect(stats.unexpectedFds).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});
