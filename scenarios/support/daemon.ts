/**
 * A helper daemon of a scenario's own, for faults that must not touch the
 * run's shared daemon: one started with FDBRIDGE_FAILPOINT in its
 * environment, one whose fd limit is lowered, one that is killed and
 * restarted. It is `node dist/harness/cli.js helper --socket <ctx.tmpdir>/<name>.sock`
 * in a process of its own (harness/helper-process.ts, as the run's daemon),
 * watched by the leak oracle while it runs.
 *
 * The scenario stops it (SIGTERM: the daemon removes its socket file) in a
 * `finally`; should the harness process exit first, an exit hook SIGKILLs it,
 * so no daemon outlives the run.
 */
import { lstatSync } from 'node:fs';

import { HelperProcess, type HelperStartOptions } from '../../harness/helper-process';
import type { ScenarioContext } from '../../harness/types';

export class ScenarioDaemon {
  readonly #process: HelperProcess;
  readonly #ctx: ScenarioContext;
  readonly #killOnExit = (): void => {
    const pid = this.#process.pid;
    if (pid > 0 && this.#process.alive) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };

  private constructor(ctx: ScenarioContext, name: string) {
    this.#ctx = ctx;
    this.#process = new HelperProcess(ctx.tmpdir, `${name}.sock`);
  }

  /** Starts a daemon on `<ctx.tmpdir>/<name>.sock` (default `h`) with `env` merged over ours; resolves once it listens. */
  static async start(ctx: ScenarioContext, options: HelperStartOptions & { name?: string } = {}): Promise<ScenarioDaemon> {
    const daemon = new ScenarioDaemon(ctx, options.name ?? 'h');
    process.on('exit', daemon.#killOnExit);
    try {
      await daemon.#start(options);
    } catch (err) {
      process.off('exit', daemon.#killOnExit);
      throw err;
    }
    return daemon;
  }

  async #start(options: HelperStartOptions): Promise<void> {
    await this.#process.start({ ...(options.env !== undefined ? { env: options.env } : {}), ...(options.args !== undefined ? { args: options.args } : {}) });
    this.#ctx.watchProcess(this.#process.pid, 'scenario-helper');
  }

  get pid(): number {
    return this.#process.pid;
  }

  get socketPath(): string {
    return this.#process.socketPath;
  }

  /** Whether it still runs (a SIGKILLed daemon counts as dead before Node reaps it). */
  get alive(): boolean {
    return this.#process.alive;
  }

  /** How it ended; undefined while it runs or before Node has reaped it. */
  get exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.#process.exitStatus;
  }

  /** Resolves once it has exited and been reaped. */
  exited(): Promise<void> {
    return this.#process.exited;
  }

  /** Its peak RSS (VmHWM) so far, over every restart. */
  get peakRssBytes(): number | undefined {
    return this.#process.peakRssBytes;
  }

  /** Whether a socket file (live or stale) is at its path. */
  socketFileExists(): boolean {
    try {
      return lstatSync(this.socketPath).isSocket();
    } catch {
      return false;
    }
  }

  /**
   * Stops it if it still runs (SIGTERM) and starts a new daemon on the same
   * path (a killed one's stale socket file is replaced), with `env` this time.
   */
  async restart(options: HelperStartOptions = {}): Promise<void> {
    await this.#process.stop();
    await this.#start(options);
  }

  /** SIGTERM (the daemon removes its socket file), SIGKILL after 5 s; resolves once it has exited. Idempotent. */
  async stop(): Promise<void> {
    try {
      await this.#process.stop();
    } finally {
      process.off('exit', this.#killOnExit);
    }
  }
}
