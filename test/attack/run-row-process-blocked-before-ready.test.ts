/**
 * `fdbridge run` watches its row process (pings, the row's --timeout, the
 * stall rule) only once a row has been sent. Before that, from the row
 * process's start until its 'ready', nothing is watched: the supervisor
 * waits for 'ready' or 'failed' without a limit. But the row process runs
 * scenario code there: it loads every scenario module again
 * (discoverScenarios), and a module's top-level code can block the thread.
 *
 * Here a scenario module takes a fixture lock at load time and waits while
 * someone else holds it (a sync lockfile pattern: wait, retry). The run
 * process loads the module first, to plan the rows, and holds the lock for
 * its whole life; the row process's load then waits for ever. The run's
 * promises (README: a row longer than --timeout fails, a dead peer never
 * hangs a caller, every failure is a clear typed error) ask for the run to
 * end by itself with an error that names the row process; it hangs instead.
 * No step of this test waits for a time: it waits for the run's exit; the
 * run's process group is killed afterwards if it is still there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';
import { CLI, exitOf, pidExit, processesWithEnv } from '../util/processes';

let dir: string;
let run: ChildProcess | undefined;
const MARK = `FDBRIDGE_ATTACK_BEFORE_READY=${process.pid}`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-before-ready-'));
  writeFileSync(
    join(dir, 'fixture-lock.scenario.js'),
    `const { closeSync, openSync, unlinkSync } = require('node:fs');
const { makeMemfd, closeFd } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'fd.js'))});
// The fixture is shared: whoever loads this module first holds it until it exits; others wait.
const lock = process.env.FIXTURE_LOCK;
for (;;) {
  try {
    closeSync(openSync(lock, 'wx'));
    break;
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
}
process.on('exit', () => unlinkSync(lock));
module.exports = {
  name: 'fixture-lock',
  description: 'takes a fixture lock as its module loads',
  transports: ['direct'],
  async run() {
    closeFd(makeMemfd('fixture'));
  },
};
`,
  );
});

afterAll(async () => {
  if (run?.pid !== undefined && run.exitCode === null && run.signalCode === null) {
    process.kill(-run.pid, 'SIGKILL');
    await exitOf(run);
  }
  // The row process ends itself once the run is gone (run-child-watch): waited for, so nothing outlives the test.
  await Promise.all(processesWithEnv(MARK).map((pid) => pidExit(pid)));
  rmSync(dir, { recursive: true, force: true });
});

test('a row process whose thread blocks before it is ready ends the run with an error, not a hang', async () => {
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const [name, value] = MARK.split('=');
  run = spawn(process.execPath, [CLI, 'run', '--scenarios', dir, '--timeout', '2000', '--settle', '100'], {
    env: { ...process.env, TMPDIR: tmp, FIXTURE_LOCK: join(dir, 'fixture.lock'), [name as string]: value },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  run.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const stderrEnded = new Promise((resolve) => run?.stderr?.once('close', resolve));
  const how = await exitOf(run);
  await stderrEnded;
  expect({ exited: how.code !== null && how.code !== 0, signal: how.signal, names: /row process/.test(stderr), left: readdirSync(tmp) }).toEqual({
    exited: true,
    signal: null,
    names: true,
    left: [],
  });
}, 120_000);
