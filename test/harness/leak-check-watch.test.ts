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
 *
 * The count is the process's: each case runs in a fresh node process (a
 * jest worker may have run another file's check in a worker thread that
 * was terminated mid-check, whose watch is never ended).
 */
import { execFileSync } from 'node:child_process';

import { distPath } from '../../src/paths';

/** Runs `body` in a fresh node process with the compiled modules as `fd`, `lc`, `hooks`, `fs` and `cp`; returns what it printed, as JSON. */
function inFreshProcess(body: string): unknown {
  const script = `
    const fs = require('node:fs');
    const cp = require('node:child_process');
    const fd = require(${JSON.stringify(distPath('src/fd.js'))});
    const lc = require(${JSON.stringify(distPath('src/leak-check.js'))});
    const hooks = require(${JSON.stringify(distPath('src/test-hooks.js'))});
    /** Closes a copy fdbridge holds behind its back, then has fdbridge close it (EBADF): its registration. */
    function closeBehindBack(copy) {
      const registration = hooks.fdRegistration(copy);
      fs.closeSync(copy);
      fd.closeOwnFds([copy]);
      if (hooks.fdRegistration(copy) !== 0) throw new Error('still registered');
      return registration;
    }
    (async () => { ${body} })().then((out) => process.stdout.write(JSON.stringify(out)), (err) => { console.error(err); process.exit(1); });
  `;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
}

test("overlapping snapshots: one released twice and disposed, one disposed, and one of another process end no other's watch; the last release ends it", () => {
  const out = inFreshProcess(`
    const [r, w] = fd.makePipe();
    const child = cp.spawn('sleep', ['600'], { stdio: 'ignore' });
    const copy = hooks.holdOwnCopy(r);
    const target = fd.openFdTable().get(copy);
    const outer = new lc.ProcessFdSnapshot(process.pid, 'self');
    const inner = new lc.ProcessFdSnapshot(process.pid, 'inner');
    inner.release();
    inner.release();
    inner[Symbol.dispose]();
    new lc.ProcessFdSnapshot(process.pid, 'disposed')[Symbol.dispose]();
    const other = new lc.ProcessFdSnapshot(child.pid, 'child');
    other.release();
    other.release();
    const registration = closeBehindBack(copy);
    const watched = hooks.closedByOther(registration);
    const changes = outer.changes();
    outer.release();
    const afterLast = hooks.closedByOther(registration);
    const later = closeBehindBack(hooks.holdOwnCopy(r));
    child.kill('SIGKILL');
    return { watched, changes, expected: [{ pid: process.pid, role: 'self', fd: copy, target, fdbridgeOwn: true }], afterLast, later: hooks.closedByOther(later) };
  `) as { changes: unknown; expected: unknown };
  // Still watched by the outer snapshot: noted, and blamed on the code under test; once it ends, the notes are dropped and nothing is noted.
  expect(out).toEqual({ watched: true, changes: { leaks: [], closed: out.expected, ownClosed: [], unreleased: [] }, expected: out.expected, afterLast: false, later: false });
});

test('a snapshot of this process that cannot read its table (no fd number free: EMFILE) throws that error and leaves no watch running', () => {
  const out = inFreshProcess(`
    const [soft, hard] = fd.fdLimit();
    const lowest = fd.dupFd(0);
    fd.closeFd(lowest);
    let code;
    fd.setFdLimit(lowest, hard);
    try {
      new lc.ProcessFdSnapshot(process.pid, 'self').release();
    } catch (e) {
      code = e.code;
    } finally {
      fd.setFdLimit(soft, hard);
    }
    const [r, w] = fd.makePipe();
    const unwatched = hooks.closedByOther(closeBehindBack(hooks.holdOwnCopy(r)));
    const snap = new lc.ProcessFdSnapshot(process.pid, 'self');
    const watched = hooks.closedByOther(closeBehindBack(hooks.holdOwnCopy(r)));
    snap.release();
    return { code, unwatched, watched };
  `);
  // Not watched after the failed snapshot; watched, it is (the check above can fail).
  expect(out).toEqual({ code: 'EMFILE', unwatched: false, watched: true });
});

test("a snapshot in a worker thread terminated mid-check has its watch ended by the thread's teardown: the watch the main thread's close behind fdbridge's back was noted under ends, and a later one is not noted", () => {
  const out = inFreshProcess(`
    const { Worker } = require('node:worker_threads');
    const worker = new Worker(\`
      const lc = require(${JSON.stringify(distPath('src/leak-check.js'))});
      const { parentPort } = require('node:worker_threads');
      globalThis.snapshot = new lc.ProcessFdSnapshot(process.pid, 'worker');
      parentPort.postMessage('watching');
      setInterval(() => {}, 1000);
    \`, { eval: true });
    await new Promise((resolve) => worker.once('message', resolve));
    const [r, w] = fd.makePipe();
    const during = closeBehindBack(hooks.holdOwnCopy(r));
    const watched = hooks.closedByOther(during);
    await worker.terminate();
    const later = closeBehindBack(hooks.holdOwnCopy(r));
    fd.closeFds([r, w]);
    return { watched, dropped: !hooks.closedByOther(during), later: hooks.closedByOther(later) };
  `);
  // The terminated check's watch ended with its thread: its note dropped, the later close not noted.
  expect(out).toEqual({ watched: true, dropped: true, later: false });
});
