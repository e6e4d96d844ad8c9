/**
 * Rows that share a process share its working directory, umask and
 * credentials no more (harness/process-state.ts): through `fdbridge run`
 * (row processes), a row changes a generated set of them (chdir into its
 * own temporary directory, which the harness removes as it ends; umask
 * 0777; setgid and setuid to nobody, when this test runs as root, which
 * cannot be undone), in run() or in a timer it waits for; the rows after it
 * (generated: 1-3, on direct or child, generated order) check they see the
 * process as the run began: each passes. The changer's notes name exactly
 * what it changed, put back, or not (credentials, and a working directory
 * nobody cannot enter), its process then running no other row.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';

import type { ResultsFile } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

const root = process.getuid?.() === 0;
const CHANGES = ['chdir', 'umask', ...(root ? (['setuid'] as const) : [])] as const;
type Change = 'chdir' | 'umask' | 'setuid';
const CHANGE_CODE: Record<Change, string> = {
  chdir: 'process.chdir(ctx.tmpdir);',
  umask: 'process.umask(0o777);',
  setuid: 'process.setgid(65534); process.setuid(65534);',
};

test('a row that changes the working directory, umask or credentials: the rows after it see the process as the run began', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-state-'));
  const umask = process.umask(0o022);
  process.umask(umask);
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.subarray([...CHANGES] as Change[], { minLength: 1 }),
        fc.boolean(),
        fc.array(fc.constantFrom('direct', 'child'), { minLength: 1, maxLength: 3 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        async (changes, inTimer, innocents, seed) => {
          const scenarios = join(dir, `scenarios-${++runs}`);
          mkdirSync(scenarios);
          const code = changes.map((c) => CHANGE_CODE[c]).join(' ');
          writeFileSync(
            join(scenarios, 'changes.scenario.js'),
            `module.exports = { name: 'changes', description: 'changes process-wide state', transports: ['direct'], async run(ctx) {
  ${inTimer ? `await new Promise((resolve) => setTimeout(() => { ${code} resolve(); }, 1));` : code}
} };\n`,
          );
          innocents.forEach((transport, i) =>
            writeFileSync(
              join(scenarios, `innocent-${i}.scenario.js`),
              `module.exports = { name: 'innocent-${i}', description: 'sees the process as the run began', transports: [${JSON.stringify(transport)}], async run() {
  const seen = { cwd: process.cwd(), umask: process.umask(0o022), uid: process.getuid(), gid: process.getgid() };
  process.umask(seen.umask);
  const want = ${JSON.stringify({ cwd: dir, umask, uid: process.getuid?.(), gid: process.getgid?.() })};
  if (JSON.stringify(seen) !== JSON.stringify(want)) throw new Error('saw ' + JSON.stringify(seen));
} };\n`,
            ),
          );
          const json = join(scenarios, 'results.json');
          await runCli(['run', '--seed', String(seed), '--settle', '50', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir });
          const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
          for (const r of results.filter((x) => x.scenario !== 'changes')) expect([r.scenario, r.status, r.error]).toEqual([r.scenario, 'pass', undefined]);
          const changer = results.find((x) => x.scenario === 'changes');
          const notes = (changer?.notes ?? []).filter((n) => n.startsWith("changed the process's"));
          // As nobody, the process cannot enter this test's directory (0700, root's) again: that is not put back either.
          const putBack = changes.filter((c) => c === 'umask' || (c === 'chdir' && !changes.includes('setuid')));
          const expected = [
            ...(putBack.length > 0
              ? [expect.stringMatching(new RegExp(`^changed the process's ${putBack.map((c) => (c === 'chdir' ? 'working directory \\(was [^)]*\\)' : 'umask \\(was [0-7]{4}, now 0777\\)')).join(', ')}, put back as the row ended`))]
              : []),
            ...(changes.includes('setuid')
              ? [
                  expect.stringMatching(
                    new RegExp(
                      "^changed the process's credentials \\(were uid 0, .*now uid 65534, euid 65534, gid 65534, egid 65534, groups \\[65534\\]\\)" +
                        `${changes.includes('chdir') ? ', working directory \\(was [^)]*\\), which it cannot enter again \\(EACCES\\)' : ''}, which cannot be put back \\(the privilege to is gone\\): a row process runs no other row after it`,
                    ),
                  ),
                ]
              : []),
          ];
          expect(notes).toEqual(expected);
        },
      ),
      { numRuns: 8, endOnFailure: true, examples: [[['chdir'], false, ['direct'], 1], [['umask'], true, ['child', 'direct'], 2], ...(root ? [[['setuid'], false, ['direct', 'direct'], 3] as [Change[], boolean, string[], number]] : [])] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
