/**
 * Latency of one operation, measured with tinybench.
 *
 * tinybench 6 is ESM-only. Node 20.19+ can require() it (what this CommonJS
 * build compiles `import` to), but jest's module loader cannot: nothing that
 * jest loads may import this file, or a file that imports it. Tests run the
 * benchmark through the CLI in a subprocess instead.
 */
import { Bench } from 'tinybench';

import type { BenchCase, Latency } from './types';

export interface MeasureOptions {
  /** Time budget in ms for the measured phase (default 500); at least `iterations` run anyway. */
  time?: number;
  /** Warm-up time budget in ms (default 100; 0 turns warm-up off). */
  warmupTime?: number;
  /** Minimum number of measured iterations (default 64, tinybench's own). */
  iterations?: number;
}

function checkBudget(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`measureLatency: ${name} must be a finite number >= 0, not ${value}`);
  return value;
}

/**
 * Summarizes latency samples given in microseconds the way tinybench does
 * (percentiles interpolated linearly between order statistics), e.g. to pool
 * the samples of several rounds. `opsPerSec` is 1e6 / mean.
 */
export function summarizeSamples(samplesUs: readonly number[]): Latency {
  if (samplesUs.length === 0) throw new RangeError('summarizeSamples: no samples');
  const sorted = Float64Array.from(samplesUs).sort();
  const quantile = (q: number): number => {
    const pos = q * (sorted.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, sorted.length - 1);
    return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (pos - lo);
  };
  let sum = 0;
  for (const v of sorted) sum += v;
  const meanUs = sum / sorted.length;
  return { meanUs, p50Us: quantile(0.5), p99Us: quantile(0.99), samples: sorted.length, opsPerSec: meanUs > 0 ? 1e6 / meanUs : 0 };
}

/**
 * Runs `benchCase.fn` repeatedly (after a warm-up) and returns its latency in
 * microseconds: mean, p50, p99, the number of samples, and operations per
 * second.
 *
 * One sample is one call of fn, awaited: for an async fn that includes one
 * microtask turn (tinybench's note), negligible next to a round trip.
 * `afterEach` runs after every call, outside the timed region. The case's
 * `teardown` runs once at the end, also on failure: callers hand the case
 * over and must not tear it down again.
 *
 * `opsPerSec` is samples / total measured time (1e6 / meanUs), not
 * tinybench's `throughput.mean`, which averages per-sample rates and so
 * overstates the rate whenever samples vary.
 *
 * Rejects with fn's error if any call fails.
 */
export async function measureLatency(
  benchCase: BenchCase,
  options: { time?: number; warmupTime?: number; iterations?: number } = {},
): Promise<Latency> {
  return (await run(benchCase, options, false)).latency;
}

/** measureLatency, plus every sample (µs, unordered) for pooling across rounds. */
export async function measureLatencySamples(
  benchCase: BenchCase,
  options: MeasureOptions = {},
): Promise<{ latency: Latency; samplesUs: number[] }> {
  const r = await run(benchCase, options, true);
  return { latency: r.latency, samplesUs: r.samplesUs ?? [] };
}

async function run(
  benchCase: BenchCase,
  options: MeasureOptions,
  retainSamples: boolean,
): Promise<{ latency: Latency; samplesUs?: number[] }> {
  const time = checkBudget('time', options.time, 500);
  const warmupTime = checkBudget('warmupTime', options.warmupTime, 100);
  const iterations = checkBudget('iterations', options.iterations, 64);
  try {
    const bench = new Bench({
      time,
      iterations: Math.max(1, Math.floor(iterations)),
      warmup: warmupTime > 0,
      warmupTime,
      // Without a floor of warm-up iterations a tiny budget may warm up
      // nothing; a few calls JIT the path and fill caches.
      warmupIterations: 16,
      throws: true,
      retainSamples,
    });
    const afterEach = benchCase.afterEach?.bind(benchCase);
    // `async: true`: tinybench would otherwise call fn once more, untimed,
    // to find out whether it returns a promise; that call would make one
    // more fd round trip than the samples record.
    bench.add('case', () => benchCase.fn(), { async: true, ...(afterEach ? { afterEach: () => afterEach() } : {}) });
    const [task] = await bench.run();
    const result = task?.result;
    if (!result) throw new Error('measureLatency: tinybench returned no task');
    if (result.state === 'errored') throw result.error;
    if (result.state !== 'completed') throw new Error(`measureLatency: the task ended ${result.state}`);
    const { latency } = result;
    return {
      latency: {
        meanUs: latency.mean * 1000,
        p50Us: latency.p50 * 1000,
        p99Us: latency.p99 * 1000,
        samples: latency.samplesCount,
        opsPerSec: result.period > 0 ? 1000 / result.period : 0,
      },
      ...(retainSamples ? { samplesUs: (latency.samples ?? []).map((ms) => ms * 1000) } : {}),
    };
  } finally {
    await benchCase.teardown?.();
  }
}
