/**
 * `fdbridge run` stopped mid-row, as a user (Ctrl-C), a CI runner (SIGTERM)
 * or the OOM killer (SIGKILL) stops it. A signal it can catch: the helper
 * daemon it started is stopped, every temporary directory it made (the
 * run's, holding the daemon's socket, and the row's) is removed, and it
 * exits 128 + the signal's number (a second signal ends it at once; the
 * directories still go, and the daemon is SIGKILLed). A scenario's own
 * process.exit() ends only the row process it runs in: its row fails, the
 * run goes on. SIGKILL, which the run cannot catch: its row process sees
 * it gone, stops the row and the daemon, and removes the directories; when
 * they are all killed at once, the next run removes what they left.
 *
 * The run gets a TMPDIR of its own, so "what it left behind" is exactly
 * what is in that directory afterwards. No step waits for a time: each
 * waits for what the run prints, or for a process's exit (its pidfd).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';
import { MID_ROW } from '../fixtures/stop-scenarios/blocks-on-helper.scenario';
import { EXIT_STATUS } from '../fixtures/stop-scenarios/exits-mid-row.scenario';
import { childrenOf, CLI, exitOf, pidExit, runCli } from '../util/processes';

const STOP_SCENARIOS = join(packageRoot, 'dist', 'test', 'fixtures', 'stop-scenarios');

interface MidRow {
  run: ChildProcess;
  /** The run's TMPDIR. */
  tmp: string;
  daemonPid: number;
  socketPath: string;
  rowDir: string;
  output(): string;
}

/**
 * Starts `fdbridge run` on the blocking fixture and resolves once its row is
 * running. `detached`: the run leads a process group of its own (its row
 * process and daemon in it), for a test that kills them all at once.
 */
async function runUntilMidRow(tmp: string, detached = false): Promise<MidRow> {
  const run = spawn(process.execPath, [CLI, 'run', '--transport', 'helper', '--scenario', 'blocks-on-helper'], {
    env: { ...process.env, TMPDIR: tmp, FDBRIDGE_SCENARIOS_DIR: STOP_SCENARIOS },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  let out = '';
  let err = '';
  run.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = exitOf(run);
  await new Promise<void>((resolve, reject) => {
    run.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(MID_ROW)) resolve();
    });
    void exited.then((how) => reject(new Error(`the run ended (${JSON.stringify(how)}) before its row started:\n${out}\n${err}`)));
  });
  const daemon = /helper daemon: pid (\d+), socket (\S+)/.exec(out);
  const row = new RegExp(`${MID_ROW} (\\S+)`).exec(out);
  if (!daemon || !row) throw new Error(`the run did not name its daemon and row directory:\n${out}`);
  return { run, tmp, daemonPid: Number(daemon[1]), socketPath: daemon[2] as string, rowDir: row[1] as string, output: () => `${out}\n${err}` };
}

/** Whether `pid` is a live process whose command line names `word` (not a reused pid). */
function running(pid: number, word: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(word);
  } catch {
    return false;
  }
}

let tmp: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'fdbridge-run-stop-'));
});
afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

test.each([
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const)('%s mid-row: the daemon is stopped, nothing is left in TMPDIR, exit status %d', async (signal, status) => {
  const mid = await runUntilMidRow(tmp);
  expect(running(mid.daemonPid, mid.socketPath)).toBe(true);
  expect(existsSync(mid.socketPath)).toBe(true);
  expect(existsSync(join(mid.rowDir, 'held'))).toBe(true);
  const daemonExit = pidExit(mid.daemonPid);

  mid.run.kill(signal);
  const how = await exitOf(mid.run);
  expect({ how, output: mid.output() }).toEqual({ how: { code: status, signal: null }, output: expect.stringContaining(`fdbridge run: ${signal}: stopping`) });
  // The run waited for its daemon before exiting: it is gone already.
  expect(running(mid.daemonPid, mid.socketPath)).toBe(false);
  await daemonExit;
  expect(readdirSync(tmp)).toEqual([]);
});

test('a scenario that calls process.exit() mid-row fails its row (exit 1): the daemon is stopped and the directories removed', async () => {
  const run = spawn(process.execPath, [CLI, 'run', '--transport', 'helper', '--scenario', 'exits-mid-row'], {
    env: { ...process.env, TMPDIR: tmp, FDBRIDGE_SCENARIOS_DIR: STOP_SCENARIOS },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  run.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const how = await exitOf(run);
  // It exits in its row process: the run goes on, with that row failed.
  expect({ how, out }).toEqual({
    how: { code: 1, signal: null },
    out: expect.stringMatching(new RegExp(`exits-mid-row: exiting[^]*FAIL +exits-mid-row +helper[^\\n]*\\n +the row process \\(pid \\d+\\) exited during the row \\(status ${EXIT_STATUS}\\)`)),
  });
  const daemon = /helper daemon: pid (\d+), socket (\S+)/.exec(out);
  expect(daemon).not.toBeNull();
  expect(running(Number(daemon?.[1]), daemon?.[2] as string)).toBe(false);
  expect(readdirSync(tmp)).toEqual([]);
});

test('SIGKILL mid-row: the row process sees the run gone, stops its row and its daemon (which removes its socket), and removes the directories', async () => {
  const mid = await runUntilMidRow(tmp);
  const [rowProcess, ...others] = childrenOf(mid.run.pid as number);
  expect({ rowProcess, others }).toEqual({ rowProcess: expect.any(Number), others: [] });
  const daemonExit = pidExit(mid.daemonPid);
  const rowProcessExit = pidExit(rowProcess as number);
  mid.run.kill('SIGKILL');
  expect(await exitOf(mid.run)).toEqual({ code: null, signal: 'SIGKILL' });
  // No deadline of its own: a row process or a daemon that outlives the run runs into the test's timeout.
  await Promise.all([daemonExit, rowProcessExit]);
  expect(existsSync(mid.socketPath)).toBe(false);
  expect(readdirSync(tmp)).toEqual([]);
});

test('SIGKILL to the run, its row process and its daemon at once (a process group killed): the next run removes what they left, as it makes its own', async () => {
  const mid = await runUntilMidRow(tmp, true);
  const [rowProcess] = childrenOf(mid.run.pid as number);
  const gone = Promise.all([exitOf(mid.run), pidExit(rowProcess as number), pidExit(mid.daemonPid)]);
  // One kill(2) for the whole group: none of them runs again to clean up.
  process.kill(-(mid.run.pid as number), 'SIGKILL');
  await gone;
  const runDir = join(mid.socketPath, '..');
  expect(existsSync(runDir)).toBe(true);
  expect(readdirSync(mid.rowDir)).toEqual(['held']);
  // Their names carry the killed run's pid, which no process has now.
  const next = await runUntilMidRow(tmp);
  expect(existsSync(runDir)).toBe(false);
  expect(existsSync(mid.rowDir)).toBe(false);
  next.run.kill('SIGTERM');
  expect(await exitOf(next.run)).toEqual({ code: 143, signal: null });
  expect(readdirSync(tmp)).toEqual([]);
});

test('helper --exit-with-parent naming a process that is not its parent refuses to start (exit 3), listening nowhere', async () => {
  const socketPath = join(tmp, 'helper.sock');
  const r = await runCli(['helper', '--socket', socketPath, '--exit-with-parent', '1']);
  expect(r).toEqual({ code: 3, stdout: '', stderr: expect.stringMatching(/^fdbridge helper: pid 1 is not this process's parent \(pid \d+ is\)/) });
  expect(readdirSync(tmp)).toEqual([]);
});
