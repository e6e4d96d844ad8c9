/**
 * The faults profile, run as a user runs it (`fdbridge run --profile faults
 * --json FILE` in a subprocess, on the built scenarios): every row passes,
 * every fault injected was survived, and the totals record no leaked fd and
 * no lost reply. (Each fault row takes well under 3 s; that is not asserted
 * here, on a shared machine: the liveness bounds are, inside the scenarios.)
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
    execFile(process.execPath, [CLI, 'run', '--profile', 'faults', '--json', json], { env, maxBuffer: 16 << 20, timeout: 120_000 }, (err, stdout, stderr) =>
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
}, 150_000);
