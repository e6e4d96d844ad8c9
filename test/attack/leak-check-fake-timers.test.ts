/**
 * Jest's fake timers (`jest.useFakeTimers()`, or `fakeTimers` in the jest
 * config) replace setTimeout and Date in the test's globals, and many test
 * suites turn them on. A leak check waits for asynchronous closes to settle
 * before it reports: that wait must run on real time, or a check that
 * finds a leak never reports it (its next poll and its deadline never
 * come) and the test ends in jest's own timeout instead of the leak's
 * report. The check's settle time is 200 ms here; jest's timeout for the
 * test is far longer, and a hang is what fails it.
 */
import { closeSync, openSync } from 'node:fs';

import '../../src/jest';
import { expectNoFdLeaks, FdLeakError } from '../../src/leak-check';

/** Runs `body` under fake timers, then restores real ones and closes the fd it leaked (before this file's fd-table check). */
async function withFakeTimers(body: (open: () => void) => Promise<void>): Promise<void> {
  let fd: number | undefined;
  jest.useFakeTimers();
  try {
    await body(() => {
      fd = openSync('/dev/null', 'r');
    });
  } finally {
    jest.useRealTimers();
    if (fd !== undefined) closeSync(fd);
  }
}

test('expectNoFdLeaks under fake timers reports the leak', async () => {
  await withFakeTimers(async (open) => {
    await expect(expectNoFdLeaks(open, { settleMs: 200 })).rejects.toBeInstanceOf(FdLeakError);
  });
}, 30_000);

test('toLeakNoFds under fake timers fails with the leak listed', async () => {
  await withFakeTimers(async (open) => {
    await expect(expect(open).toLeakNoFds({ settleMs: 200 })).rejects.toThrow(/1 fd leaked:\n {2}fd \d+ -> \/dev\/null/);
  });
}, 30_000);
