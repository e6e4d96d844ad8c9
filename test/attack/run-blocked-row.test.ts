/**
 * A scenario that blocks its thread: a readSync on a pipe whose write end
 * it still holds (an easy mistake in fd-passing code: the reader waits for
 * an end of file its own copy prevents), an execSync, an Atomics.wait. The
 * run's promises (README, "The scenario harness"): a row that runs longer
 * than --timeout fails and the run goes on; SIGINT or SIGTERM stops the
 * run. Here the row's --timeout is 2 s, and the run must end by itself with
 * that row failed (exit 1). No step of this test waits for a time: it
 * waits for the run's exit, which only the run's own deadline can bring;
 * the run is killed afterwards if it is still there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { CLI, exitOf } from '../util/processes';

let dir: string;
let run: ChildProcess | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-blocked-row-'));
  writeFileSync(
    join(dir, 'blocks-its-thread.scenario.js'),
    `const { readSync } = require('node:fs');
const { makePipe } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
module.exports = {
  name: 'blocks-its-thread',
  description: 'reads a pipe whose write end it still holds: waits for an end of file that never comes',
  transports: ['direct'],
  async run() {
    const [r] = makePipe(); // the write end is kept: no end of file
    readSync(r, Buffer.alloc(1));
  },
};
`,
  );
});

afterAll(async () => {
  if (run && run.exitCode === null && run.signalCode === null) {
    run.kill('SIGKILL');
    await exitOf(run);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('a row whose scenario blocks its thread fails at --timeout, and the run ends with exit 1', async () => {
  const tmp = join(dir, 'tmp');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const json = join(dir, 'results.json');
  run = spawn(process.execPath, [CLI, 'run', '--scenarios', dir, '--timeout', '2000', '--settle', '100', '--json', json], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: 'ignore',
  });
  const how = await exitOf(run);
  const results = existsSync(json) ? (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile) : undefined;
  expect({ how, status: results?.results[0]?.status, error: results?.results[0]?.error }).toEqual({
    how: { code: 1, signal: null },
    status: 'fail',
    error: expect.stringMatching(/timed out after 2000 ms/),
  });
}, 90_000);
