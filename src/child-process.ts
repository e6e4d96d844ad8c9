/**
 * Signalling a ChildProcess safely, for the transports and the harness alike.
 */
import type { ChildProcess } from 'node:child_process';

/**
 * Sends `signal` to `child` only if it was started and has not yet exited;
 * returns whether it was signalled.
 *
 * A spawn that failed with EMFILE or ENFILE leaves a ChildProcess with no
 * pid whose native handle Node keeps until its 'error' event, and kill() on
 * it signals whatever pid that handle holds: 0, that is kill(0, signal), the
 * caller's whole process group. A child whose exit was seen has been reaped:
 * its pid may already be someone else's.
 */
export function killIfSpawned(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return false;
  return child.kill(signal);
}
