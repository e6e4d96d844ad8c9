/**
 * What fdbridge's own tests observe or fake inside the native layer (and
 * the helper daemon's reclaim pacing), and nothing else: counters of what
 * the addon holds, a process-exit watch and a simulated older kernel. Not part of the package's API (neither index.ts nor
 * testing.ts exports it): these name internals that may change with the addon.
 *
 * Tests outside test/native reach the addon only through this module, the
 * public fd operations (fd.ts) and the raw-socket helpers (testing.ts);
 * test/structure/native-is-private.test.ts holds them to it.
 */
import { constants as osConstants } from 'node:os';
import { parentPort } from 'node:worker_threads';

import { setAfterSpawnHook } from './child-process';
import { SystemError } from './errors';
import { native, type NativeExitWatch } from './native';
import { ReclaimPacing } from './transports/serve';
import { setWorkerStartHold } from './transports/worker';

/** The addon's own read of the lanes' fds, whatever afterLaneWriterFdsRead or beforeLaneWriterFdsRead put in its place. */
const readLaneWriterFds = native.laneWriterFds;

/** The fds log lines being written hold now (each line's copy of its log fd and the eventfd it waits on). */
export function laneWriterFds(): number[] {
  return readLaneWriterFds();
}

/**
 * Calls `hook(n)` right after each read of the lanes' fds by fdbridge from
 * now on (n: 0 for the first read, 1 for the next, ...), until called with
 * undefined; this module's laneWriterFds() is not counted. A leak check
 * reads them before the fd tables and again after: a hook that hands a
 * line over at its first read makes that line's copy between the two.
 */
export function afterLaneWriterFdsRead(hook: ((n: number) => void) | undefined): void {
  hookLaneWriterFdsReads(hook, 'after');
}

/**
 * As afterLaneWriterFdsRead, but `hook(n)` runs right before each read: a
 * hook that ends a line's write at a check's second read makes that line's
 * copy leave the lanes after the fd tables were read and before the check
 * looks at the lanes again.
 */
export function beforeLaneWriterFdsRead(hook: ((n: number) => void) | undefined): void {
  hookLaneWriterFdsReads(hook, 'before');
}

function hookLaneWriterFdsReads(hook: ((n: number) => void) | undefined, when: 'before' | 'after'): void {
  if (hook === undefined) {
    native.laneWriterFds = readLaneWriterFds;
    return;
  }
  let n = 0;
  native.laneWriterFds = (): number[] => {
    const at = n++;
    if (when === 'before') hook(at);
    const fds = readLaneWriterFds();
    if (when === 'after') hook(at);
    return fds;
  };
}

/**
 * Hands `data` to a thread of `owner`'s log lane, to be written into a
 * copy of `fd`, as the log command hands each line (native laneWrite): the
 * copy is made, and listed as the lanes' (laneWriterFds), before this
 * returns. `written` resolves once the copy is closed, with the bytes
 * written or -errno (-ECANCELED once cancel() ended the write).
 */
export function startLaneWrite(fd: number, data: Uint8Array, owner: number): { written: Promise<number>; cancel(): void } {
  const group = native.laneGroup();
  const written = new Promise<number>((resolve) => native.laneWrite(fd, data, owner, group, resolve));
  return { written, cancel: () => native.laneWriteCancel(group) };
}

/**
 * Counts the reclaim scans of adopted fds (ReclaimPacing's: one statx per
 * adopted fd in the scope) that the helper daemons of this thread run from
 * now on, those their pacing holds back not counted, until stop(): every
 * ReclaimPacing's run() counts the scan it is given as that scan starts.
 */
export function countReclaimScans(): { readonly scans: number; stop(): void } {
  const pacing = ReclaimPacing.prototype;
  const run = pacing.run;
  let scans = 0;
  pacing.run = function (this: ReclaimPacing, scan: () => number): number {
    return run.call(this, () => {
      scans++;
      return scan();
    });
  };
  return {
    get scans(): number {
      return scans;
    },
    stop(): void {
      pacing.run = run;
    },
  };
}

/** How many fds fdbridge holds for itself in this process now (dupHigh, pins, ledgers, its own sockets). */
export function ownedFdCount(): number {
  return native.ownedFdCount();
}

