/**
 * A row's working directory, umask and credentials are put back before the
 * leak oracle's look after it (harness/runner.ts), not only as it ends:
 * the look reads the run's helper daemon's fds (root's) as the session's
 * user. Through `fdbridge run`, as root: a row changes a generated nonempty
 * set of {seteuid nobody, setegid nobody, umask 0777} (all of them
 * recoverable: the real uid stays root) on a generated transport; it
 * passes, with one note naming what was put back. A row that gives up root
 * (setgid, setuid) gets its "cannot be put back" note once, though the
 * process state is put back twice.
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
const CHANGES = ['setegid', 'seteuid', 'umask'] as const;
type Change = (typeof CHANGES)[number];
/** In this order: setegid needs the effective uid still root. */
const CHANGE_CODE: Record<Change, string> = {
  setegid: 'process.setegid(65534);',
  seteuid: 'process.seteuid(65534);',
  umask: 'process.umask(0o777);',
};

(root ? test : test.skip)('a row that switches its effective ids: the look after it runs as the session began, and passes', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-state-look-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.subarray([...CHANGES], { minLength: 1 }),
        fc.constantFrom('direct', 'child', 'helper'),
        fc.boolean(),
        fc.integer({ min: 1, max: 1_000_000 }),
        async (changes, transport, givesUp, seed) => {
          const scenarios = join(dir, `scenarios-${++runs}`);
          mkdirSync(scenarios);
          writeFileSync(
            join(scenarios, 'switches.scenario.js'),
            `module.exports = { name: 'switches', description: 'switches effective ids', transports: [${JSON.stringify(transport)}], async run() {
  ${changes.map((c) => CHANGE_CODE[c]).join(' ')}
} };\n`,
          );
          if (givesUp) {
            writeFileSync(
              join(scenarios, 'gives-up.scenario.js'),
              `module.exports = { name: 'gives-up', description: 'gives up root', transports: ['direct'], async run() { process.setgid(65534); process.setuid(65534); } };\n`,
            );
          }
          const json = join(scenarios, 'results.json');
          await runCli(['run', '--seed', String(seed), '--settle', '50', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir }).catch(() => undefined);
          const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
          const switches = results.find((x) => x.scenario === 'switches');
          expect([switches?.status, switches?.error]).toEqual(['pass', undefined]);
          const what = [
            ...(changes.some((c) => c !== 'umask') ? ['credentials \\(were uid 0, euid 0, [^)]*, now uid 0, euid (0|65534), [^)]*\\)'] : []),
            ...(changes.includes('umask') ? ['umask \\(was [0-7]{4}, now 0777\\)'] : []),
          ];
          expect((switches?.notes ?? []).filter((n) => n.startsWith("changed the process's"))).toEqual([
            expect.stringMatching(new RegExp(`^changed the process's ${what.join(', ')}, put back as the row ended`)),
          ]);
          if (givesUp) {
            const notes = (results.find((x) => x.scenario === 'gives-up')?.notes ?? []).filter((n) => n.startsWith("changed the process's"));
            expect(notes).toEqual([expect.stringMatching(/^changed the process's credentials \(were uid 0, .*now uid 65534, .*\), which cannot be put back/)]);
          }
        },
      ),
      { numRuns: 8, endOnFailure: true, examples: [[['seteuid'], 'direct', false, 1], [['setegid', 'seteuid', 'umask'], 'helper', true, 2]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
