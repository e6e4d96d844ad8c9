import { TimeoutError } from '../../src/errors';

/**
 * `settles`, or a TimeoutError naming `what` after `ms`: a deadline of the
 * test's own, far above what the awaited thing takes, so that a hang fails
 * typed and named instead of at jest's limit.
 */
export function within<T>(settles: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([settles, late]).finally(() => clearTimeout(timer));
}
