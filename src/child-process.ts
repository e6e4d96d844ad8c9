/**
 * Signalling and reaping a ChildProcess safely, for the transports and the
 * harness alike.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

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
 * Resolves with true once `child` has exited, or with false after `ms`
 * (without `ms`: only once it has exited).
 */
export function waitForExit(child: ChildProcess, ms?: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = ms === undefined ? undefined : setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Test hook: called with the pid of every process spawnReapedAtTeardown
 * starts, right after spawn() returns, before anything else is done with it.
 */
let afterSpawnHook: ((pid: number) => void) | undefined;

/** Sets (or, with undefined, removes) the hook spawnReapedAtTeardown calls after each spawn. */
export function setAfterSpawnHook(hook: ((pid: number) => void) | undefined): void {
  afterSpawnHook = hook;
}

/** The environment variable that carries spawnReapedAtTeardown's token (native/child_reaper.h, SpawnWindow). */
export const SPAWN_TOKEN_VARIABLE = 'FDBRIDGE_SPAWN_TOKEN';

/**
 * spawn(file, args, options), for a process this thread's environment must
 * reap if the environment ends before Node has reaped it: a connection's
 * command process or via must be reaped even when the thread that spawned
 * it ends without closing the connection (a worker terminated). Node reaps
 * a child only through the event loop of the thread that spawned it, and a
 * terminated worker's loop is gone, so the process, which exits once its
 * socket or stdin closes, would stay a zombie for the life of this process.
 * native.watchChild: SIGKILL after a grace of 5 s, and the fds the
 * environment held close once its children have exited. Until 'exit' is
 * emitted, Node has not reaped the process, so its pid still names it.
 */
export function spawnReapedAtTeardown(file: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  // From here until watchChild, a worker terminated finds the process among
  // its thread's new children (native.spawnBegins): this JavaScript may stop
  // at any call, the spawn's return included. Other code runs on this thread
  // inside spawn() (async_hooks init hooks, the 'child_process' diagnostics
  // channel's subscribers) and may start processes of its own there: ours is
  // the one whose environment holds the window's token entry. A copy of the
  // environment gets it, never the caller's options.env or process.env.
  const entry = native.spawnBegins();
  let child: ChildProcess;
  try {
    const eq = entry.indexOf('=');
    // Stryker disable next-line ConditionalExpression,EqualityOperator: the entry is 'NAME=TOKEN' (never '=' first: `>= 0` is the same test) or '' when the process cannot be told apart, which no test can make happen (forced true, not equivalent, would add a variable of an empty name); forced false and `<= 0` are killed
    const spawnOptions = eq > 0 ? { ...options, env: { ...(options.env ?? process.env), [entry.slice(0, eq)]: entry.slice(eq + 1) } } : options;
    child = spawn(file, args, spawnOptions);
  } catch (err) {
    native.spawnEnds();
    throw err;
  }
  if (child.pid === undefined) {
    native.spawnEnds();
    return child;
  }
  afterSpawnHook?.(child.pid);
  const watch = native.watchChild(child.pid);
  if (watch !== 0) child.once('exit', () => native.unwatchChild(watch));
  return child;
}

/**
 * Removes, from this process's environment, the token entry its parent's
 * spawnReapedAtTeardown gave it, so that the processes it starts do not
 * carry it. The parent still tells this process by it: /proc/PID/environ
 * shows the block set up at execve, which unsetenv() does not change.
 */
export function dropSpawnToken(): void {
  delete process.env[SPAWN_TOKEN_VARIABLE];
}
