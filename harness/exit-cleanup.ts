/**
 * Cleanups that must run however this process ends, short of SIGKILL: a
 * daemon to kill, a temporary directory to remove. Whoever makes the thing
 * registers its cleanup where it makes it, and unregisters it once it has
 * cleaned up itself. A process.exit() (a scenario's own, or a signal turned
 * into an exit: exitOnSignals) runs what is still registered.
 *
 * They run from an 'exit' listener, so they must be synchronous: kill
 * without waiting, rmSync.
 */
import { lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';

const pending = new Set<() => void>();

function runPending(): void {
  for (const cleanup of [...pending]) {
    pending.delete(cleanup);
    try {
      cleanup();
    } catch {
      // One failed cleanup must not keep the others from running.
    }
  }
}

/** Runs `cleanup` (synchronous) if the process exits before the returned function is called. */
export function cleanupOnExit(cleanup: () => void): () => void {
  if (pending.size === 0) process.on('exit', runPending);
  pending.add(cleanup);
  return () => {
    pending.delete(cleanup);
    if (pending.size === 0) process.off('exit', runPending);
  };
}

/**
 * A temporary directory of this process's, `$TMPDIR/<prefix><pid>-XXXXXX`,
 * removed however the process ends short of SIGKILL (cleanupOnExit), or by
 * `remove()`. What a SIGKILLed process could not remove, the next one that
 * makes a directory with the same prefix does (removeAbandonedDirs).
 */
export function ownTempDir(prefix: string): { path: string; remove(): void } {
  removeAbandonedDirs(tmpdir(), prefix);
  return removedOnExit(mkdtempSync(join(tmpdir(), `${prefix}${process.pid}-`)));
}

/** `path` (a directory), removed however the process ends short of SIGKILL (cleanupOnExit), or by `remove()`. */
export function removedOnExit(path: string): { path: string; remove(): void } {
  const remove = (): void => rmSync(path, { recursive: true, force: true });
  const forget = cleanupOnExit(remove);
  return {
    path,
    remove() {
      remove();
      forget();
    },
  };
}

/**
 * Removes the directories `<prefix><pid>-XXXXXX` in `dir` (ownTempDir's) whose
 * process is gone: no process has that pid (kill(pid, 0) fails with ESRCH).
 * Only real directories (not symlinks) of this user are touched. A pid that
 * was reused keeps its directory until that process is gone too; one of
 * another pid namespace sharing this TMPDIR would look gone, so each
 * namespace (container) wants a TMPDIR of its own. A row process that
 * outlives its run (harness/run-child.ts) is ending itself and may find
 * the run's directories gone first: it removes them with force anyway.
 * Returns the paths removed.
 */
export function removeAbandonedDirs(dir: string, prefix: string): string[] {
  const literal = prefix.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
  const pattern = new RegExp(`^${literal}(\\d+)-[A-Za-z0-9]{6}$`);
  const uid = process.getuid?.();
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const pid = Number(pattern.exec(name)?.[1] ?? 0);
    if (pid <= 0 || pid === process.pid || processExists(pid)) continue;
    const path = join(dir, name);
    try {
      const st = lstatSync(path);
      if (!st.isDirectory() || st.uid !== uid) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Removed meanwhile by another run, or not ours to remove: left alone.
    }
  }
  return removed;
}

/** Whether a process `pid` exists (EPERM: it does, another user's). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** The conventional exit status of a process ended by `signal`: 128 + its number. */
export function signalStatus(signal: NodeJS.Signals): number {
  return 128 + (osConstants.signals[signal] ?? 0);
}

/**
 * The signals that ask a run to stop: Ctrl-C, kill's default, and the
 * hangup a closing terminal or a dropped ssh session sends its foreground
 * process group. Node's default for each exits without running anything.
 */
export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Calls `listener` on every STOP_SIGNALS signal until the returned function is called. */
export function onStopSignals(listener: (signal: NodeJS.Signals) => void): () => void {
  for (const signal of STOP_SIGNALS) process.on(signal, listener);
  return () => {
    for (const signal of STOP_SIGNALS) process.off(signal, listener);
  };
}

/**
 * Until the returned function is called, a STOP_SIGNALS signal exits the
 * process with 128 + the signal's number, running the registered cleanups
 * (instead of Node's default, which exits running nothing).
 */
export function exitOnSignals(): () => void {
  return onStopSignals((signal) => process.exit(signalStatus(signal)));
}
