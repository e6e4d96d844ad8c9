/**
 * An fs.promises FileHandle a scenario drops unclosed is a leak of its file,
 * named as a FileHandle's, whatever rows ran before it and whenever the
 * garbage collector runs (harness/file-handles.ts holds it); one closed is
 * nothing. Generated over the seed (the row order) and the rows around it
 * (some allocating enough to start a collection).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { runScenarios } from '../../harness/runner';
import { openFdTable } from '../../src/fd';
import { rowsTestLimit, scaled } from '../util/time-scale';

/** Each row's time limit (a hang guard: no row here waits on anything that does not come). */
const ROW_MS = 30_000;

let dir: string;
let dirs = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-file-handle-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const KINDS = ['allocate', 'close-file-handle', 'idle'] as const;
const BODY: Record<(typeof KINDS)[number], string> = {
  allocate: 'let a = []; for (let i = 0; i < 1e6; i++) a.push({ i }); a = null;',
  'close-file-handle': "const h = await require('node:fs/promises').open(__filename, 'r'); await h.close();",
  idle: '',
};

test('a dropped FileHandle fails its row as a leak of its file, in any row order; a closed one and the rows around pass', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom(...KINDS), { maxLength: 3 }), fc.integer({ min: 1, max: 1000 }), async (others, seed) => {
      const d = join(dir, `s${++dirs}`);
      mkdirSync(d);
      const file = join(d, 'dropped');
      writeFileSync(file, 'x');
      writeFileSync(
        join(d, 'drop.scenario.js'),
        `module.exports = { name: 'drop', description: 'x', transports: ['direct'], async run() { await require('node:fs/promises').open(${JSON.stringify(file)}, 'r'); } };\n`,
      );
      others.forEach((kind, i) => {
        writeFileSync(join(d, `other-${i}.scenario.js`), `module.exports = { name: 'other-${i}-${kind}', description: 'x', transports: ['direct'], async run() { ${BODY[kind]} } };\n`);
      });
      const { results } = await runScenarios({ bench: false, repeat: 1, seed, settleMs: 200, timeoutMs: scaled(ROW_MS), scenariosDir: d, transports: ['direct'] });
      for (const row of results.results) {
        if (row.scenario !== 'drop') {
          expect({ scenario: row.scenario, status: row.status, leaks: row.leaks }).toEqual({ scenario: row.scenario, status: 'pass', leaks: [] });
          continue;
        }
        expect(row.status).toBe('fail');
        expect(row.leaks.map((l) => ({ role: l.role, target: l.target, openedBy: l.openedBy }))).toEqual([
          { role: 'client', target: file, openedBy: expect.stringMatching(/^an fs\.promises FileHandle never closed/) },
        ]);
      }
    }),
    { numRuns: 8, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
  // drop, and up to 3 others.
}, rowsTestLimit({ rowMs: ROW_MS, rows: 4, runs: 8 }));
