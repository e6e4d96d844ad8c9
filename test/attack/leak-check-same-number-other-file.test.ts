/**
 * The leak checker must see an fd that was open before the check, closed by
 * the code under test, and whose number the code then reopened for another
 * file and left open: that is a wrong-fd close (the caller's file is gone)
 * and a leak (an fd opened during the check, still open). The kernel gives
 * the lowest free number, so the new file lands exactly where the closed
 * one was; when the two files' names read the same in /proc/self/fd (two
 * memfds of one name, a path whose file was replaced), a table compared by
 * its targets alone looks unchanged although the number names another file
 * (another st_dev/st_ino) than before.
 *
 * Deterministic: the reopened fd takes the number just closed (the lowest
 * free one; nothing else in this thread opens an fd in between).
 */
import { execFile } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DIST_SRC } from '../util/nobody';
import { checkFdLeaks, expectNoFdLeaks, fdIdentity, FdLeakError, makeMemfd } from '../../src';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-same-number-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A file the caller holds open before the check, and code under test that closes it and opens another file of the same name. */
const CASES: Array<[string, () => { held: number; run: () => number }]> = [
  [
    'a memfd replaced by another memfd of the same name',
    () => {
      const held = makeMemfd('buffer');
      return { held, run: () => (closeSync(held), makeMemfd('buffer')) };
    },
  ],
  [
    'a file replaced at its path (rename over it) by another file, opened again',
    () => {
      const path = join(dir, 'state.json');
      writeFileSync(path, 'old');
      const held = openSync(path, 'r');
      return {
        held,
        run: () => {
          // The new file is made while the held one is open, so it cannot reuse its inode.
          writeFileSync(`${path}.tmp`, 'new');
          closeSync(held);
          renameSync(`${path}.tmp`, path);
          return openSync(path, 'r');
        },
      };
    },
  ],
];

describe.each(CASES)('the caller\'s fd closed by the code under test and its number reopened for another file: %s', (_name, make) => {
  test('checkFdLeaks reports it (closed or leaked), not a clean run', async () => {
    const { held, run } = make();
    const heldId = fdIdentity(held);
    let reopened = -1;
    try {
      const report = await checkFdLeaks(() => {
        reopened = run();
      }, { settleMs: 0 });
      const reopenedId = fdIdentity(reopened);
      // The setting: the same number, another file.
      expect({ sameNumber: reopened === held, sameFile: reopenedId.dev === heldId.dev && reopenedId.ino === heldId.ino }).toEqual({ sameNumber: true, sameFile: false });
      // Expected: the number is listed as closed (the caller's file) and/or
      // leaked (the file opened during the check, still open). Fails with
      // 0: leaks [] and closed [], a clean report.
      expect(report.leaks.length + report.closed.length).toBeGreaterThan(0);
    } finally {
      if (reopened >= 0) closeSync(reopened);
    }
  });

  test('expectNoFdLeaks throws an FdLeakError', async () => {
    const { run } = make();
    let reopened = -1;
    try {
      const outcome = await expectNoFdLeaks(() => {
        reopened = run();
      }, { settleMs: 0 }).then(
        () => 'resolved',
        (err: unknown) => (err instanceof FdLeakError ? 'FdLeakError' : String(err)),
      );
      // Fails with 'resolved'.
      expect(outcome).toBe('FdLeakError');
    } finally {
      if (reopened >= 0) closeSync(reopened);
    }
  });
});

/**
 * The harness's leak oracle, the same way: a scenario module opens a memfd
 * as it loads (before the row's snapshot); the row closes it and leaves a
 * memfd of the same name at its number.
 */
const SCENARIO = `
import { closeSync } from 'node:fs';
import { makeMemfd } from ${JSON.stringify(DIST_SRC)};
import { defineScenario } from ${JSON.stringify(join(DIST_SRC, '../harness/scenario'))};

let held = makeMemfd('buffer'); // opened as the module loads, before the row

export default defineScenario({
  name: 'close-held-reopen-same-name',
  description: 'closes a memfd the row process held before the row and leaves another of the same name at its number',
  async run() {
    closeSync(held);
    held = makeMemfd('buffer');
  },
});
`;

test('fdbridge run fails a row that closed an fd held before it and left another file at its number', async () => {
  const scenarios = join(dir, 'scenarios');
  mkdirSync(scenarios);
  writeFileSync(join(scenarios, 'close-held-reopen-same-name.scenario.ts'), SCENARIO);
  const cli = join(DIST_SRC, '../harness/cli.js');
  const run = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [cli, 'run', '--scenarios', scenarios, '--transport', 'direct'], (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
  // Expected: exit status 1, the row FAIL (a wrong-fd close and a leak).
  // Fails with status 0: '[1/1] pass  close-held-reopen-same-name  direct ... leaks 0'.
  expect({ status: run.status, verdict: /\] (\S+)\s+close-held-reopen-same-name/.exec(run.stdout)?.[1] }).toEqual({ status: 1, verdict: 'FAIL' });
});
