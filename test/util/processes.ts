/** Test utilities: helper daemons in their own processes, and fd tables of other processes. */
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { helperCommandArgs } from '../../harness/helper-process';
import { childrenOf } from '../../harness/run-supervisor';
import { HelperDaemon, type HelperOptions } from '../../src';
import { closeFd, formatFdTableDiff, openPidfd, type FdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { watchExit } from '../../src/test-hooks';
import { settleFdTable } from './settle';

export const CLI = join(packageRoot, 'dist', 'harness', 'cli.js');
/** The test fixtures' scenarios (FDBRIDGE_SCENARIOS_DIR for a CLI run that lists or runs them). */
export const FIXTURE_SCENARIOS = join(packageRoot, 'dist', 'test', 'fixtures', 'scenarios');

export interface CliRun {
  /** The exit status; -1 when the process was killed by a signal (or its output passed maxBuffer). */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built CLI (`node dist/harness/cli.js ARGS`) as a user does, and
 * resolves (never rejects) with its exit status and output. `env` is added
 * to this process's environment.
 *
 * No time limit of its own: the CLI ends by its own deadlines (a run's
 * per-row --timeout, connect's timeoutMs, the helper's hello timeout), so a
 * slow machine makes a run slower, never a failure; one that hangs runs
 * into the test's timeout.
 */
export function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ...options.env }, cwd: options.cwd, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

export interface HelperProcess {
  pid: number;
  child: ChildProcess;
  stderr(): string;
  /** Sends `signal` and resolves with how the process ended. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `fdbridge helper --socket <path>` (with the diagnostic and
 * benchmark commands) and waits until it listens, or rejects once it has
 * exited without listening (no time limit: it does one or the other). It
 * exits with this process (--exit-with-parent), should a test file crash.
 */
export async function startHelperProcess(socketPath: string, extraArgs: string[] = [], options: { nofile?: number } = {}): Promise<HelperProcess> {
  const args = ['helper', '--socket', socketPath, '--exit-with-parent', String(process.pid), ...helperCommandArgs(), ...extraArgs];
  // `nofile`: RLIMIT_NOFILE (soft and hard) as a service may have it; prlimit execs the daemon, same pid.
  const [command, commandArgs] =
    options.nofile === undefined ? [process.execPath, [CLI, ...args]] : ['prlimit', [`--nofile=${options.nofile}:${options.nofile}`, process.execPath, CLI, ...args]];
  const child = spawn(command, commandArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening on')) resolve();
    });
    void exited.then(({ code }) => reject(new Error(`helper exited with ${code} before listening: ${err}`)));
  });
  return {
    pid: child.pid as number,
    child,
    stderr: () => err,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * A helper daemon for a test file, in a private directory: started before
 * its tests (beforeAll), stopped and removed after them (afterAll). Read
 * `helper`, `socketPath` and `dir` (the directory, for the suite's other
 * files too) inside tests and hooks.
 */
export function helperForSuite(prefix: string): { readonly helper: HelperProcess; readonly socketPath: string; readonly dir: string } {
  const suite = {} as { helper: HelperProcess; socketPath: string; dir: string };
  beforeAll(async () => {
    suite.dir = mkdtempSync(join(tmpdir(), prefix));
    suite.socketPath = join(suite.dir, 'helper.sock');
    suite.helper = await startHelperProcess(suite.socketPath);
  });
  afterAll(async () => {
    await suite.helper?.stop('SIGTERM');
    if (suite.dir) rmSync(suite.dir, { recursive: true, force: true });
  });
  return suite;
}

/**
 * A HelperDaemon in this process for a test file, with a private directory:
 * started before its tests (beforeAll) at the abstract name
 * `@fdbridge-<name>-<pid>` with `options`, closed and the directory
 * (prefix `fdbridge-<name>-`) removed after them (afterAll). Read `daemon`
 * and `dir` inside tests and hooks.
 */
export function daemonForSuite(name: string, options: Omit<HelperOptions, 'socketPath'>): { readonly daemon: HelperDaemon; readonly dir: string } {
  const suite = {} as { daemon: HelperDaemon; dir: string };
  beforeAll(() => {
    suite.dir = mkdtempSync(join(tmpdir(), `fdbridge-${name}-`));
    suite.daemon = HelperDaemon.start({ ...options, socketPath: `@fdbridge-${name}-${process.pid}` });
  });
  afterAll(async () => {
    await suite.daemon?.close();
    if (suite.dir) rmSync(suite.dir, { recursive: true, force: true });
  });
  return suite;
}

/**
 * Waits for the open-fd table of `pid` to equal `baseline`, giving up once
 * `pid` has sat idle for `ms` with it still different (test/util/settle.ts:
 * time it spends running or waiting for a CPU does not count); returns ''
 * when it does, else a readable diff.
 */
export async function fdTableSettles(pid: number, baseline: FdTable, ms = 2000): Promise<string> {
  return formatFdTableDiff(await settleFdTable(pid, baseline, ms));
}

export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  // No deadline of its own: a child that never exits runs into the test's timeout.
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/**
 * Resolves once process `pid` has exited: its pidfd turns readable then,
 * whoever its parent is now and whether or not it has been reaped. No
 * deadline of its own: a process that never exits runs into the test's timeout.
 */
export function pidExit(pid: number): Promise<void> {
  const pidfd = openPidfd(pid);
  try {
    return new Promise((resolve) => {
      const watch = watchExit(pidfd, () => setImmediate(() => (watch.close(), resolve())));
    });
  } finally {
    closeFd(pidfd);
  }
}

/** The pids of a process's children now (over all its threads). */
export { childrenOf };

/** Whether `err` says a /proc entry or a pid named a process or thread that has ended since. */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** A child process seen by childProcessesOf. */
export interface SeenChild {
  pid: number;
  /** Its command line, arguments separated by spaces ('' for a zombie). */
  cmdline: string;
  /** Resolves once it has exited (its pidfd, opened when it was seen). */
  exited: Promise<void>;
}

/**
 * `pid`'s children now, each with its command line and its exit. A child
 * can end on its own at any moment (a short-lived measurement process, a
 * probe): one reaped before it could be looked at is left out, as it was
 * not there any more (a zombie is kept: its exit is already done).
 */
export function childProcessesOf(pid: number): SeenChild[] {
  return childrenOf(pid).flatMap((child) => {
    let exited: Promise<void>;
    try {
      exited = pidExit(child);
    } catch (err) {
      if (vanished(err)) return [];
      throw err;
    }
    try {
      return [{ pid: child, cmdline: readFileSync(`/proc/${child}/cmdline`, 'utf8').replaceAll('\0', ' '), exited }];
    } catch (err) {
      if (vanished(err)) return [];
      throw err;
    }
  });
}

/**
 * Live (not zombie) processes whose environment holds `entry` (NAME=VALUE):
 * how a test finds every process a run started, however deep, after the run.
 */
export function processesWithEnv(entry: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/environ`, 'latin1').split('\0').includes(entry);
      } catch {
        return false; // gone, or a zombie
      }
    })
    .map(Number);
}

/**
 * `fdbridge run` processes that pass one marker (`NAME=<pid>-<time>`) in
 * their environment to every process they start, however deep: a test
 * that checks that a run leaves no process behind finds them (live()), and
 * kills what a failed test left (killAll()).
 */
export class MarkedRuns {
  readonly mark: string;
  readonly #runs: Array<{ run: ChildProcess; detached: boolean }> = [];

  constructor(name: string) {
    this.mark = `${name}=${process.pid}-${Date.now()}`;
  }

  /** Live (not zombie) processes with the marker. */
  live(): number[] {
    return processesWithEnv(this.mark);
  }

  /** `fdbridge run ARGS` with TMPDIR `tmp` and the marker; `detached`: the leader of a process group of its own. */
  start(args: readonly string[], tmp: string, options: { stdio: StdioOptions; detached?: boolean }): ChildProcess {
    const at = this.mark.indexOf('=');
    const run = spawn(process.execPath, [CLI, 'run', ...args], {
      env: { ...process.env, TMPDIR: tmp, [this.mark.slice(0, at)]: this.mark.slice(at + 1) },
      ...options,
    });
    this.#runs.push({ run, detached: options.detached === true });
    return run;
  }

  /** SIGKILLs each run still running (with its process group when detached), then every live process with the marker. */
  async killAll(): Promise<void> {
    for (const { run, detached } of this.#runs) {
      if (run.pid === undefined || run.exitCode !== null || run.signalCode !== null) continue;
      process.kill(detached ? -run.pid : run.pid, 'SIGKILL');
      await exitOf(run);
    }
    for (const pid of this.live()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

/**
 * Runs `node fixture JSON(params)` at RLIMIT_NOFILE `nofile` (prlimit) and
 * resolves with the last line it printed, parsed as JSON; or, when that is
 * not JSON (it crashed, or was killed), with how it ended and the last three
 * lines of its output.
 */
export function runFixtureAtFdLimit<T>(nofile: number, fixture: string, params: unknown): Promise<T | string> {
  return new Promise((resolve) => {
    const child = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, process.execPath, fixture, JSON.stringify(params)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.once('close', (code, signal) => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as T);
      } catch {
        resolve(`ended with ${signal ?? code}: ${(out + err).trim().split('\n').slice(-3).join(' | ')}`);
      }
    });
  });
}

/**
 * (Re)creates `dir`/scenarios holding one scenario, named `name`, whose
 * run() throws; returns that directory (for FDBRIDGE_SCENARIOS_DIR).
 */
export function writeFailingScenario(dir: string, name: string): string {
  const scenarios = join(dir, 'scenarios');
  rmSync(scenarios, { recursive: true, force: true });
  mkdirSync(scenarios);
  writeFileSync(
    join(scenarios, 'named.scenario.js'),
    `module.exports = { name: ${JSON.stringify(name)}, description: 'x', transports: ['direct'], run() { throw new Error('fails'); } };\n`,
  );
  return scenarios;
}
