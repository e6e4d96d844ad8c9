/**
 * A jest matcher for fd leaks. Register it once, in a file listed under
 * `setupFilesAfterEnv` in your jest config:
 *
 *     // jest.setup.ts
 *     import 'fdbridge/dist/src/jest';
 *
 * then, in a test:
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

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace jest {
    interface Matchers<R> {
      /** Runs the received function and fails if it left fds open (await it). */
      toLeakNoFds(options?: FdCheckOptions): Promise<R>;
    }
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