/**
 * A copy of `fd` that fdbridge holds for itself (dupHigh: above the floor,
 * registered, refused with EBADF wherever a caller names it), as its pins
 * are. closeOwnFd closes it as fdbridge closes its own; closeFd refuses it.
 */
export function holdOwnCopy(fd: number): number {
  return native.dupHigh(fd);
}

/** The registration of `fd` as one fdbridge holds for itself (never reused), or 0 when it is not. */
export function fdRegistration(fd: number): number {
  return native.registration(fd);
}

/** Takes `fd` out of fdbridge's registry if it still has `registration`: for an fd of fdbridge's that a test closed behind its back. */
export function forgetOwnFd(fd: number, registration: number): void {
  native.disown(fd, registration);
}

/**
 * Whether `registration` ended with fdbridge finding its fd closed by someone
 * else while a leak check watched (noted only while one does, and forgotten
 * when the last one stops watching).
 */
export function closedByOther(registration: number): boolean {
  return native.closedByOther(registration);
}

/** How many leak-check holds of baseline files (FdTableHold) are alive in this process: 0 between checks. */
export function liveFdTableHolds(): number {
  return native.liveHolds();
}

/**
 * A POSIX record lock (fcntl F_SETLK) of the whole file through `fd`, owned
 * by this process: any close of any fd of the file by this process drops it.
 */
export function posixLock(fd: number, type: 'read' | 'write' | 'unlock'): void {
  native.posixLock(fd, type);
}

/**
 * The lock a write OFD lock through `fd` would meet: 'none' when the file
 * is unlocked. OFD locks conflict with their own process's POSIX locks, so
 * this tells whether this process still holds one.
 */
export function conflictingLock(fd: number): 'read' | 'write' | 'none' {
  return native.conflictingLock(fd);
}

/** UnixSocket objects of the addon (every environment) not yet garbage collected, open or closed. */
export function socketObjectsAlive(): number {
  return native.socketsAlive();
}

/** The background closer's threads now, how many are in a close, its caps (shared, per owner), and its reserve (see reserveCloserThreads). */
export function closerThreads(): { threads: number; busy: number; made: number; max: number; perOwner: number; reserve: number; reservedOwners: number; minReserve: number; maxReserve: number } {
  return native.closerThreads();
}

/**
 * How many threads a log lane may have (native laneWriters().perOwner): how
 * many lines of one uid a helper daemon writes at once. Once that many wait
 * for room in pipes nobody reads, the uid's other lines wait behind them.
 */
export function laneThreadsPerOwner(): number {
  return native.laneWriters().perOwner;
}

/** fds handed to the background closer and not closed yet. */
export function backgroundClosesPending(): number {
  return native.backgroundClosesPending();
}

/**
 * Ended environments (terminated worker threads) whose teardown still waits
 * for the command processes they started to exit, before it closes the fds
 * they held (see native.watchChild).
 */
export function reapsPending(): number {
  return native.reapsPending();
}

/**
 * Calls `onExit()` once, from the event loop's poll callback, when the
 * process of `pidfd` (borrowed: the watch keeps its own duplicate) has exited.
 * The watch keeps the loop alive until it fires or is closed.
 */
export function watchExit(pidfd: number, onExit: () => void): NativeExitWatch {
  return new native.ExitWatch(pidfd, onExit);
}

/**
 * Makes this process behave as on a kernel without SO_PASSRIGHTS (before
 * Linux 6.16): turning it off fails with ENOPROTOOPT, so sockets that should
 * refuse fds accept them and the receive paths must close and count what
 * arrives. Returns the function that restores the real option.
 */
export function simulateKernelWithoutPassRights(): () => void {
  const real = native.setPassRights;
  native.setPassRights = () => {
    throw new SystemError(osConstants.errno.ENOPROTOOPT, 'setsockopt(SO_PASSRIGHTS)');
  };
  return () => {
    native.setPassRights = real;
  };
}

/**
 * Makes each call of the addon's `name` throw `err` from now on, until the
 * returned function puts the real one back: for a test of what a failure
 * there leaves behind (a helper daemon's start that fails after it took
 * its share of the background closer and registered itself), or of a
 * kernel that lacks an option or a call (getPassRights: ENOPROTOOPT before
 * Linux 6.16; peerPidfd, SO_PEERPIDFD: ENOPROTOOPT before 6.5; pidfdGetfd:
 * ENOSYS before 5.6), or of a pull the native path leaves to JavaScript
 * (pidfdGetfdAll).
 */
