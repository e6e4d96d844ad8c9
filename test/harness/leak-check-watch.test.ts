/**
 * A snapshot of this process (ProcessFdSnapshot) watches, from before its
 * baseline is read until release(), for fds of fdbridge's that fdbridge
 * finds closed by someone else (native.watchClosedByOthers: a count of
 * watchers, the notes dropped when the last one stops). Snapshots that
 * overlap each keep their own watch: one released twice, disposed after
 * its release, or one of another process ends no other's; disposing one
 * ends its own as release() does; the last one to end ends the watch; and
 * a snapshot that could not be taken (no fd free to read its table with)
 * leaves no watch running.
 */
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';

import { closeFd, closeFds, dupFd, fdLimit, makePipe, openFdTable, setFdLimit } from '../../src/fd';
import { ProcessFdSnapshot } from '../../src/leak-check';
import { closedByOther, fdRegistration, holdOwnCopy } from '../../src/test-hooks';

/** Closes `copy`, an fd fdbridge holds, behind fdbridge's back, then has fdbridge close it (it finds it closed: EBADF). */
function closeBehindBackThenRelease(copy: number): void {
  closeSync(copy);
  closeFds([copy]);
  expect(fdRegistration(copy)).toBe(0);
}

test("overlapping snapshots: one released twice and disposed, one disposed, and one of another process end no other's watch; the last release ends it", async () => {
  const [r, w] = makePipe();
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    const copy = holdOwnCopy(r);
    const registration = fdRegistration(copy);
    const target = openFdTable().get(copy);
    const outer = new ProcessFdSnapshot(process.pid, 'self');
    try {
      const inner = new ProcessFdSnapshot(process.pid, 'inner');
      inner.release();
      inner.release();
      inner[Symbol.dispose]();
      // Disposing ends a watch as release() does.
      new ProcessFdSnapshot(process.pid, 'disposed')[Symbol.dispose]();
      const other = new ProcessFdSnapshot(child.pid as number, 'child');
      other.release();
      other.release();
      closeBehindBackThenRelease(copy);
      // Still watched by `outer`: noted, and blamed on the code under test.
      expect(closedByOther(registration)).toBe(true);
      expect(outer.changes()).toEqual({
        leaks: [],
        closed: [{ pid: process.pid, role: 'self', fd: copy, target, fdbridgeOwn: true }],
        ownClosed: [],
        unreleased: [],
      });
    } finally {
      outer.release();
    }
    // The last watch ended: its notes are dropped, and nothing is noted any more.
    expect(closedByOther(registration)).toBe(false);
    const later = holdOwnCopy(r);
    const laterRegistration = fdRegistration(later);
    closeBehindBackThenRelease(later);
    expect(closedByOther(laterRegistration)).toBe(false);
  } finally {
    child.kill('SIGKILL');
    await exited;
    closeFd(r);
    closeFd(w);
  }
});

test('a snapshot of this process that cannot read its table (no fd number free: EMFILE) throws that error and leaves no watch running', () => {
  const [soft, hard] = fdLimit();
  // The lowest free number: with the soft limit there, no fd can be opened.
  const lowest = dupFd(0);
  closeFd(lowest);
  let err: unknown;
  setFdLimit(lowest, hard);
  try {
    new ProcessFdSnapshot(process.pid, 'self').release();
  } catch (e) {
    err = e;
  } finally {
    setFdLimit(soft, hard);
  }
  expect(err).toMatchObject({ code: 'EMFILE' });
  const [r, w] = makePipe();
  try {
    // Not watched: an fd of fdbridge's it finds closed by someone else is not noted.
    const copy = holdOwnCopy(r);
    const registration = fdRegistration(copy);
    closeBehindBackThenRelease(copy);
    expect(closedByOther(registration)).toBe(false);
    // Watched, it is (the check above can fail).
    const snap = new ProcessFdSnapshot(process.pid, 'self');
    try {
      const watched = holdOwnCopy(r);
      const watchedRegistration = fdRegistration(watched);
      closeBehindBackThenRelease(watched);
      expect(closedByOther(watchedRegistration)).toBe(true);
    } finally {
      snap.release();
    }
  } finally {
    closeFd(r);
    closeFd(w);
  }
});
