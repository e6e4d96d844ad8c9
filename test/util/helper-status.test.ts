/**
 * statusWhen (helper-status.ts), the wait of many attack tests for a
 * helper daemon's status: it resolves with the first status that holds,
 * and one that never comes is a hang guard's typed timeout that says the
 * last status the daemon gave, not a test stuck until jest's own limit.
 */
import fc from 'fast-check';

import { HelperDaemon } from '../../src';
import { TimeoutError } from '../../src/errors';
import { statusWhen } from './helper-status';

test('generated: statusWhen resolves with a status that holds, and past its guard rejects with a TimeoutError saying the last status it saw', async () => {
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-when-${process.pid}` });
  try {
    await fc.assert(
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
