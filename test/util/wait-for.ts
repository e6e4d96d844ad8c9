/**
 * Bounded waits for a state the test looks at (a thread's system call, a
 * process's output): each wait ends by itself past a hang guard, with a
 * TimeoutError that says what it waited for and the last state it saw,
 * instead of a test stuck until jest's own limit, its clean-up cut short
 * and nothing said of where it stood. The guards only guard against a
 * hang (scaled, time-scale.ts, as statusWhen's is); no test checks them.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import fc from 'fast-check';

import { TimeoutError } from '../../src/errors';

/**
 * The time one test's waits share: each wait gets what is left of it, so
 * that the waits of a test together stay under its jest limit (the test
 * gives a limit above `ms`) and the first one a hang keeps waiting is the
 * one that reports it, while the clean-up still has time to run.
 */
export class HangGuard {
  // On the monotonic clock: a step of the wall clock moves no deadline.
  readonly #deadline: number;
  #spent = false;
  readonly ms: number;

  constructor(ms: number) {
    this.ms = ms;
    this.#deadline = performance.now() + ms;
  }

  /**
   * What is left of the guard's time (ms, 0 once it has run out, and from
   * the moment a wait of it ended past it: a timer may fire a little before
   * the clock read here reaches the deadline).
   */
  get leftMs(): number {
    return this.#spent ? 0 : Math.max(0, this.#deadline - performance.now());
  }

  /**
   * Looks (`look()`) every `pollMs` until `ok` holds of what it saw;
   * resolves with that. Past the guard: a TimeoutError naming `what` and
   * the last thing seen (`describe`d, JSON by default).
   */
  async until<T>(what: string, look: () => T, ok: (seen: T) => boolean, options: { pollMs?: number; describe?: (seen: T) => string } = {}): Promise<T> {
    const describe = options.describe ?? ((seen: T) => JSON.stringify(seen));
    let looks = 0;
    for (;;) {
      const seen = look();
      looks++;
      if (ok(seen)) return seen;
      if (this.leftMs === 0) {
        this.#spent = true;
        throw new TimeoutError(`${what}: not within the hang guard (${this.ms} ms, ${looks} looks); the last state seen: ${describe(seen)}`);
      }
      await sleep(Math.min(options.pollMs ?? 20, Math.max(1, this.leftMs)));
    }
  }

  /**
   * `settles`, or past the guard a TimeoutError naming `what` and the state
   * `state()` tells then (what the wait was waiting on: a process's output,
   * a thread's system call).
   */
  async within<T>(settles: Promise<T>, what: string, state: () => string = () => 'nothing said'): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          this.#spent = true;
          reject(new TimeoutError(`${what}: not within the hang guard (${this.ms} ms); the last state seen: ${state()}`));
        },
        this.leftMs,
      );
    });
    try {
      return await Promise.race([settles, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * fc.assert for a property whose runs wait with hang guards (a HangGuard,
 * within, a NobodyProcess's line or exited, statusWhen, lanesGrow): it ends
 * at the first failed run and reports that run's error (endOnFailure), not
 * shrunk. Shrinking runs the property again for each smaller case: after a
 * failure by a hang each of those waits out a guard of its own, so that the
 * test ends at jest's limit with none of the failure's message, or (where
 * the runs share one guard, spent) each fails at once, whatever its case,
 * and the case reported is not the failure's.
 */
export function assertGuarded<Ts>(property: fc.IAsyncProperty<Ts>, params: Omit<fc.Parameters<Ts>, 'endOnFailure'> = {}): Promise<void> {
  return fc.assert(property, { ...params, endOnFailure: true });
}
