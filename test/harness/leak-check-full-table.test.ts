/**
 * A leak that takes every free fd number (the code under test leaks until
 * EMFILE) is the leak a check must report best: the fd table is read then
 * with no number free to open /proc/<pid>/fd at (native FdList reads it on
 * a thread whose table is its own). Run in a fresh process whose soft fd
 * limit is lowered to a few numbers above what it has open: the check's
 * baseline, taken before the code runs, holds the baseline's files on a
 * thread whose own table needs one number more than the process has fds
 * (a snapshot of a full table throws EMFILE: leak-check-watch.test.ts).
 */
import { execFileSync } from 'node:child_process';

import fc from 'fast-check';

import { distPath } from '../../src/paths';

interface Seen {
  code?: string;
  leaked: number[];
  reported: number[];
  targets: string[];
  other: boolean;
}

/** Runs the check in a fresh process with `headroom` numbers free under its soft limit. */
function leakUntilFull(headroom: number): Seen {
  const script = `
    const fs = require('node:fs');
    const cp = require('node:child_process');
    const fd = require(${JSON.stringify(distPath('src/fd.js'))});
    const lc = require(${JSON.stringify(distPath('src/leak-check.js'))});
    (async () => {
      const child = cp.spawn('sleep', ['600'], { stdio: 'ignore' });
      // Its table once it runs sleep: before its exec it is a copy of ours, with fds the exec closes.
      await new Promise((resolve) => child.once('spawn', resolve));
      while (!fs.readlinkSync('/proc/' + child.pid + '/exe').endsWith('/sleep')) await new Promise((resolve) => setTimeout(resolve, 5));
      const childTable = fd.openFdTable(child.pid);
      const [soft, hard] = fd.fdLimit();
      fd.setFdLimit(fd.openFdTable().size + ${headroom}, hard);
      const leaked = [];
      let code;
      let other = false;
      try {
        const report = await lc.checkFdLeaks(() => {
          for (;;) {
            try {
              leaked.push(fs.openSync('/dev/null', 'r'));
            } catch (err) {
              code = err.code;
              return;
            }
          }
        });
        // Another process's table, read with this one full.
        const again = fd.openFdTable(child.pid);
        // Its stdio ('ignore': /dev/null), as read before: whatever else it inherited is not this test's.
        other = [0, 1, 2].every((n) => again.get(n) === '/dev/null' && childTable.get(n) === '/dev/null');
        return { code, leaked, reported: report.leaks.map((l) => l.fd), targets: [...new Set(report.leaks.map((l) => l.target))], other };
      } finally {
        for (const n of leaked) fs.closeSync(n);
        fd.setFdLimit(soft, hard);
        child.kill('SIGKILL');
      }
    })().then((out) => process.stdout.write(JSON.stringify(out)), (err) => { process.stdout.write(JSON.stringify({ code: err.code, message: String(err.message) })); });
  `;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as Seen;
}

test('generated: code that leaks until no fd number is free has every leaked fd reported, and another process\'s table is read meanwhile', () => {
  fc.assert(
    fc.property(fc.integer({ min: 4, max: 40 }), (headroom) => {
      const seen = leakUntilFull(headroom);
      expect(seen.code).toBe('EMFILE');
      expect(seen.leaked.length).toBeGreaterThan(0);
      expect([...seen.reported].sort((a, b) => a - b)).toEqual([...seen.leaked].sort((a, b) => a - b));
      expect(seen.targets).toEqual(['/dev/null']);
      expect(seen.other).toBe(true);
    }),
    { numRuns: 6, examples: [[4]] },
  );
});

// A table read with few numbers free (the walk's directories open, but not
// every fdinfo file after them) still has each fd's file: a number closed
// and opened again on another file of the same name is told from the one
// it held (the file, not the name, differs).
test('generated: with 0 to 4 numbers free, a number reopened on another file of the same name reads as closed and opened', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 4 }), (free) => {
      const script = `
        const fs = require('node:fs');
        const path = require('node:path');
        const os = require('node:os');
        const fd = require(${JSON.stringify(distPath('src/fd.js'))});
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdb-full-reopen-'));
        const name = path.join(dir, 'f');
        fs.writeFileSync(name, 'a');
        const n = fs.openSync(name, 'r');
        const before = fd.openFdTable();
        fs.closeSync(n);
        // The first file lives on under another name: the new one cannot take its inode number.
        fs.renameSync(name, name + '.old');
        fs.writeFileSync(name, 'b');
        const again = fs.openSync(name, 'r');
        const [soft, hard] = fd.fdLimit();
        const fills = [];
        try {
          for (;;) fills.push(fs.openSync('/dev/null', 'r'));
        } catch (err) {
          if (err.code !== 'EMFILE') throw err;
        }
        for (let i = 0; i < ${free} && fills.length > 0; i++) fs.closeSync(fills.pop());
        const diff = fd.diffFdTables(before, fd.openFdTable());
        for (const f of [...fills, again]) fs.closeSync(f);
        fs.rmSync(dir, { recursive: true, force: true });
        process.stdout.write(JSON.stringify({ same: again === n, opened: diff.opened.filter((e) => e.fd === n).length, closed: diff.closed.filter((e) => e.fd === n).length }));
      `;
      const out = JSON.parse(execFileSync('prlimit', ['--nofile=256:256', process.execPath, '-e', script], { encoding: 'utf8' })) as { same: boolean; opened: number; closed: number };
      expect(out).toEqual({ same: true, opened: 1, closed: 1 });
    }),
    { numRuns: 5, examples: [[2]] },
  );
});
