/**
 * A scenario that closes its row process's channel to the run (fd 3, the
 * 'ipc' of the row process's stdio; test/fixtures/row-process-scenarios/
 * closes-channel) fails at once, with that reason and the fd it closed,
 * not after its time limit as a row whose thread never returned; the rows
 * after it run in a new row process.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultRow, ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { runCli } from '../util/processes';

const SCENARIOS = join(packageRoot, 'dist', 'test', 'fixtures', 'row-process-scenarios');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-row-process-channel-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function run(args: string[]): Promise<ResultsFile> {
  const json = join(dir, 'results.json');
  const r = await runCli(['run', '--settle', '300', '--transport', 'direct', ...args, '--json', json], { env: { FDBRIDGE_SCENARIOS_DIR: SCENARIOS } });
  try {
    return JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  } catch {
    throw new Error(`no results file (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

const row = (rs: ResultsFile, scenario: string): ResultRow => {
  const found = rs.results.find((r) => r.scenario === scenario);
  if (!found) throw new Error(`no row ${scenario}`);
  return found;
};

test('a scenario that closes the row process\'s channel (fd 3) fails with that reason and the closed fd, not a time-out; the other row passes', async () => {
  const rs = await run(['--timeout', '5000', '--scenario', 'closes-channel,passes']);
  const closes = row(rs, 'closes-channel');
  expect(closes).toMatchObject({
    status: 'fail',
    leaks: [],
    error: expect.stringMatching(/^the scenario closed the harness's channel \(fd 3 -> socket:\[\d+\]\): fd 3 is closed in the row process/),
    closed: [{ role: 'client', fd: 3, target: expect.stringMatching(/^socket:\[\d+\]$/) }],
    rowProcess: { ended: 'channel-closed' },
  });
  expect(closes.error).not.toContain('timed out');
  expect(row(rs, 'passes')).toMatchObject({ status: 'pass' });
});
