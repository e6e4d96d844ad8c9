/**
 * Installed for every test file (jest setupFilesAfterEnv): the open-fd table
 * of the test process (fd number -> target) must be the same after each test
 * as before it. Closes that happen asynchronously (a child's pipes, a worker's
 * exit) get up to two seconds to settle before the test is failed.
 */
import { diffFdTables, formatFdTableDiff, openFdTable, type FdTable } from '../../src/fd';

let before: FdTable | undefined;

beforeEach(() => {
  before = openFdTable();
});

afterEach(async () => {
  if (!before) return;
  const start = before;
  before = undefined;
  const deadline = Date.now() + 2000;
  for (;;) {
    const diff = diffFdTables(start, openFdTable());
    if (diff.opened.length === 0 && diff.closed.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`the open-fd table changed during this test:\n${formatFdTableDiff(diff)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
});
