/**
 * A scenario's run() may end with any value at all: `throw undefined`, a
 * bare `Promise.reject()` (a `reject()` called with nothing, as callback
 * wrappers do), null, a string, a symbol, an object with no prototype, one
 * whose toString or name throws, a revoked proxy. Each such row must FAIL
 * (the scenario did not complete), be reported with the rest, and the run
 * must go on to its other rows and exit 1, as for any failed row. A thrown
 * value must never pass a row nor end the whole run; a 'leak' scenario that
 * leaked its file and then rejected with nothing did not complete either.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultsFile } from '../../harness/types';
import { runCli } from '../util/processes';

/** What each scenario's run() ends with, as the source of an async function body. */
const ENDINGS: Record<string, string> = {
  'throws-undefined': 'throw undefined;',
  'rejects-with-nothing': 'return Promise.reject();',
  'throws-null': 'throw null;',
  'throws-zero': 'throw 0;',
  'throws-empty-string': "throw '';",
  'throws-false': 'throw false;',
  'throws-symbol': "throw Symbol('thrown');",
  'throws-null-prototype': 'throw Object.create(null);',
  'throws-unprintable': "throw { toString() { throw new Error('no text'); } };",
  'throws-error-without-name': "throw Object.defineProperty(new Error('x'), 'name', { get() { throw new Error('no name'); } });",
  'throws-revoked-proxy': 'const p = Proxy.revocable({}, {}); p.revoke(); throw p.proxy;',
};

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-thrown-'));
  for (const [name, body] of Object.entries(ENDINGS)) {
    writeFileSync(
      join(dir, `${name}.scenario.js`),
      `module.exports = { name: ${JSON.stringify(name)}, description: 'run() ends with a non-Error', transports: ['direct'], async run() { ${body} } };\n`,
    );
  }
  // A 'leak' scenario must complete: one that leaks its file and then rejects with nothing did not.
  writeFileSync(
    join(dir, 'leaks-then-rejects-with-nothing.scenario.js'),
    "const { openSync } = require('node:fs'); const { join } = require('node:path');\n" +
      "module.exports = { name: 'leaks-then-rejects-with-nothing', description: 'leaks, then reject()', transports: ['direct'], expect: 'leak',\n" +
      "  failure: { leaks: [{ target: /kept-open$/ }] }, async run(ctx) { openSync(join(ctx.tmpdir, 'kept-open'), 'w'); return Promise.reject(); } };\n",
  );
  // A scenario that passes, so that the run is seen going on past the others.
  writeFileSync(join(dir, 'zz-passes.scenario.js'), "module.exports = { name: 'zz-passes', description: 'completes', transports: ['direct'], async run() {} };\n");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('every row whose run() ends with a non-Error value fails, the run reports every row and exits 1', async () => {
  const json = join(dir, 'results.json');
  const r = await runCli(['run', '--scenarios', join(dir), '--settle', '200', '--json', json]);
  let results: ResultsFile | undefined;
  try {
    results = JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  } catch {
    results = undefined;
  }
  const statuses = Object.fromEntries((results?.results ?? []).map((row) => [row.scenario, row.status]));
  const expected = Object.fromEntries([...Object.keys(ENDINGS).map((name) => [name, 'fail']), ['leaks-then-rejects-with-nothing', 'fail'], ['zz-passes', 'pass']]);
  expect({ code: r.code, statuses, stderr: r.stderr.trim() }).toEqual({ code: 1, statuses: expected, stderr: '' });
});
