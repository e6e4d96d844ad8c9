/**
 * The faults profile, run as a user runs it (`fdbridge run --profile faults
 * --json FILE` in a subprocess, on the built scenarios): every row passes,
 * every fault injected was survived, and the totals record no leaked fd and
 * no lost reply. How long rows take is not asserted here: a row that hangs
 * fails by the runner's own typed deadline (--timeout).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultsFile } from '../../harness/types';
import { CLI } from '../util/processes';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-faults-profile-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('fdbridge run --profile faults: every row passes, faults survived, nothing leaked or lost', async () => {
  const json = join(dir, 'faults.json');
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['FDBRIDGE_SCENARIOS_DIR'];
  delete env['FDBRIDGE_FAILPOINT'];
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    // The only deadline is the runner's own, typed one (RowTimeout, --timeout): 120 s a row, where the
    // slowest row (reject-hostile-client on child: a process per bad request) takes about 15 s on an
    // idle 2-core machine and 40 s at load average 20. No deadline on the run as a whole.
    execFile(process.execPath, [CLI, 'run', '--profile', 'faults', '--timeout', '120000', '--json', json], { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
  const results = JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  const failed = results.results.filter((x) => x.status !== 'pass').map((x) => `${x.scenario}/${x.transport}: ${x.status} ${x.error ?? ''}`);
  expect({ failed, code: r.code }).toEqual({ failed: [], code: 0 });
  expect(results.options.profile).toBe('faults');
  // The fault scenarios of this file's concern, on every transport they name.
  const rows = new Set(results.results.map((x) => `${x.scenario}/${x.transport}`));
  for (const t of ['child', 'pidfd', 'helper']) {
    for (const s of ['kill-peer-after-receive', 'kill-peer-mid-batch', 'kill-peer-during-close', 'exhaust-receiver-fd-limit']) expect(rows).toContain(`${s}/${t}`);
  }
  expect(rows).toContain('kill-peer-before-request/helper');
  expect(rows).toContain('restart-helper-with-clients/helper');
  // The remote transport's channel lost mid-transfer (its via process killed).
  expect(rows).toContain('kill-via-mid-transfer/remote');
  const totals = results.totals ?? {};
  expect(totals['faultsInjected']).toBeGreaterThanOrEqual(20);
  expect(totals['faultsSurvived']).toBe(totals['faultsInjected']);
  expect(totals).toMatchObject({ leakedFds: 0, undeclaredLeaks: 0, repliesLost: 0, failedRows: 0, badInputsTried: expect.any(Number) });
  expect(totals['clientPeakRssBytes']).toBeGreaterThan(0);
  expect(totals['helperPeakRssBytes']).toBeGreaterThan(0);
  expect(r.stdout).toMatch(/^totals: faults injected \d+, survived \d+;/m);
}, 30 * 60_000); // a hang guard only: every row is bounded by --timeout above
