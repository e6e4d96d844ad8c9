/**
 * A jest matcher for fd leaks (`fdbridge/jest`). Register it once in the
 * jest config:
 *
 *     setupFilesAfterEnv: ['fdbridge/jest']
 *
 * and give TypeScript its type with `"types": ["fdbridge/jest"]` in the
 * tests' tsconfig (or `import 'fdbridge/jest'` in a test file): it extends
 * both the global `expect` of @types/jest and the `expect` of
 * `@jest/globals`. Then, in a test:
 *
 *     await expect(async () => {
 *       const conn = await connect('worker', { command: LOG_COMMAND });
 *       await conn.dupFileDescriptor(fd);
 *       await conn.close();
 *     }).toLeakNoFds();
 *
 * On failure the message lists each leaked fd:
 * `fd 23 -> /tmp/x (opened during the test, still open)`. Options are those
 * of checkFdLeaks (other pids to watch, settle time, ignore, failOnClosed).
 */
import { checkFdLeaks, describeFdLeakReport, type FdCheckOptions } from './leak-check';

// The matcher's type, where each way of using jest looks for it: the
// global `jest` namespace (@types/jest, the global `expect`) and the `expect`
// package's Matchers (`import { expect } from '@jest/globals'`), as
// jest-extended does. The type parameters must be exactly those of the
// declarations they merge with.
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace jest {
    interface Matchers<R> {
      /** Runs the received function and fails if it left fds open (await it). */
      toLeakNoFds(options?: FdCheckOptions): Promise<R>;
    }
  }
}

declare module 'expect' {
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  interface Matchers<R extends void | Promise<void>, T = unknown> {
    /** Runs the received function and fails if it left fds open (await it). */
    toLeakNoFds(options?: FdCheckOptions): Promise<R>;
  }
}

/** The matcher itself, for `expect.extend({ toLeakNoFds })` where the side-effect import does not suit. */
export async function toLeakNoFds(
  this: { isNot?: boolean },
  received: unknown,
  options: FdCheckOptions = {},
): Promise<{ pass: boolean; message(): string }> {
  if (typeof received !== 'function') {
    throw new TypeError(`toLeakNoFds: expect() needs a function to run, got ${typeof received}`);
  }
  const report = await checkFdLeaks(received as () => unknown, options);
  const bad = report.leaks.length > 0 || (options.failOnClosed === true && report.closed.length > 0);
  const shown = options.failOnClosed ? report : { ...report, closed: [] };
  return {
    pass: !bad,
    message: () =>
      bad
        ? `expected the function to leave no fds open, but:\n${describeFdLeakReport(shown)}`
        : 'expected the function to leak an fd, but the fd tables returned to their baseline',
  };
}

// Registered on import when jest's `expect` is around (setupFilesAfterEnv).
const jestExpect = (globalThis as { expect?: { extend(matchers: Record<string, unknown>): void } }).expect;
if (jestExpect && typeof jestExpect.extend === 'function') {
  jestExpect.extend({ toLeakNoFds });
}
