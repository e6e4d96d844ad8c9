/**
 * How the helper daemon's throughput grows with its clients: one C load
 * generator (native/bench/frame_bench.c `load`) opens N connections, each
 * with one request in flight, and drives either the helper daemon or a C
 * epoll server speaking the same frames (`frame_bench server`). The same
 * generator against both servers: their ratio is the servers' difference
 * alone, and the generator costs little next to either.
 *
 * Nothing here imports tinybench: the samples are timed by the generator.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { killIfSpawned } from '../src/child-process';
import { cAnchor } from './anchor-build';
import { cleanupOnExit } from './exit-cleanup';
import { exitText } from './exit-text';

const execFileAsync = promisify(execFile);

/** Concurrent clients measured by default: the curve's points. */
export const DEFAULT_CLIENT_COUNTS: readonly number[] = [1, 8, 64, 512];
/** The goal is judged at this many clients. */
export const GOAL_CLIENTS = 64;

export type ThroughputMode = 'dup' | 'call';
export type ThroughputServer = 'helper' | 'c-frame-server';

/** One run of the generator: requests completed per second and their latency (send to reply). */
export interface ThroughputSample {
  opsPerSec: number;
  p50Us: number;
  p99Us: number;
  requests: number;
}

/** One point of the curve: the median of its rounds (opsPerSec), with every round kept. */
export interface ThroughputPoint extends ThroughputSample {
  server: ThroughputServer;
  mode: ThroughputMode;
  clients: number;
  /** Per round. */
  rounds: ThroughputSample[];
}

/** The C frame server, listening on a socket of its own until stopped. */
export class CFrameServer {
  readonly socketPath: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(socketPath: string, child: ChildProcess, exited: Promise<void>) {
    this.socketPath = socketPath;
    this.#child = child;
    this.#exited = exited;
  }

  /**
   * Starts `frame_bench server` on `dir`/frames.sock (`exe`: the built
   * frame_bench). Its stdin is a pipe from this process: the server exits
   * at its end of file, so it ends with this process however it ends.
   */
  static async start(exe: string, dir: string): Promise<CFrameServer> {
    const socketPath = join(dir, 'frames.sock');
    const child = spawn(exe, ['server', '--socket', socketPath], { stdio: ['pipe', 'pipe', 'inherit'] });
    const forget = cleanupOnExit(() => killIfSpawned(child));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve())).then(forget);
    // Listeners of the start-up only: `exited` keeps its own.
    let onError = (_err: Error): void => undefined;
    let onExit = (): void => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error('the C frame server did not listen within 10 s')), 10_000);
        child.stdout?.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('listening')) {
            clearTimeout(timer);
            resolve();
          }
        });
        onError = (err) => {
          clearTimeout(timer);
          reject(err);
        };
        onExit = () => {
          clearTimeout(timer);
          reject(new Error(`the C frame server exited (${exitText({ code: child.exitCode, signal: child.signalCode }) ?? 'how is not known'}) before listening`));
        };
        child.once('error', onError);
        child.once('exit', onExit);
      });
    } catch (err) {
      if (killIfSpawned(child)) await exited;
      throw err;
    } finally {
      child.off('error', onError);
      child.off('exit', onExit);
    }
    child.stdout?.resume();
    return new CFrameServer(socketPath, child, exited);
  }

  async stop(): Promise<void> {
    killIfSpawned(this.#child, 'SIGTERM');
    await this.#exited;
  }
}

/** The frame_bench binary (built in a checkout, else compiled into `dir`). */
export function frameBench(dir: string): Promise<string> {
  return cAnchor('frame_bench', dir);
}

/**
 * Runs the generator once: `clients` connections to `socketPath` naming
 * command `command`, `mode` requests, `timeMs` counted after `warmupMs`.
 * Rejects with the generator's stderr when a server answered wrongly.
 */
export async function measureThroughput(
  exe: string,
  socketPath: string,
  options: { clients: number; mode: ThroughputMode; timeMs: number; warmupMs: number; command: string },
): Promise<ThroughputSample> {
  const args = ['load', '--socket', socketPath, '--clients', String(options.clients), '--mode', options.mode];
  args.push('--time', String(Math.max(1, Math.round(options.timeMs))), '--warmup', String(Math.round(options.warmupMs)), '--command', options.command);
  args.push('--release', String(releaseEvery(options.clients)));
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(exe, args, { timeout: 60_000 + options.timeMs * 4 }));
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`frame_bench load (${options.clients} clients, ${options.mode}): ${e.stderr?.trim() || e.message}`, { cause: err });
  }
  const r = JSON.parse(stdout) as Partial<ThroughputSample>;
  for (const key of ['opsPerSec', 'p50Us', 'p99Us', 'requests'] as const) {
    if (typeof r[key] !== 'number' || !Number.isFinite(r[key])) throw new Error(`frame_bench load: no ${key} in its output: ${stdout}`);
  }
  if ((r.requests as number) === 0) throw new Error(`frame_bench load (${options.clients} clients, ${options.mode}): no request completed in ${options.timeMs} ms`);
  return { opsPerSec: r.opsPerSec as number, p50Us: r.p50Us as number, p99Us: r.p99Us as number, requests: r.requests as number };
}

/**
 * Duplicates a client of the dup mode leaves on the server before it
 * releases them: 64, fewer with many clients, so that all of them together
 * (at most 4096) stay well inside both servers' fd limits and the helper's
 * per-uid quota, whatever RLIMIT_NOFILE is.
 */
export function releaseEvery(clients: number): number {
  return Math.max(1, Math.min(64, Math.floor(4096 / clients)));
}

/** The key of one point of the curve in per-round maps. */
export function pointKey(server: ThroughputServer, mode: ThroughputMode, clients: number): string {
  return `${server} ${mode} ${clients}`;
}
