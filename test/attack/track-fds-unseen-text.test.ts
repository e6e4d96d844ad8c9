/**
 * With `trackFds`, a leaked fd that no recorder saw being opened (here a
 * directory stream, fs.opendirSync: libuv opens it with no JS call the
 * recorder wraps) must be described as the README says: "opened by a call
 * --track-fds did not see", in the FdLeakError a user reads, and never
 * as a call named "unseen" (which reads as the name of the opener).
 */
import { mkdtempSync, opendirSync, rmSync, type Dir } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describeFdLeakReport, expectNoFdLeaks, FdLeakError } from '../../src/leak-check';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-unseen-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('a leak no recorder saw opened says "opened by a call --track-fds did not see"', async () => {
  let stream: Dir | undefined;
  let thrown: unknown;
  try {
    await expectNoFdLeaks(
      () => {
        stream = opendirSync(dir);
      },
      { trackFds: true },
    );
  } catch (err) {
    thrown = err;
  } finally {
    stream?.closeSync();
  }
  expect(thrown).toBeInstanceOf(FdLeakError);
  const report = (thrown as FdLeakError).report;
  expect(report.leaks.map((l) => [l.target, l.openedAt?.call])).toEqual([[dir, 'unseen']]);
  const text = describeFdLeakReport(report);
  expect({ saysUnseenCall: /opened by unseen/.test(text), saysNotSeen: text.includes('opened by a call --track-fds did not see') }).toEqual({
    saysUnseenCall: false,
    saysNotSeen: true,
  });
});
