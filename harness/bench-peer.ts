/**
 * The benchmark's peer: the remote command (BenchPeerCommand) that
 * `fdbridge bench` (harness/cli/bench.ts) connects to on every transport. It
 * does nothing timed: it closes, in batches and outside the timed regions,
 * what the benchmark duplicated into its context, and reports its process's
 * fd count and RSS so that the long run can prove nothing piles up there.
 *
 * No tinybench here: this module runs in workers, children and helpers.
 */
import { readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import type { CommandContext, CommandSpec } from '../src';
import { closeFd } from '../src/fd';
import { distPath } from '../src/paths';

/** Open fds of the calling process (the listing's own directory fd included, the same every time). */
export function countOpenFds(): number {
  return readdirSync('/proc/self/fd').length;
}

let gc: (() => void) | undefined;

/**
 * A full garbage collection, so that RSS read right after it is not a
 * matter of when V8 last happened to collect: without it, garbage from the
 * earlier measurements, collected during the long run, makes its "RSS
 * growth" negative (tens of MB). `--expose-gc` set at run time only installs
 * `gc` in contexts created afterwards, hence the new context.
 */
export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/** One process's open fds, RSS and live JS heap (bytes). */
export interface Usage {
  fds: number;
  rss: number;
  heapUsed: number;
}

/**
 * Usage read after two full collections a turn apart: right after one GC,
 * RSS still counts pages V8 frees a moment later (two readings in a row
 * differed by 31 MB).
 */
export async function usageAfterGc(): Promise<Usage> {
  collectGarbage();
  await new Promise((resolve) => setImmediate(resolve));
  collectGarbage();
  return { fds: countOpenFds(), rss: process.memoryUsage.rss(), heapUsed: process.memoryUsage().heapUsed };
}

export class BenchPeerCommand {
  readonly #context: CommandContext;

  constructor(context: CommandContext) {
    this.#context = context;
  }

  /**
   * Adopts and closes fds the connection duplicated here: one call for a
   * whole batch, so that closing costs one round trip per batch, not per fd.
   * Returns how many were closed.
   */
  closeGiven(fds: number[]): number {
    for (const fd of fds) closeFd(this.#context.adoptFd(fd));
    return fds.length;
  }

  /** The length of `payload`: a call that carries a large argument and a small reply. */
  measure(payload: string): number {
    return payload.length;
  }

  /** This process's open-fd count, resident set size and live JS heap in bytes, after full GCs. */
  usage(): Promise<Usage> {
    return usageAfterGc();
  }
}

/** The spec naming BenchPeerCommand (compiled JavaScript under dist/). */
export const BENCH_PEER_COMMAND: CommandSpec = { name: 'bench', module: distPath('harness/bench-peer.js'), export: 'BenchPeerCommand' };
