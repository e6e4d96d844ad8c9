/**
 * A row process (harness/run-supervisor.ts) that keeps answering pings but
 * never reports its row must not hold the run for ever:
 * - a scenario that leaves its process at its fd limit makes the harness's
 *   own steps after the scenario fail (the leak oracle's look at
 *   /proc/self/fd, the removal of the row's directory: EMFILE); the row
 *   still ends, failed, with that reason (a CI container's low ulimit -n
 *   hung `fdbridge run` so);
 * - a row process that has lost its row (here its results never leave it)
 *   is killed once the time limit of its last step is stalledMs behind,
 *   and the row fails saying so, not as a blocked scenario.
 * Each run is runScenarios in this process, with its rows in a row process.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { runScenarios } from '../../harness/runner';
import { distPath } from '../../src/paths';

const INDEX = JSON.stringify(distPath('src/index.js'));

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-run-stalled-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A scenario directory with one `<name>.scenario.js` per entry (the body of its run()). */
function scenarios(name: string, runs: Record<string, string>): string {
  const d = join(dir, name);
  mkdirSync(d);
  for (const [scenario, run] of Object.entries(runs)) {
    writeFileSync(
      join(d, `${scenario}.scenario.js`),
      `const fs = require('node:fs');
const fdbridge = require(${INDEX});
module.exports = { name: ${JSON.stringify(scenario)}, description: 'a test scenario', transports: ['direct'], async run(ctx) { ${run} } };
`,
    );
  }
  return d;
}

test('a scenario that leaves its row process at its fd limit fails its row with EMFILE; the run ends', async () => {
  const scenariosDir = scenarios('at-limit', {
    // The soft limit at the lowest free number (the one an open takes): no fd can be opened from now on.
    // A file in the row's directory: removing it then needs a directory fd too.
    'at-the-fd-limit': `
      fs.writeFileSync(ctx.tmpdir + '/a-file', '');
      const free = fs.openSync('/dev/null');
      fs.closeSync(free);
      fdbridge.setFdLimit(free);`,
  });
  const { results: { results } } = await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 20_000, scenariosDir, transports: ['direct'] });
  expect(results.map((r) => ({ scenario: r.scenario, status: r.status, emfile: /EMFILE/.test(r.error ?? '') ? 'EMFILE' : r.error, rowProcess: r.rowProcess }))).toEqual([
    { scenario: 'at-the-fd-limit', status: 'fail', emfile: 'EMFILE', rowProcess: undefined },
  ]);
}, 60_000);

test('a row process that answers but never reports its row is killed stalledMs after its last step\'s limit, and the row says why', async () => {
  const scenariosDir = scenarios('lost', {
    // The row's result never reaches the run; everything else (pongs, its steps) does.
    'results-lost': `
      const send = process.send.bind(process);
      process.send = (m, ...rest) => (m && m.type === 'result' ? true : send(m, ...rest));`,
    'after-it': '',
  });
  const { results: { results } } = await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 20_000, stalledMs: 1000, scenariosDir, transports: ['direct'] });
  expect(
    results.map((r) => ({
      scenario: r.scenario,
      status: r.status,
      lost: /the harness lost track of the row/.test(r.error ?? '') ? 'lost track' : r.error,
      ended: r.rowProcess?.ended,
    })),
  ).toEqual([
    // planRows orders rows by the seed: find each by name.
    ...results.map((r) =>
      r.scenario === 'results-lost'
        ? { scenario: 'results-lost', status: 'fail', lost: 'lost track', ended: 'killed' }
        : { scenario: 'after-it', status: 'pass', lost: undefined, ended: undefined },
    ),
  ]);
  expect(results.map((r) => r.scenario).sort()).toEqual(['after-it', 'results-lost']);
}, 60_000);
