/**
 * worker: the command runs in a worker_threads worker. The fd table is
 * shared, so duplication is a dup(2) whose ownership moves to the worker
 * through a shared ledger (no message per fd); calls travel as worker
 * messages carrying their arguments' and results' JSON (as the socket
 * transports' frames do: not a structured clone, which carries what JSON
 * does not and refuses what JSON carries), bounded like a socket's send queue: the worker counts the
 * calls it has read in shared memory, and a call made while those not yet
 * read are charged `sendQueueLimit` bytes rejects with QueueFullError.
 */
import { constants as osConstants } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

import { BaseConnection, queueFullError, type CommandLocation, type ConnectOptions } from '../connection';
import { normalizeCommandSpec } from '../command';
import { ClosedError, PeerExitedError, ProtocolError, RemoteError, SystemError, systemErrorOf, TimeoutError, type RemoteErrorInfo } from '../errors';
import { native, type FdList } from '../native';
import { requireDistFile } from '../paths';
import { resultFromJson } from '../json-value';
import { DEFAULT_SEND_QUEUE_LIMIT } from '../socket';
import { SharedFdLedger } from './shared-ledger';

/** Messages from the worker entry. */
export type WorkerToClient =
  | { type: 'ready'; threadId: number }
  /** Its loop's fds could not be registered (native.ownLoopFds -1): the thread ends, start another. */
  | { type: 'restart' }
  | { type: 'failed'; error: RemoteErrorInfo }
  /** `json`: resultToJson of what the method returned. */
  | { type: 'result'; id: number; json: string }
  | { type: 'error'; id: number; error: RemoteErrorInfo }
  | { type: 'closed' };

/** Messages to the worker entry. */
/** `callJson`: callToJson of the call (its method and arguments). */
export type ClientToWorker = { type: 'call'; id: number; method: string; callJson: string } | { type: 'close' };

/** What a call is charged against the queue besides its JSON (as a socket's queued message). */
const CALL_OVERHEAD = 256;

/** What the worker entry gets as workerData. */
export interface WorkerData {
  command: ReturnType<typeof normalizeCommandSpec>;
  ledger: SharedArrayBuffer;
  /** The ledger's closer owner (SharedFdLedger.owner). */
  ledgerOwner: number;
  /** Int32 0: how many call messages the worker has read (it adds 1 as each arrives; wraps). */
  reads: SharedArrayBuffer;
  /** The loop start (native.loopStartBegins) the worker ends as it registers its loop's fds. */
  loopStart: number;
  /** Test hook (holdWorkerStarts): Int32 0 set to 1 once the worker's loop exists, then it waits until Int32 1 is not 0. */
  startHold?: SharedArrayBuffer;
}

/** How many times connect starts a worker whose loop's fds could not be registered (RestartWorker) before it gives up. */
const MAX_STARTS = 3;

/** A start whose thread answered 'restart': its loop opened an fd at the number of a libuv stream of ours still to close it. */
class RestartWorker extends Error {
  /** What connect rejects with once `starts` starts all ended so. */
  error(starts: number): SystemError {
    return new SystemError(
      osConstants.errno.EBADF,
      'connect',
      `worker: ${starts} worker threads in a row opened an event-loop fd at the number of an fd of fdbridge's (a stream's) that ` +
        'the program closed behind its back as the thread started; closing an fd fdbridge made is the program\'s bug',
    );
  }
}

/**
 * libuv's messages (uv_strerror) for the errnos of a full fd table. Node 24's
 * module loader puts only the message in the error it throws when the
 * package.json it looks up cannot be opened (ERR_INVALID_PACKAGE_CONFIG,
 * "Cannot read package config PATH: too many open files.").
 */
const FULL_TABLE_MESSAGES: readonly (readonly [name: string, message: string])[] = [
  ['EMFILE', 'too many open files'],
  ['ENFILE', 'file table overflow'],
];

