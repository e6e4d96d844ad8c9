/**
 * A row process that retires after a row (the row gave up the credentials
 * the session began with: harness/process-state.ts) still charges that row
 * with what its code left running did until the process ended, as a
 * process's last row is (RowSession.settle, 'settled'). Through `fdbridge
 * run` (row processes), as root: the row sets gid and uid to nobody, and
 * leaves code that runs as its process sends the row's result (a wrapped
 * process.send): it opens a generated number of fds (kept) and sets a
 * variable in process.env. The row's notes name the change put back
 * before its process ended and its leaks list each fd; the rows after it
 * (generated: 1-2, on direct or child) pass in a new process.
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

(root ? test : test.skip)("a row whose process retires after it: what its code left running did as the process ended is charged to it", async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-retire-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.constantFrom('direct', 'child'), { minLength: 1, maxLength: 2 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        async (fds, innocents, seed) => {
          const scenarios = join(dir, `scenarios-${++runs}`);
          mkdirSync(scenarios);
          writeFileSync(
            join(scenarios, 'retires.scenario.js'),
            `const fs = require('node:fs');
const kept = [];
module.exports = { name: 'retires', description: 'gives up root; leaves code that runs as the process sends its result', transports: ['direct'], async run() {
  const send = process.send;
  process.send = function (m, ...rest) {
    if (m && m.type === 'result') {
      for (let i = 0; i < ${fds}; i++) kept.push(fs.openSync('/dev/null', 'r'));
      process.env.FDB_RETIRE_LATE = '1';
    }
    return send.call(this, m, ...rest);
  };
  process.setgid(65534);
  process.setuid(65534);
} };\n`,
          );
          innocents.forEach((transport, i) =>
            writeFileSync(
              join(scenarios, `innocent-${i}.scenario.js`),
              `module.exports = { name: 'innocent-${i}', description: 'runs in a new process', transports: [${JSON.stringify(transport)}], async run() {
  if (process.getuid() !== 0 || process.env.FDB_RETIRE_LATE !== undefined) throw new Error('uid ' + process.getuid() + ', FDB_RETIRE_LATE ' + process.env.FDB_RETIRE_LATE);
} };\n`,
            ),
          );
          const json = join(scenarios, 'results.json');
          await runCli(['run', '--seed', String(seed), '--settle', '50', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir }).catch(() => undefined);
          const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
          for (const r of results.filter((x) => x.scenario !== 'retires')) expect([r.scenario, r.status, r.error]).toEqual([r.scenario, 'pass', undefined]);
          const retires = results.find((x) => x.scenario === 'retires');
          expect((retires?.notes ?? []).filter((n) => n.startsWith('changed process.env'))).toEqual([
            expect.stringMatching(/^changed process\.env after the row had ended \(code it left running\), put back before its process ended: .*FDB_RETIRE_LATE/),
          ]);
          expect((retires?.leaks ?? []).filter((l) => l.target === '/dev/null')).toHaveLength(fds);
        },
      ),
      { numRuns: 3, endOnFailure: true, examples: [[1, ['direct'], 1]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
