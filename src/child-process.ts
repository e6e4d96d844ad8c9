/**
 * Signalling and reaping a ChildProcess safely, for the transports and the
 * harness alike.
 */
import type { ChildProcess } from 'node:child_process';

import { native } from './native';

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

/**
 * Has this thread's environment reap `child` if the environment ends before
 * Node has reaped it: a connection's command process or via must be reaped
 * even when the thread that spawned it ends without closing the connection
 * (a worker terminated). Node reaps a child only through the event loop of
 * the thread that spawned it, and a terminated worker's loop is gone, so the
 * process, which exits once its socket or stdin closes, would stay a zombie
 * for the life of this process. native.watchChild: SIGKILL after a grace of
 * 5 s, and the fds the environment held close once its children have
 * exited. Call it right after spawn(), in the same turn: until 'exit' is
 * emitted, Node has not reaped the process, so its pid still names it.
 */
export function reapedAtTeardown(child: ChildProcess): void {
  if (child.pid === undefined) return;
  const watch = native.watchChild(child.pid);
  if (watch !== 0) child.once('exit', () => native.unwatchChild(watch));
}
