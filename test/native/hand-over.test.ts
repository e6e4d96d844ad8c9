/**
 * The background closer's hand-over reads each fd's file and registration
 * as one step (native/fd_ops.cc, FdCloseInBackground): a new fd of
 * fdbridge's that another thread makes at the number meanwhile (the
 * program closed the fd handed over) is never closed by the closer, nor its
 * registration ended, nor noted as closed by someone else. And a large batch
 * leaves no room for its jobs behind in the thread that handed it over.
 * The files are read outside the registry's lock, as are a given copy's
 * as it is marked (FdMarkGiven, FdDupAllGiven): another thread that makes
 * an fd of fdbridge's during that read does not wait for it, and a new fd
 * of fdbridge's that took the number meanwhile is not marked given. A given
 * copy handed over (a helper's RELEASE) is checked against the file it was
 * given with, which its registration keeps: it is not read again.
 * test/native/hand_over_test.cc makes that take-over happen inside the
 * hand-over's statx, before and after the real one; it checks its own
 * open-fd table before and after.
 */
import { spawnSync } from 'node:child_process';

import { scaled } from '../util/time-scale';

import { compileNativeTest } from './helpers';

let program: string;

beforeAll(() => {
  // No sanitizer: the batch's check reads the heap's own figures (mallinfo2).
  program = compileNativeTest('hand_over_test', ['fd_ops.cc'], false);
}, scaled(120_000));

test.each([
  ['before', 'the take-over comes before the hand-over reads the file'],
  ['after', 'the take-over comes after the hand-over read the file'],
  ['unlocked', "another thread registering an fd of fdbridge's meanwhile does not wait for the file's read"],
  ['mark-given-unlocked', "FdMarkGiven reads the file outside the registry's lock"],
  ['dup-given-unlocked', "FdDupAllGiven reads the new copy's file outside the registry's lock"],
  ['mark-given-take-over', 'a take-over during FdMarkGiven leaves the new fd unmarked, open and registered'],
  ['given', "a given copy's hand-over reads no file (its file as given is kept), and a file the program put at a closed copy's number is left open"],
  ['batch-memory', 'a batch of 100,000 fds'],
])('%s: %s', (mode) => {
  const run = spawnSync(program, [mode], { encoding: 'utf8', timeout: scaled(60_000) });
  expect({ status: run.status, signal: run.signal, stderr: run.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  expect(run.stdout).toMatch(/^ok \d+\n$/);
});
