/**
 * Ending a process when the one that started it ends, however it ends
 * (SIGKILL included): a pidfd of the parent, watched on the event loop.
 *
 * Why a pidfd, not the alternatives:
 * - prctl(PR_SET_PDEATHSIG) fires when the *thread* that forked exits, not
 *   the process: a daemon spawned from a worker thread would be killed when
 *   that worker ends. Node's spawn() has no hook between fork and exec, so
 *   it could only be set after exec, with the same race to close as below.
 * - A pipe whose write end only the parent holds ends with the parent too,
 *   but the parent must keep that end open for the child's whole life: one
 *   more fd in the parent tied to the child, which changes under the leak
 *   oracle each time a row restarts the daemon.
 * - A pidfd of the parent is process-wide (it turns readable once the whole
 *   thread group has exited, pidfd_open(2)), costs the parent nothing, and
 *   the daemon already watches its clients' pidfds the same way.
 *
 * The race: the parent may die before the child opens its pidfd (and its pid
 * may even be reused by then). So the parent names itself (its pid, passed
 * down), and the pidfd is trusted only if, once it is open, that pid is still
 * this process's parent: a child is reparented before its dead parent's pid
 * can be freed, so a match proves the pidfd names the live parent.
 */
import { closeOwnFds } from './fd';
import { native } from './native';

/** Stops watching; idempotent. */
export interface ParentWatch {
  close(): void;
}

/**
 * Calls `onExit()` once, when process `parentPid`, which must be this
 * process's parent, has exited. Throws if it is not (it has exited already,
 * and this process was reparented). The watch does not keep the event loop
 * alive.
 */
export function watchParent(parentPid: number, onExit: () => void): ParentWatch {
  if (!Number.isSafeInteger(parentPid) || parentPid <= 0) throw new RangeError(`watchParent: ${parentPid} is not a pid`);
  let pidfd: number;
  try {
    // Ours, numbered above the fd floor and registered (native.ts, socketpair's `own`).
    // Stryker disable next-line BooleanLiteral: not equivalent, but as the caller's the pidfd would hold a low number only until this synchronous call returns (closed below; ExitWatch keeps a duplicate of its own), where no test can see it
    pidfd = native.pidfdOpen(parentPid, true);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new Error(`the parent process (pid ${parentPid}) has already exited`, { cause: err });
    throw err;
  }
  try {
    if (process.ppid !== parentPid) {
      throw new Error(`pid ${parentPid} is not this process's parent (pid ${process.ppid} is): the one that started it has already exited`);
    }
    let fired = false;
    // Closed and acted on one turn later, not inside the native callback.
    const watch = new native.ExitWatch(pidfd, () =>
      setImmediate(() => {
        if (fired) return;
        // Stryker disable next-line BooleanLiteral: read again only by a second run of this callback or by close(), which sets it itself; the watch is closed on the next line, so it calls back no more
        fired = true;
        watch.close();
        onExit();
      }),
    );
    watch.unref();
    return {
      close() {
        fired = true;
        watch.close();
      },
    };
  } finally {
    // ExitWatch keeps its own duplicate.
    closeOwnFds([pidfd]);
  }
}
