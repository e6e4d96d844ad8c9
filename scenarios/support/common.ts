/**
 * Small helpers shared by the scenarios (not a scenario itself: the runner
 * loads only `*.scenario.js`). They use the public API, the fd helpers and
 * node builtins only.
 */
import { execFile } from 'node:child_process';
import { readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { closeFds, fdIdentity, PROBE_COMMAND, type Connection, type WireIdentity } from '../../src';
import { packageRoot } from '../../src/paths';
import type { BenchCase, ScenarioContext } from '../../harness/types';

/** The fdbridge CLI, as built (dist/harness/cli.js). */
export const CLI: string = join(packageRoot, 'dist', 'harness', 'cli.js');

/** The identity of a local fd as the far side reports it (strings: JSON has no bigint). */
export function wireIdentity(fd: number): WireIdentity {
  const id = fdIdentity(fd);
  return { dev: String(id.dev), ino: String(id.ino), type: id.type };
}

/**
 * Settles every promise (none rejects unhandled); also the indices in the
 * order they settled, to check that requests were answered in the order made.
 */
export async function settleInOrder<T>(
  promises: Array<Promise<T>>,
): Promise<{ results: Array<PromiseSettledResult<T>>; order: number[] }> {
  const order: number[] = [];
  promises.forEach((p, i) =>
    p.then(
      () => order.push(i),
      () => order.push(i),
    ),
  );
  return { results: await Promise.allSettled(promises), order };
}

/** (dev, ino, type) of fds in the command's context, read there. */
export function remoteIdentities(conn: Connection, fds: readonly number[]): Promise<WireIdentity[]> {
  return conn.call<WireIdentity[]>('identities', fds);
}

/**
 * Has the (probe) command adopt and close fds that were duplicated into its
 * context: both calls go out at once (they run in order on the far side).
 */
export async function closeRemote(conn: Connection, fds: readonly number[]): Promise<void> {
  if (fds.length === 0) return;
  await Promise.all([conn.call('adopt', fds), conn.call('closeAdopted', fds)]);
}

/** The far side's open-fd table (ProbeCommand.openFds) as a map. */
export async function remoteFdTable(conn: Connection): Promise<Map<number, string>> {
  return new Map(await conn.call<Array<[number, string]>>('openFds'));
}

/** Closes every fd in `fds`, ignoring ones already closed. */
export function closeAll(fds: Iterable<number>): void {
  closeFds(fds);
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node dist/harness/cli.js ...args` with its stdio captured. No time
 * limit of its own: a loaded machine or a sanitized build slows a run past
 * any fixed one with nothing wrong. The CLI ends by its own deadlines
 * (connect's timeoutMs), and a run that hangs holds the row, which its
 * --timeout bounds.
 */
export function runCli(args: readonly string[], options: { cwd: string }): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: options.cwd, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number | null) : 0;
        resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
      },
    );
  });
}

/**
 * The Unix sockets process `pid` holds, as /proc/net/unix rows (their
 * flags and path), found through its fds' socket inodes.
 */
function unixSocketsOf(pid: number): Array<{ flags: number; path: string }> {
  const inodes = new Set<string>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${name}`));
      if (m?.[1]) inodes.add(m[1]);
    } catch {
      // closed while we looked
    }
  }
  const rows: Array<{ flags: number; path: string }> = [];
  // Num RefCount Protocol Flags Type St Inode Path
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const [, , , flags, , , inode, path] = line.trim().split(/\s+/);
    if (inode && path && inodes.has(inode)) rows.push({ flags: parseInt(flags ?? '0', 16), path });
  }
  return rows;
}

/**
 * The listening Unix socket of process `pid` (e.g. the helper daemon the
 * harness started), as `fdbridge ... --socket` takes it: a path, or `@name`
 * for an abstract name: the row in the listening state (__SO_ACCEPTCON).
 */
export function listeningSocketOf(pid: number): string | undefined {
  return unixSocketsOf(pid).find((s) => (s.flags & 0x10000) !== 0)?.path;
}

/** The filesystem paths process `pid`'s Unix sockets are bound to. */
export function boundSocketPathsOf(pid: number): string[] {
  return unixSocketsOf(pid)
    .map((s) => s.path)
    .filter((path) => !path.startsWith('@'));
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The `--transport T [--socket PATH]` arguments that make a CLI subprocess
 * use this scenario's transport: for 'helper', the socket of the run's
 * daemon (ctx.helper), else the one the helper listens on, read from /proc.
 */
export async function cliTransportArgs(ctx: ScenarioContext): Promise<string[]> {
  if (ctx.transport !== 'helper') return ['--transport', ctx.transport];
  let socket = ctx.helper?.socketPath;
  if (socket === undefined) {
    const conn = await ctx.connect(PROBE_COMMAND);
    const pid = conn.location.pid;
    await conn.close();
    socket = listeningSocketOf(pid);
    if (socket === undefined) ctx.skip(`cannot find the listening socket of the helper daemon (pid ${pid}) in /proc`);
  }
  return ['--transport', 'helper', '--socket', socket];
}

/**
 * How many far-side duplicates a bench case lets pile up before it closes
 * them (one adopt + closeAdopted pair per batch, untimed).
 */
const CLOSE_BATCH = 256;

/**
 * A bench case whose timed operation is `dup` (one duplication round trip,
 * or one batch); what it made is closed on the far side untimed, in batches
 * of CLOSE_BATCH, so nothing accumulates. Why batches: tinybench's time
 * budget counts only the timed calls, so an operation of about a
 * microsecond (direct, worker) runs some 400,000 times in 500 ms; closing
 * after every call would add two worker round trips (about 50 µs, mostly
 * futex wake-ups between the threads) to each, 20 s of wall clock per
 * worker row. `teardown` closes the rest, then the connection, then the
 * client's own fds.
 */
export function dupBenchCase(conn: Connection, dup: () => Promise<number[]>, teardown: () => void): BenchCase {
  let made: number[] = [];
  const closeMade = async (): Promise<void> => {
    const fds = made;
    made = [];
    await closeRemote(conn, fds);
  };
  return {
    fn: async () => {
      made.push(...(await dup()));
    },
    afterEach: () => (made.length >= CLOSE_BATCH ? closeMade() : undefined),
    teardown: async () => {
      try {
        await closeMade();
        await conn.close();
      } finally {
        teardown();
      }
    },
  };
}

/**
 * The common bench: dupBenchCase on a probe connection, each call one
 * duplication of `fd`. `teardown` closes the client's own fds.
 */
export async function dupOneBenchCase(ctx: ScenarioContext, fd: number, teardown: () => void): Promise<BenchCase> {
  const conn = await ctx.connect(PROBE_COMMAND);
  return dupBenchCase(conn, async () => [await conn.dupFileDescriptor(fd)], teardown);
}
