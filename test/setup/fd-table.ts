/**
 * Installed for every test file (jest setupFilesAfterEnv): the open-fd table
 * of the test process (fd number -> target) must be the same after each test
 * as before it. Closes that happen asynchronously (a child's pipes, a worker's
 * exit) get two seconds of this process's idle time to settle before the test
 * is failed (test/util/settle.ts: a loaded machine's waits do not count).
 */
import { readdirSync, readFileSync } from 'node:fs';

import { diffFdTables, formatFdTableDiff, openFdTable, type FdTable } from '../../src/fd';
import { warmRuntimeFds } from '../../src/runtime-fds';
import { liveFdTableHolds } from '../../src/test-hooks';
import { settleFdTable } from '../util/settle';

let before: FdTable | undefined;

/** True while this process has child processes (over all its threads). */
function hasChildren(): boolean {
  return readdirSync('/proc/self/task').some((tid) => {
    try {
      return readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim() !== '';
    } catch {
      return false; // the thread ended between the listing and the read
    }
  });
}

// When jest runs a file in band it shares this process with its own haste-map
// worker farm, whose children exit (and whose pipes close) shortly after the
// run starts. Let that settle before the first baseline, so it is not blamed
// on the first test: wait until no child is left and the table has been quiet
// for a few turns.
beforeAll(async () => {
  // What libuv opens lazily and keeps (its EMFILE reserve: a test's first
  // spawn would open it when jest runs in band with stdout to a file).
  warmRuntimeFds();
  const deadline = Date.now() + 5000;
  let last = openFdTable();
  let quiet = 0;
  while (Date.now() < deadline && (hasChildren() || quiet < 3)) {
    await new Promise((r) => setTimeout(r, 20));
    const now = openFdTable();
    const diff = diffFdTables(last, now);
    quiet = diff.opened.length === 0 && diff.closed.length === 0 ? quiet + 1 : 0;
    last = now;
  }
});

beforeEach(() => {
  before = openFdTable();
});

afterEach(async () => {
  if (!before) return;
  const start = before;
  before = undefined;
  const diff = await settleFdTable(process.pid, start, 2000);
  if (diff.opened.length > 0 || diff.closed.length > 0) {
    throw new Error(`the open-fd table changed during this test:\n${formatFdTableDiff(diff)}`);
  }
  // The leak checker's holds are in their threads' own tables, which openFdTable does not read: one still alive is a check that never ended.
  const holds = liveFdTableHolds();
  if (holds > 0) throw new Error(`${holds} leak-check hold(s) of baseline files still alive after this test (a ProcessFdSnapshot never released)`);
});