/**
 * What connect rejects with for `err`, the worker's 'error' before it was
 * ready, when a system call failed (the fd table full, most often): a
 * SystemError with its errno. Node reports a failed start of the thread's
 * event loop (uv_loop_init in node_worker.cc) as ERR_WORKER_INIT_FAILED
 * with only the errno's name in the message; a failed open of the entry
 * file as the fs error thrown in the thread (errno and syscall kept); a
 * failed open of a package.json on the way as ERR_INVALID_PACKAGE_CONFIG
 * with only libuv's message for the errno. Any other error is the worker's
 * own and passes unchanged.
 */
function workerStartError(err: Error): Error {
  const what = `connect: the worker could not be started (${err.message})`;
  const errnos = osConstants.errno as Record<string, number | undefined>;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ERR_WORKER_INIT_FAILED') {
    const name = /\b(E[A-Z0-9]+)$/.exec(err.message)?.[1];
    return systemErrorOf(err, 'uv_loop_init', what, name === undefined ? undefined : errnos[name]) ?? err;
  }
  if (code === 'ERR_INVALID_PACKAGE_CONFIG') {
    const name = FULL_TABLE_MESSAGES.find(([, message]) => err.message.includes(message))?.[0];
    return systemErrorOf(err, 'open', what, name === undefined ? undefined : errnos[name]) ?? err;
  }
  const syscall = (err as NodeJS.ErrnoException).syscall;
  return systemErrorOf(err, typeof syscall === 'string' ? syscall : 'worker', what) ?? err;
}

/** Test hook: set, each worker started is held before it registers its loop's fds (see WorkerData.startHold). */
let startHold: SharedArrayBuffer | undefined;

/** Sets (or, with undefined, removes) the flags the next workers started are held on. */
export function setWorkerStartHold(flags: SharedArrayBuffer | undefined): void {
  startHold = flags;
}

/**
 * The calls posted to the worker and not yet read by it, with what each is
 * charged: the worker reads messages in the order they were posted, so the
 * count it publishes says which have left the queue.
 */
