/**
 * A row killed because its thread blocks must not leave behind the
 * processes its scenario started. The run's row process is killed with its
 * children (harness/run-supervisor.ts), but an execSync of a shell
 * pipeline (the blocking call the harness itself names) makes the shell
 * the row process's child and the pipeline's programs its grandchildren:
 * they must be gone once the run has exited, not left running for ever,
 * reparented to init. Each process the run started carries a marker in its
 * environment; this test waits only for the run's exit (its own --timeout
 * brings it) and then reads /proc.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { exitOf, MarkedRuns } from '../util/processes';

const runs = new MarkedRuns('FDBRIDGE_ATTACK_DESCENDANTS');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-blocked-descendants-'));
  writeFileSync(
    join(dir, 'execsync-pipeline.scenario.js'),
    `const { execSync } = require('node:child_process');
module.exports = {
  name: 'execsync-pipeline',
  description: 'an execSync of a pipeline that outlasts --timeout: the shell and its programs block the thread',
  transports: ['direct'],
  async run() {
    execSync('sleep 3600 | cat');
  },
};
`,
  );
});

afterAll(async () => {
  await runs.killAll();
  rmSync(dir, { recursive: true, force: true });
});

test('a row killed for blocking in an execSync leaves none of the processes it started running', async () => {
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const run = runs.start(['--scenarios', dir, '--timeout', '2000', '--settle', '100'], tmp, { stdio: 'ignore' });
  const how = await exitOf(run);
  const left = runs.live().map((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ').trim();
    } catch {
      return `pid ${pid}`; // ended just now: it was still there after the run
    }
  });
  expect({ how, left }).toEqual({ how: { code: 1, signal: null }, left: [] });
}, 90_000);