export function failNativeCall(
  name: 'peerCred' | 'setPassRights' | 'getPassRights' | 'peerPidfd' | 'pidfdOpen' | 'pidfdGetfd' | 'pidfdGetfdAll',
  err: Error,
): () => void {
  const binding = native as unknown as Record<string, unknown>;
  const real = binding[name];
  binding[name] = (): never => {
    throw err;
  };
  return () => {
    binding[name] = real;
  };
}

/**
 * Calls `hook(pid)` (undefined: no more) in the thread that set it, each time
 * this thread spawns a command process or a via, right after the spawn and
 * before anything else is done with the process: where a worker terminated
 * in the middle of starting a connection stops.
 */
export function afterCommandProcessSpawn(hook: ((pid: number) => void) | undefined): void {
  setAfterSpawnHook(hook);
}

/**
 * Holds each worker thread the worker transport starts from now on (until
 * called with undefined) at the point where its event loop's fds exist and
 * are not yet registered as fdbridge's: the thread sets Int32 0 of `flags`
 * to 1 (with Atomics.notify), then waits until Int32 1 is not 0.
 */
export function holdWorkerStarts(flags: SharedArrayBuffer | undefined): void {
  setWorkerStartHold(flags);
}

/** Worker starts whose loop's fds are not registered yet (see native.loopStartBegins). */
export function loopStartsOpen(): number {
  return native.loopStartsOpen();
}

/**
 * The native calls that return fds as numbers (the library takes them over
 * or hands them on in its next step), and the callbacks by which a socket
 * hands JavaScript fds it received: 'onMessage' and 'onAccept' (a Socket's
 * callbacks), 'batch' (the batched sockets' dispatcher).
 */
export type NativeFdWindow =
  | 'socketpair' | 'listen' | 'listenAgain' | 'connect' | 'dgramSocket' | 'dup' | 'dupHigh' | 'dupAll' | 'pipe' | 'memfd'
  | 'eventfd' | 'peerPidfd' | 'pidfdOpen' | 'pidfdGetfd' | 'pidfdGetfdAll' | 'recvNow' | 'onMessage' | 'onAccept' | 'batch';

/**
 * For a test of what a worker thread's termination leaves behind, in that
 * worker: from now on, right after one of the native calls named returns
 * (before the library has done anything with its fds), or as one of the
 * callbacks named begins, the thread posts 'held' to its parent and blocks
 * for good (Atomics.wait that nobody ends), so that a terminate() stops its
 * JavaScript exactly there, between the native call and the step that
 * takes the fds over.
 */
export function stopInNativeFdWindows(windows: readonly NativeFdWindow[]): void {
  if (parentPort === null) throw new Error('stopInNativeFdWindows: only in a worker thread');
  const port = parentPort;
  const stop = (): void => {
    port.postMessage('held');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  };
  const binding = native as unknown as Record<string, unknown>;
  for (const name of windows) {
    if (name === 'onMessage' || name === 'onAccept' || name === 'batch') continue;
    const real = binding[name] as (...args: unknown[]) => unknown;
    binding[name] = (...args: unknown[]): unknown => {
      const made = real(...args);
      stop();
      return made;
    };
  }
  const holding = (fn: unknown): unknown =>
    typeof fn === 'function' ? (...args: unknown[]): unknown => (stop(), (fn as (...a: unknown[]) => unknown)(...args)) : fn;
  if (windows.includes('onMessage') || windows.includes('onAccept')) {
    const Real = native.Socket;
    const onMessage = windows.includes('onMessage');
    const onAccept = windows.includes('onAccept');
    // Called with `new`: the real Socket it returns is the object made.
    binding['Socket'] = function (fd: number, type: number, options: unknown, message?: unknown, accept?: unknown): object {
      return new Real(fd, type, options as never, (onMessage ? holding(message) : message) as never, (onAccept ? holding(accept) : accept) as never);
    };
  }
  if (windows.includes('batch')) {
    const real = native.setMessageBatchHandler;
    binding['setMessageBatchHandler'] = (dispatcher: unknown): void => real(holding(dispatcher) as never);
  }
}