class CallQueue {
  readonly limit: number;
  #reads: Int32Array;
  #seen = 0;
  #charges: number[] = [];
  #head = 0;
  #sampled = false;
  readonly #unsample = (): void => {
    this.#sampled = false;
  };
  bytes = 0;

  constructor(reads: SharedArrayBuffer, limit: number) {
    this.#reads = new Int32Array(reads);
    this.limit = limit;
  }

  get messages(): number {
    return this.#charges.length - this.#head;
  }

  /**
   * Drops the calls the worker has read, as seen once per run of this
   * thread's code: the worker reads concurrently, and a burst made in one
   * run must meet the queue as it was when the run began (as a socket's
   * queue, which drains only between runs), so that what it gets accepted
   * is a prefix of the burst, never a call here and there past a refusal.
   */
  update(): void {
    if (this.#sampled) return;
    this.#sampled = true;
    queueMicrotask(this.#unsample);
    const read = Atomics.load(this.#reads, 0);
    for (; ((read - this.#seen) | 0) > 0 && this.#head < this.#charges.length; this.#seen = (this.#seen + 1) | 0) {
      this.bytes -= this.#charges[this.#head++] as number;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#charges.length) {
      this.#charges = this.#charges.slice(this.#head);
      this.#head = 0;
    }
  }

  get full(): boolean {
    this.update();
    return this.bytes >= this.limit;
  }

  push(charge: number): void {
    this.#charges.push(charge);
    this.bytes += charge;
  }
}

/** What a call is charged: its arguments' JSON (what a socket transport would send) plus the overhead. */
function chargeOf(callJson: string): number {
  return callJson.length + CALL_OVERHEAD;
}

interface Pending {
  method: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class WorkerConnection extends BaseConnection {
  readonly transport = 'worker' as const;
  readonly location: CommandLocation;
  #worker: Worker;
  #ledger: SharedFdLedger;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #exit: PeerExitedError | undefined;
  #exited: Promise<void>;
  #onClosed: (() => void) | undefined;

  static async open(options: ConnectOptions): Promise<WorkerConnection> {
    const command = normalizeCommandSpec(options.command);
    const limit = options.sendQueueLimit ?? DEFAULT_SEND_QUEUE_LIMIT; // checked by connect
    // A thread whose loop opened an fd at the number of a libuv stream of
    // ours that the program closed behind our back as it started ends
    // (RestartWorker); the next start puts a placeholder at that number
    // first (native.loopStartBegins), so one more start is enough unless the
    // program closes another such fd meanwhile.
    // One deadline for every start: options.timeoutMs bounds the connect (a monotonic clock: a step of the wall clock changes nothing).
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = performance.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await WorkerConnection.#start(command, limit, options, timeoutMs, deadline);
      } catch (err) {
        if (!(err instanceof RestartWorker) || attempt === MAX_STARTS) throw err instanceof RestartWorker ? err.error(attempt) : err;
      }
    }
  }

  /** One start of the worker: its connection once the command is ready. */
  static async #start(
    command: ReturnType<typeof normalizeCommandSpec>,
    limit: number,
    options: ConnectOptions,
    timeoutMs: number,
    deadline: number,
  ): Promise<WorkerConnection> {
    const ledger = SharedFdLedger.create();
    const reads = new SharedArrayBuffer(4);
    const entry = requireDistFile('src/transports/entries/worker-main.js');
    // The new thread's loop opens its fds at the lowest free numbers before
    // any of its code runs; until it has registered them, a number a caller
    // names that could be one of them is refused (native.loopStartBegins).
    const loopStart = native.loopStartBegins();
    let worker: Worker;
    try {
      worker = new Worker(entry, {
        workerData: { command, ledger: ledger.buffer, ledgerOwner: ledger.owner, reads, loopStart, ...(startHold ? { startHold } : {}) } satisfies WorkerData,
      });
    } catch (err) {
      native.loopStartEnds(loopStart);
      throw err;
    }
    try {
      // The connection is made, and listens for the worker's messages and
      // its exit, in the handler of 'ready' itself, not after an await: a
      // worker that ends right after it is ready may have its ready and its
      // end heard in one turn, Worker then emitting 'message' and 'exit'
      // with no microtask between, and an 'exit' listener added later would
      // never run (calls waiting forever, the given fds never swept).
      return await new Promise<WorkerConnection>((resolve, reject) => {
        const timer = setTimeout(() => reject(new TimeoutError(`connect: the worker's command was not ready within ${timeoutMs} ms (options.timeoutMs)`)), Math.max(0, deadline - performance.now()));
        const done = (): void => {
          clearTimeout(timer);
          worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        };
        const onMessage = (m: WorkerToClient): void => {
          done();
          if (m.type === 'ready') resolve(new WorkerConnection(worker, ledger, new CallQueue(reads, limit), m.threadId, options.onCommandClosed));
          else if (m.type === 'failed') reject(new RemoteError('constructor', m.error));
          else if (m.type === 'restart') reject(new RestartWorker());
          else reject(new ProtocolError(`connect: the worker answered with a ${m.type} message before it was ready`));
        };
        const onError = (err: Error): void => {
          done();
          reject(workerStartError(err));
        };
        const onExit = (code: number): void => {
          done();
          reject(new PeerExitedError('connect', { transport: 'worker', pid: process.pid, exitCode: code, signal: null }));
        };
        worker.on('message', onMessage).on('error', onError).on('exit', onExit);
      });
    } catch (err) {
      await worker.terminate();
      // Its thread is gone, and its loop's fds with it (registered or not).
      native.loopStartEnds(loopStart);
      ledger.sweep();
      await ledger.swept();
      throw err;
    }
  }

  #queue: CallQueue;

  private constructor(
    worker: Worker,
    ledger: SharedFdLedger,
    queue: CallQueue,
    threadId: number,
    onCommandClosed: ConnectOptions['onCommandClosed'],
  ) {
    super(onCommandClosed);
    this.#queue = queue;
    this.#worker = worker;
    this.#ledger = ledger;
    this.location = { transport: 'worker', pid: process.pid, threadId };
    worker.on('message', (m: WorkerToClient) => this.#onMessage(m));
    // An uncaught exception in the worker: 'exit' follows and settles everything.
    worker.on('error', () => undefined);
    this.#exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        // Nobody is left to own what the worker was given and did not adopt.
        this.#ledger.sweep();
        this.#exit ??= new PeerExitedError('call', {
          transport: 'worker',
          pid: process.pid,
          threadId,
          exitCode: code,
          signal: null,
        });
        this.#failPending((method) =>
          this.#onClosed
            ? new ClosedError(`${method} failed: the worker connection was closed`)
            : new PeerExitedError(`${method}`, {
                transport: 'worker',
                pid: process.pid,
                threadId,
                exitCode: code,
                signal: null,
              }),
        );
        resolve();
      });
    });
  }

  /** The worker itself, e.g. to terminate it in a test. */
  get worker(): Worker {
    return this.#worker;
  }

  protected override brokenError(): Error | undefined {
    return this.#exit;
  }

  /** dupOneSync: nothing here waits; a throw becomes the rejection. */
  protected async dupOne(fd: number): Promise<number> {
    return this.dupOneSync(fd);
  }

  /** The worker shares this process's fd table: the duplicate is made here, into its ledger. */
  protected dupOneSync(fd: number): number {
    if (this.#exit) throw this.#exit;
    // Above the floor: never a number the caller closed and may still name.
    return this.#ledger.give(fd);
  }

  protected async dupMany(fds: FdList, above: number): Promise<number[]> {
    if (this.#exit) throw this.#exit;
    return this.#ledger.giveAll(fds, above);
  }

  /** Through the ledger: a number the program closed behind fdbridge's back and opened a file of its own at keeps that file. */
  protected release(fds: number[]): Promise<void> {
    return this.#ledger.release(fds);
  }

  protected callRemote(method: string, callJson: string): Promise<unknown> {
    if (this.#exit) return Promise.reject(this.#exit);
    const queue = this.#queue;
    if (queue.full) {
      return Promise.reject(
        queueFullError(`${method}()`, `the worker (thread ${this.location.threadId})`, {
          queuedBytes: queue.bytes,
          queuedMessages: queue.messages,
          limit: queue.limit,
        }),
      );
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { method, resolve, reject });
      try {
        this.#worker.postMessage({ type: 'call', id, method, callJson } satisfies ClientToWorker);
      } catch (err) {
        this.#pending.delete(id);
        reject(err);
        return;
      }
      queue.push(chargeOf(callJson));
    });
  }

  /** What the queue to the worker holds: calls posted and not yet read, and their charge in bytes. */
  get queued(): { messages: number; bytes: number } {
    this.#queue.update();
    return { messages: this.#queue.messages, bytes: this.#queue.bytes };
  }

  protected async closeTransport(): Promise<void> {
    this.#failPending((method) => new ClosedError(`${method} failed: the worker connection was closed`));
    if (!this.#exit) {
      const closed = new Promise<void>((resolve) => (this.#onClosed = resolve));
      this.#worker.postMessage({ type: 'close' } satisfies ClientToWorker);
      // The worker runs the command's close(), sweeps its fds and exits; a
      // worker that does not is terminated.
      const timer = setTimeout(() => void this.#worker.terminate(), 5000);
      await Promise.race([closed.then(() => this.#exited), this.#exited]);
      clearTimeout(timer);
    }
    await this.#exited;
    // What the exit swept (a worker that ended without sweeping).
    await this.#ledger.swept();
    // The worker shared this process's fd table; it is gone now.
    await this.commandClosed();
  }

  #onMessage(m: WorkerToClient): void {
    if (m.type === 'closed') {
      this.#onClosed?.();
      return;
    }
    if (m.type !== 'result' && m.type !== 'error') return;
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.type === 'result') p.resolve(resultFromJson(m.json));
    else p.reject(new RemoteError(p.method, m.error));
  }

  #failPending(makeError: (method: string) => Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(makeError(`${p.method}()`));
  }
}
