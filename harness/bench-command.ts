/**
 * The command `fdbridge bench` runs on the far side of every connection. It
 * does nothing timed: it closes, in batches and outside the timed regions,
 * what the benchmark duplicated into its context, and reports its process's
 * fd count and RSS so that the long run can prove nothing piles up there.
 *
 * No tinybench here: this module runs in workers, children and helpers.
 */
import { readdirSync } from 'node:fs';

import type { CommandContext, CommandSpec } from '../src';
import { closeFd } from '../src/fd';
import { distPath } from '../src/paths';

/** Open fds of the calling process (the listing's own directory fd included, the same every time). */
export function countOpenFds(): number {
  return readdirSync('/proc/self/fd').length;
}

export class BenchCommand {
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

  /** This process's open-fd count and resident set size in bytes. */
  usage(): { fds: number; rss: number } {
    return { fds: countOpenFds(), rss: process.memoryUsage.rss() };
  }
}

/** The spec naming BenchCommand (compiled JavaScript under dist/). */
export const BENCH_COMMAND: CommandSpec = { module: distPath('harness/bench-command.js'), export: 'BenchCommand' };
