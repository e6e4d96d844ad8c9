/**
 * A row process in which process.env cannot be put back as a row begins
 * (code the row before left running made it read-only) runs no row more:
 * the row is run in a new process. Through `fdbridge run` (row processes):
 * a row wraps process.send so that, as its process sends the row's result,
 * process.env becomes a frozen, read-only {}; 1-3 later rows (generated
 * transports, direct or child; the seed generated among those running the
 * changer first) check process.env is the run's. Each passes.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';

import { inRunOrder } from '../../harness/runner';
import type { ResultsFile } from '../../harness/types';
import type { TransportName as Transport } from '../../src/transports';
import { openFdTable } from '../../src/fd';
import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

/** The `skip`-th seed from `from` running `changer` first. */
function seedFor(transports: Transport[], from: number): number {
  const rows = [{ scenario: 'changer', transport: 'direct' as Transport, iteration: 1 }, ...transports.map((t, i) => ({ scenario: `innocent-${i}`, transport: t, iteration: 1 }))];
  for (let seed = from; ; seed++) if (inRunOrder(rows, seed)[0]?.scenario === 'changer') return seed;
}

test('process.env that cannot be put back as a row begins: the row runs in a new process, and passes', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-env-lost-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom<Transport>('direct', 'child'), { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 1_000_000 }), async (innocents, from) => {
        const scenarios = join(dir, `scenarios-${++runs}`);
        mkdirSync(scenarios);
        writeFileSync(
          join(scenarios, 'changer.scenario.js'),
          `module.exports = { name: 'changer', description: 'leaves process.env read-only', transports: ['direct'], async run() {
  const send = process.send;
  process.send = function (m, ...rest) {
    if (m && m.type === 'result') Object.defineProperty(process, 'env', { value: Object.freeze({}), writable: false, configurable: false });
    return send.call(this, m, ...rest);
  };
} };\n`,
        );
        innocents.forEach((transport, i) =>
          writeFileSync(
            join(scenarios, `innocent-${i}.scenario.js`),
            `module.exports = { name: 'innocent-${i}', description: 'sees the process.env of the run', transports: [${JSON.stringify(transport)}], async run() {
  if (process.env.PATH !== ${JSON.stringify(process.env['PATH'])}) throw new Error('process.env is ' + JSON.stringify(process.env));
} };\n`,
          ),
        );
        const json = join(scenarios, 'results.json');
        const seed = seedFor(innocents, from);
        await runCli(['run', '--seed', String(seed), '--settle', '50', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir }).catch(() => undefined);
        const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
        expect(results.map((r) => [r.scenario, r.status, r.error]).sort()).toEqual([['changer', 'pass', undefined], ...innocents.map((_, i) => [`innocent-${i}`, 'pass', undefined])].sort());
        const changer = results.find((r) => r.scenario === 'changer');
        expect((changer?.notes ?? []).filter((n) => n.startsWith('changed process.env'))).toEqual([expect.stringMatching(/^changed process\.env, which cannot be put back \(TypeError: /)]);
      }),
      { numRuns: 5, endOnFailure: true, examples: [[['direct'], 1]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
