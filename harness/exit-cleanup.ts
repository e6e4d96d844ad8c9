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
import { constants as osConstants } from 'node:os';

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
