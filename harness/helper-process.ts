/**
 * The run's helper daemon: `node dist/harness/cli.js helper --socket <tmp>
 * --exit-with-parent <this pid>` in a process of its own, as a user would
 * start it, that ends when this process does, however it ends.
 *
 * The client side keeps no fd tied to the daemon once it listens: stdout (a
 * pipe, read for the "listening on" line) is closed then, and stderr goes to
 * a file the daemon alone holds open. So a daemon that is killed or restarted
 * mid-row changes nothing in the client's fd table, and the leak oracle does
 * not mistake that for a scenario's doing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { CommandSpec } from '../src/command';
import { killIfSpawned } from '../src/child-process';
import { requireDistFile } from '../src/paths';
import { BENCH_PEER_COMMAND } from './bench-peer';
import { cleanupOnExit } from './exit-cleanup';
import { exitText } from './exit-text';
import type { HelperControl } from './types';

/**
 * `fdbridge helper` arguments for the harness's and tests' daemons: the
 * diagnostic commands (scenarios probe the far side with ProbeCommand), the
 * benchmark's command, and `extra` named commands (scenarios' own).
 */
export function helperCommandArgs(extra: readonly CommandSpec[] = []): string[] {
  const args = ['--diagnostics'];
  const seen = new Set<string>();
  for (const spec of [BENCH_PEER_COMMAND, ...extra]) {
    if (spec.name === undefined || spec.module === undefined) throw new TypeError(`a helper command needs a name and a module: ${JSON.stringify(spec)}`);
    if (seen.has(spec.name)) continue;
    seen.add(spec.name);
    args.push('--command', `${spec.name}=${spec.module}${spec.export !== undefined ? `#${spec.export}` : ''}`);
  }
  return args;
}

/** VmHWM (peak resident set) of a process, in bytes; undefined once it is gone. */
export function peakRssOf(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface HelperStartOptions {
  /**
   * Variables merged over this process's environment for the daemon (a
   * value `undefined` removes one), e.g. `{ FDBRIDGE_FAILPOINT: 'after-receive' }`.
   */
  env?: Readonly<Record<string, string | undefined>>;
  /** More `fdbridge helper` arguments, e.g. `['--max-fds', '8']`. */
  args?: readonly string[];
}

/** How long a started daemon has to say it listens. */
const LISTEN_MS = 10_000;
/** The longest HelperProcess.start() takes: a dead predecessor's reaping (1 s), then LISTEN_MS. */
export const HELPER_START_MS = 1000 + LISTEN_MS;

export class HelperProcess implements HelperControl {
  readonly socketPath: string;
  readonly #logPath: string;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #starts = 0;
  #peakRss: number | undefined;

  readonly #commands: readonly CommandSpec[];

  /**
   * `dir` holds the socket and the daemon's stderr log; the caller removes
   * it. `socketName` defaults to helper.sock; `commands` are served besides
   * the built-in, diagnostic and benchmark ones.
   */
  constructor(dir: string, socketName = 'helper.sock', commands: readonly CommandSpec[] = []) {
    this.#commands = commands;
    this.socketPath = join(dir, socketName);
    this.#logPath = join(dir, `${socketName.replace(/\.sock$/, '')}.log`);
  }

  /**
   * The largest peak RSS (VmHWM) of the daemons started so far: read when
   * one is stopped or restarted, and of the one running now. Undefined if
   * none could be read (e.g. every daemon was SIGKILLed by a scenario).
   */
  get peakRssBytes(): number | undefined {
    this.#notePeak();
    return this.#peakRss;
  }

  #notePeak(): void {
    const pid = this.#child?.pid;
    const now = pid !== undefined && this.alive ? peakRssOf(pid) : undefined;
    if (now !== undefined && (this.#peakRss === undefined || now > this.#peakRss)) this.#peakRss = now;
  }

  get pid(): number {
    return this.#child?.pid ?? -1;
  }

  /**
   * Whether the daemon still runs. Node learns of a child's death only
   * through SIGCHLD, a moment later: a daemon a scenario just SIGKILLed is a
   * zombie (or gone) in /proc before its 'exit' event, and counts as dead.
   */
  get alive(): boolean {
    const child = this.#child;
    if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state !== 'Z' && state !== 'X';
    } catch {
      return false;
    }
  }

  /** Resolves once the current daemon has exited (and Node has reaped it). */
  get exited(): Promise<void> {
    return this.#exited;
  }

  /** How the current daemon ended: undefined while it runs (or before Node has reaped it). */
  get exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    const child = this.#child;
    if (!child || (child.exitCode === null && child.signalCode === null)) return undefined;
    return { code: child.exitCode, signal: child.signalCode };
  }

  /** The current daemon's process (undefined before the first start), for waiting for its exit. */
  get child(): ChildProcess | undefined {
    return this.#child;
  }

  /** How many times a daemon was started (1 after the first start). */
  get starts(): number {
    return this.#starts;
  }

  /** What the daemons wrote to stderr so far. */
  log(): string {
    try {
      return readFileSync(this.#logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** Starts the daemon and resolves once it listens (at most HELPER_START_MS). */
  async start(options: HelperStartOptions = {}): Promise<void> {
    if (this.alive) return;
    // A predecessor that died: let Node reap it first (its 'exit' event).
    await Promise.race([this.#exited, new Promise((r) => setTimeout(r, 1000).unref())]);
    const cli = requireDistFile('harness/cli.js');
    const logFd = openSync(this.#logPath, 'a');
    let child: ChildProcess;
    try {
      // --exit-with-parent: a run that is SIGKILLed takes its daemon with it.
      const args = ['helper', '--socket', this.socketPath, '--exit-with-parent', String(process.pid), ...helperCommandArgs(this.#commands)];
      child = spawn(process.execPath, [cli, ...args, ...(options.args ?? [])], {
        stdio: ['ignore', 'pipe', logFd],
        // spawn() leaves out variables whose value is undefined: that is how one is removed.
        ...(options.env !== undefined ? { env: { ...process.env, ...options.env } } : {}),
      });
    } finally {
      closeSync(logFd);
    }
    this.#child = child;
    this.#starts++;
    // Should this process exit while the daemon runs (process.exit()), it goes too.
    const forget = cleanupOnExit(() => killIfSpawned(child));
    this.#exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    }).then(forget);
    // None when spawn failed (EMFILE): its 'error' event says so below.
    const stdout = child.stdout;
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`the helper daemon did not start within ${LISTEN_MS / 1000} s:\n${this.log()}`)), LISTEN_MS);
        stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('listening on')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        void this.#exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`the helper daemon exited (${exitText({ code: child.exitCode, signal: child.signalCode }) ?? 'how is not known'}) before listening:\n${this.log()}`));
        });
      });
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      stdout?.destroy();
    }
  }

  /**
   * SIGTERM, then SIGKILL after 5 s; resolves once it has exited. Idempotent.
   * A signal this process may no longer send (EPERM: a row gave up the
   * credentials the daemon was started with) ends the wait: the daemon
   * exits with this process (--exit-with-parent), and is reaped by its
   * parent's.
   */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#notePeak();
    if (this.alive && !this.#signal(child, 'SIGTERM')) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#exited, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    if (this.alive) {
      if (!this.#signal(child, 'SIGKILL')) return;
      await this.#exited;
    }
  }

  /**
   * Sends `signal` to the daemon; false when it may not (EPERM). Through
   * process.kill, which throws, and not ChildProcess.kill, which emits
   * 'error' on the child instead (unhandled once start() is done).
   */
  #signal(child: ChildProcess, signal: NodeJS.Signals): boolean {
    if (child.pid === undefined) return true;
    try {
      process.kill(child.pid, signal);
      return true;
    } catch (err) {
      // ESRCH: it is gone already, and 'exit' is on its way.
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }

  async restart(options: HelperStartOptions = {}): Promise<void> {
    await this.stop();
    await this.start(options);
  }
}
