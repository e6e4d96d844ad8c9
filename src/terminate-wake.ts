/**
 * worker.terminate() of a worker thread blocked in dupFileDescriptorSync.
 *
 * terminate() stops the worker's JavaScript (V8's TerminateExecution) and
 * asks its event loop to stop, then Node joins the thread; but a thread
 * inside a native call, asleep in poll(2), is not interrupted, and Node-API
 * has no hook that runs before that call returns. So terminate()'s promise
 * (and a process exit, which stops and joins every worker) waited out the
 * whole `timeoutMs`.
 *
 * So each worker thread that loads fdbridge registers its environment by
 * threadId with the addon, and its waits on itself poll an eventfd of the
 * thread's beside the socket (native/thread_wake.h). Every thread that
 * loads fdbridge wraps Worker.prototype.terminate: it wakes that worker's
 * waits, which end with the request kept pending (its late reply still
 * releases the duplicate it names) and a ClosedError, then lets Node stop
 * the worker's JavaScript. The main thread also wakes
 * every worker as the process exits ('exit': Node joins each worker then).
 *
 * Not woken: a worker terminated from a thread that never loaded fdbridge
 * (its Worker.prototype is its own), and a worker whose parent worker ends
 * (Node stops and joins it from the parent's teardown, where no JavaScript
 * runs).
 */
import { isMainThread, threadId, Worker } from 'node:worker_threads';

/** The addon's side (native/addon_env.cc). */
export interface TerminateWakeBinding {
  /** This environment is worker thread `threadId`'s: its waits poll its wake-up from now on. */
  wakeRegisterThread(threadId: number): void;
  /** Ends worker thread `threadId`'s waits on itself, now and from then on; false when it is not registered. */
  wakeThread(threadId: number): boolean;
  /** wakeThread of every registered worker thread. */
  wakeAllThreads(): void;
}

/** Marks a binding whose wrapper this thread has installed (a second copy of the library loads the same addon). */
// Stryker disable next-line StringLiteral: any key marks the binding as well; only this module reads it
const INSTALLED = Symbol.for('fdbridge.terminateWakeInstalled');

type Terminate = (this: Worker, ...args: unknown[]) => Promise<number>;

/**
 * Registers this thread (a worker's) for wake-ups and wraps this thread's
 * Worker.prototype.terminate to wake the worker it ends; on the main
 * thread, wakes every worker as the process exits. Once per binding and
 * thread.
 */
export function installTerminateWake(binding: TerminateWakeBinding): void {
  const marked = binding as unknown as Record<symbol, boolean>;
  if (marked[INSTALLED]) return;
  marked[INSTALLED] = true;
  if (!isMainThread) binding.wakeRegisterThread(threadId);
  // The prototype that holds terminate itself: a subclass of Worker (a
  // recorder's, src/fd-track.ts) made before or after this inherits it.
  // Node's Worker class defines terminate: the walk ends there at the latest.
  let proto: object = Worker.prototype;
  while (!Object.prototype.hasOwnProperty.call(proto, 'terminate')) proto = Object.getPrototypeOf(proto) as object;
  const holder = proto as { terminate: Terminate };
  const terminate = holder.terminate;
  holder.terminate = function (this: Worker, ...args: unknown[]): Promise<number> {
    // Woken first, while its JavaScript still runs: the wait's outcome is
    // made as usual (the request kept pending, the ClosedError), where
    // under a termination already asked for, V8 refuses to make the
    // promise and the object, and the call returns nothing (for which
    // dupFileDescriptorSync throws the same ClosedError). What runs after
    // the wait runs until the termination lands, a moment later; a wait it
    // begins meanwhile ends at once. (-1 for a thread already gone: none.)
    const id = this.threadId;
    // Stryker disable next-line EqualityOperator: `>=` would wake threadId 0 too, the main thread's, which no Worker has
    if (id > 0) binding.wakeThread(id);
    return terminate.apply(this, args);
  };
  if (isMainThread) process.on('exit', () => binding.wakeAllThreads());
}
