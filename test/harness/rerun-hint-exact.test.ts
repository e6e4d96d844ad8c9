/**
 * `fdbridge run` ends, when rows failed, with one command per failed row
 * that reruns it. Pasted into a shell, such a command must select that row
 * and no other: `--scenario` is a pattern (a substring, a glob of `*` and
 * `?`, alternatives split at commas), so a failed scenario named `a`
 * beside a passing `ab`, or one named `a*` or `a,b`, reran other rows too
 * (or none). The command names the scenario with `--scenario-name`, which
 * takes the name as it is, and carries the options that selected the row
 * (here --profile and --scenarios).
 *
 * Generated: 2 to 4 scenarios with names of `a`, `b`, `*`, `?`, `,` and `-`
 * (so names are often substrings of one another, or globs that match one
 * another), each failing or passing; a few of them tagged `fault` and run
 * under --profile all. Each printed command is run by `sh` with `--list`
 * added (which prints the rows it selects and runs nothing): it must list
 * exactly its failed row.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

import fc from 'fast-check';

import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

const NAME_PARTS = ['a', 'b', '*', '?', ',', '-'];

interface Drawn {
  name: string;
  fails: boolean;
  fault: boolean;
}

const scenarioSet = fc
  .uniqueArray(
    fc.record({
      name: fc.array(fc.constantFrom(...NAME_PARTS), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('')),
      fails: fc.boolean(),
      fault: fc.boolean(),
    }),
    { minLength: 2, maxLength: 4, selector: (s) => s.name },
  )
  .filter((set) => set.some((s) => s.fails));

/** The rows the printed command `line` selects, run by `sh` in the directory the run was in, with --list added. */
function listedBy(line: string, cwd: string, scenarios: string): string[] {
  const out = execFileSync('sh', ['-c', `${line} --list`], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}`, FDBRIDGE_SCENARIOS_DIR: scenarios },
  });
  return out.split('\n').filter((l) => l !== '');
}

test('generated scenario names: each printed rerun command selects exactly its failed row', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdb-rerun-exact-'));
  try {
    await fc.assert(
      fc.asyncProperty(scenarioSet, fc.boolean(), async (set: Drawn[], ownDir) => {
        const scenarios = join(dir, 'scenarios');
        rmSync(scenarios, { recursive: true, force: true });
        mkdirSync(scenarios);
        set.forEach((s, i) => {
          const run = s.fails ? "run() { throw new Error('fails'); }" : 'run() {}';
          writeFileSync(
            join(scenarios, `s${i}.scenario.js`),
            `module.exports = { name: ${JSON.stringify(s.name)}, description: 'x', transports: ['direct'], tags: ${s.fault ? "['fault']" : '[]'}, ${run} };\n`,
          );
        });
        // The scenarios given by --scenarios (the command must carry it) or by $FDBRIDGE_SCENARIOS_DIR (the same shell has it).
        const where = ownDir ? ['--scenarios', scenarios] : [];
        const r = await runCli(['run', '--profile', 'all', '--transport', 'direct', '--settle', '50', ...where], {
          env: { FDBRIDGE_SCENARIOS_DIR: ownDir ? join(dir, 'elsewhere') : scenarios },
          cwd: dir,
        });
        expect(r.code).toBe(1);
        const lines = (r.stdout.split('to rerun a failed row:\n')[1] ?? '').split('\n').filter((l) => l.startsWith('  '));
        const failed = set.filter((s) => s.fails).map((s) => s.name);
        expect(lines).toHaveLength(failed.length);
        const selected = lines.map((line) => listedBy(line.trim(), dir, ownDir ? join(dir, 'elsewhere') : scenarios));
        expect(selected.map((rows) => rows.join('\n')).sort()).toEqual(failed.map((name) => `${name} direct`).sort());
      }),
      { numRuns: 8, endOnFailure: true, examples: [[[{ name: 'a', fails: true, fault: false }, { name: 'ab', fails: false, fault: false }], false], [[{ name: 'a*', fails: true, fault: true }, { name: 'a,b', fails: true, fault: false }, { name: 'ab', fails: false, fault: false }], true]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, scaled(240_000));
