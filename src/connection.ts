/**
 * One connection interface, whatever the arrangement: the command runs in the
 * caller's thread, a worker thread, a child process or a helper daemon.
 */
import { ClosedError, QueueFullError, SystemError } from './errors';
import { validateFd } from './fd';
import { validateTimeoutMs } from './validate';
import { callToJson } from './json-value';
import type { CommandSpec, Remote } from './command';
import { checkedFdLists, constants, native, type CheckedFdLists, type FdList } from './native';
import type { ConstructorFd } from './runtime-fds';
import type { TransportName } from './transports';

/** Where a command runs. */
export interface CommandLocation {
  transport: TransportName;
  pid: number;
  threadId: number;
  /**
   * child, pidfd, remote (a process that serves this one command): the fds
   * the command's construction (its module's load included) opened and had
   * not closed when it returned, as that process's table named them then.
   * A leak check that reads that process's table only once connect() has
   * resolved takes them out of its baseline, so that the constructor's leak
   * is seen (the harness's oracle does). A target past READY_TARGET_BYTES
   * is cut, saying so (src/protocol.ts: readyJson).
   */
  constructorFds?: readonly ConstructorFd[];
  /**
   * How many more fds the construction left open than `constructorFds`
   * names: those past what the READY's frame holds, left out from the end
   * of the list (absent when none). A leak check cannot tell them from
   * what the process held before.
   */
  constructorFdsOmitted?: number;
}

export interface ConnectOptions {
  /** The command to run there: a module (absolute path or package) and the export holding its class. */
  command: CommandSpec;
  /** helper: the daemon's socket path (default: see `defaultHelperSocketPath()`; `@name` for an abstract name). */
  socketPath?: string;
  /**
   * child, pidfd: how the command's process is spawned.
   * - `uid`, `gid`: run it as another user (needs the privilege to switch;
   *   a uid other than ours needs its gid too, else a TypeError: setuid
   *   alone would keep our group);
   * - `env`: variables merged over this process's environment for it (a
   *   value `undefined` removes one), e.g. `{ FDBRIDGE_FAILPOINT: 'after-receive' }`
   *   in a fault test. Without it the process inherits `process.env`.
   * Anything else, a uid or gid that is not an integer from 0 to 2^31 - 1,
   * or a variable name with `=` or NUL, rejects with a TypeError or
   * RangeError naming it, before anything is spawned.
   */
  child?: { uid?: number; gid?: number; env?: Readonly<Record<string, string | undefined>> };
  /**
   * worker, child, helper, pidfd: the bound, in bytes, of requests waiting
   * for the command's side to read them (default 32 MiB; each request is
   * charged its frame, for a worker its arguments' JSON, plus 256 bytes). A
   * burst beyond what the socket holds waits, in order; a request made
   * while the queue holds this much rejects with QueueFullError, with
   * nothing sent. (A direct command reads nothing: it is called at once.)
   */
  sendQueueLimit?: number;
  /**
   * helper: whom to trust as the daemon. Before sending anything the client
   * reads the listener's SO_PEERCRED and goes on only if its uid is ours
   * or root's (0: root can read our files and our process anyway, so a
   * root daemon, such as a system unit's socket made by systemd, is trusted
   * as OpenSSH and systemd trust root), or one of `uids`, or its pid is one
   * of `pids` (then, where the kernel has SO_PEERPIDFD, a pidfd proves that
   * very process still runs: a recycled pid does not pass). Anyone else gets
   * nothing: the connect fails with PeerRefusedError. Each list is an array
   * of integers (uids from 0, pids from 1, to 2^31 - 1); anything else, or
   * another key, rejects with a TypeError or RangeError naming it before
   * any socket is made.
   */
  trustPeer?: { uids?: readonly number[]; pids?: readonly number[] };
  /**
   * remote: the argv of a process whose stdin and stdout reach the far
   * side, e.g. `['ssh', 'host', '--']`, `['docker', 'exec', '-i', 'ctr']`,
   * `['kubectl', 'exec', '-i', 'pod', '--']`; `serve` is appended to it.
   * Without it, the server runs here, as a process of its own (a local
   * remote: for tests).
   */
  via?: readonly string[];
  /**
   * remote: the far side's `fdbridge serve --stdio` argv, appended to
   * `via` (default `['fdbridge', 'serve', '--stdio']` with a via; this
   * package's CLI under this Node without one). ssh joins its arguments
   * into one shell command line over there: quote them for that shell.
   */
  serve?: readonly string[];
  /** How long to wait for the command to be ready (default 10 s). */
  timeoutMs?: number;
  /**
   * Called by close() once the command has been closed on its side (its
   * close() ran and its unadopted fds were closed) and before its process
   * or thread ends: the moment a leak oracle inspects the command's process
   * (e.g. its /proc/<pid>/fd). close() waits for it to settle; close() of
   * this connection called while it runs (from within it, at once or after
   * an await) resolves without waiting for it, the command being closed by
   * then. A close() from elsewhere while it runs resolves at once too: the
   * connection cannot tell the two apart.
   */
  onCommandClosed?: (location: CommandLocation) => void | Promise<void>;
}

export interface Connection extends AsyncDisposable {
  readonly transport: TransportName;
  /** Where the command runs (pid and thread id). */
  readonly location: CommandLocation;
  readonly closed: boolean;
  /**
   * Duplicates `fd` (borrowed: the caller keeps its own) into the command's
   * context and returns the number valid there. The connection owns the
   * duplicate until the command adopts it (`context.adoptFd`); close() closes
   * it otherwise.
   */
  dupFileDescriptor(fd: number): Promise<number>;
  /**
   * dupFileDescriptor for code that cannot await (a script's synchronous
   * path, a worker thread that must not return to its loop): blocks this
   * thread until the command's side has the duplicate, at most
   * `options.timeoutMs` (default 10 s; TimeoutError then, and the duplicate
   * that may still be made is released when its reply comes). Safe beside
   * asynchronous requests on the same connection: their replies that arrive
   * meanwhile settle them as they would have. child and helper block on the
   * socket; direct and worker duplicate in this process, as their
   * dupFileDescriptor does; pidfd throws UnsupportedError (its far side
   * pulls asynchronously).
   */
  dupFileDescriptorSync(fd: number, options?: { timeoutMs?: number }): number;
  /** The batch form: many fds at once (any count; 253 per message on the wire), in order. */
  dupFileDescriptors(fds: readonly number[]): Promise<number[]>;
  /**
   * Runs `method(...args)` on the command; arguments and result must be
   * JSON-serializable, each at most MAX_CALL_JSON_BYTES of JSON (arguments
   * past it reject with RangeError, nothing sent; a result past it rejects
   * as a RemoteError; code ERR_FDBRIDGE_CALL_TOO_LARGE either way).
   */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  /** A typed proxy: `conn.proxy<LogCommand>().log('hi')`. */
  proxy<T>(): Remote<T>;
  /**
   * Closes the connection: every request still pending (dupFileDescriptor,
   * dupFileDescriptors, call) rejects with ClosedError at once, the
   * command's close() runs, and every fd given to it and not adopted is
   * closed, those of the duplications it rejected included. It resolves
   * once all of that is done: every request made before it has settled by
   * then. A direct or worker command's method that never returns is not
   * waited for: its call has rejected, the method may still run after
   * close() resolved. The client's own fds are never closed. Idempotent.
   */
  close(): Promise<void>;
}

export const MAX_FDS_PER_MESSAGE: number = constants.MAX_FDS_PER_MESSAGE;

/** How long dupFileDescriptorSync waits by default (ms). */
export const DEFAULT_SYNC_TIMEOUT_MS = 10_000;

/** An entry of a dupFileDescriptors list that is not a non-negative int32: validateFd's TypeError, naming `fds[i]`. */
function checkListedFd(fd: unknown, index: number): void {
  validateFd(fd, `fds[${index}]`);
}

/**
 * The error a batch fails with when one piece of it, `list` (the batch's
 * entries from `offset` on), failed with `err`: a SystemError EBADF (an
 * entry not open, or one of fdbridge's own fds, refused as closed) says
 * which entry, as the index in the whole batch and its number, whichever
 * transport met it (dup(2) here, the registry's refusal, sendmsg(2), a
 * relay). The transport does not say which (sendmsg's EBADF names none),
 * so the entries are looked at again, as a duplication would refuse them
 * (native.firstNotGivable: open, and not one of fdbridge's own), with no
 * copy made or closed (closing one would drop this process's POSIX record
 * locks on the entry's file): only on this failure path, and before any
 * await, so the entries are as the failure met them. Any other error is
 * `err` as it is; so is an EBADF no entry explains any more (one closed
 * during the call, its number taken again).
 */
function badEntryError(err: unknown, list: FdList, offset: number): unknown {
  if (!(err instanceof SystemError) || err.code !== 'EBADF' || err.index !== undefined) return err;
  const k = native.firstNotGivable(list);
  if (k < 0) return err;
  const fd = list[k] as number;
  return new SystemError(
    err.errno,
    err.syscall,
    `dupFileDescriptors: fds[${offset + k}] (${fd}) is not an open fd of this process's to give (closed, never opened, or one of fdbridge's ` +
      `own): ${err.message}; nothing of the batch was given`,
    { cause: err, entry: { index: offset + k, fd } },
  );
}

/** A request made and not yet settled, as close() finds it. */
interface PendingRequest {
  /** Rejects the caller's promise with ClosedError. */
  fail(): void;
  /**
   * A duplication's own work (the transport's request, a failed batch's
   * release of the pieces that arrived), which close() waits for, so that
   * whatever it leaves given to the command is closed before close()
   * resolves; undefined for a call, whose command method may never return.
   */
  work: Promise<unknown> | undefined;
}

/** Shared behaviour of every transport: argument checks, closed state, batching, the proxy. */
export abstract class BaseConnection implements Connection {
  abstract readonly transport: TransportName;
  abstract readonly location: CommandLocation;
  #closing: Promise<void> | undefined;
  /** Every request made and not yet settled: close() rejects each with ClosedError. */
  #pending = new Set<PendingRequest>();
  /**
   * True when the transport's close, as it begins (in the same turn as
   * close()), rejects each of its pending dupOne and callRemote requests
   * with closeRejectedError(operation) ('dupFileDescriptor', `${method}()`)
   * and leaves no copy of a duplication's for close() to wait for beyond
   * its own end: dupFileDescriptor and call then return the transport's
   * promise as it is, not tracked in #pending. Batches stay tracked: one
   * of several messages can be pending at close() in its release of the
   * pieces that arrived, a request the transport rejects as 'release', and
   * #track gives its caller the batch's own ClosedError.
   */
  protected readonly closeRejectsPendingDupsAndCalls: boolean = false;
  /** The options' onCommandClosed hook, which commandClosed runs. */
  readonly #onCommandClosed: ConnectOptions['onCommandClosed'];
  /**
   * True while commandClosed runs the hook (until its promise settles):
   * close() then resolves at once. A mark on the connection cannot tell
   * the hook's own call (at once or after an await) from another caller's
   * made meanwhile; both resolve at once. An AsyncLocalStorage context
   * could, but on Node 20 and 22 its first run() turns on promise hooks for
   * the rest of the process, slowing every promise of the user's.
   */
  #runningCommandClosedHook = false;

  constructor(onCommandClosed: ConnectOptions['onCommandClosed']) {
    this.#onCommandClosed = onCommandClosed;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  dupFileDescriptor(fd: number): Promise<number> {
    validateFd(fd);
    if (this.#closing) return Promise.reject(this.closedError('dupFileDescriptor'));
    // Stryker disable next-line ConditionalExpression: forced false, a socket transport's duplication is tracked as well, and its caller gets the same ClosedError in the same turn (closeRejectedError('dupFileDescriptor'), from close() instead of the transport's close), close() waiting for a work that close has already rejected (forced true is killed: a direct duplication pending at close() resolves)
    if (this.closeRejectsPendingDupsAndCalls) return this.dupOne(fd);
    return this.#track('dupFileDescriptor', this.dupOne(fd), true);
  }

  dupFileDescriptorSync(fd: number, options: { timeoutMs?: number } = {}): number {
    validateFd(fd);
    const timeoutMs = options.timeoutMs === undefined ? DEFAULT_SYNC_TIMEOUT_MS : validateTimeoutMs(options.timeoutMs, 'dupFileDescriptorSync: timeoutMs');
    if (this.#closing) throw this.closedError('dupFileDescriptorSync');
    return this.dupOneSync(fd, timeoutMs);
  }

  dupFileDescriptors(fds: readonly number[]): Promise<number[]> {
    if (!Array.isArray(fds)) throw new TypeError('dupFileDescriptors takes an array of fds');
    const batch = checkedFdLists(fds, MAX_FDS_PER_MESSAGE, checkListedFd);
    if (this.#closing) return Promise.reject(this.closedError('dupFileDescriptors'));
    if (fds.length === 0) {
      // Nothing to send, but a broken connection still says so: an empty
      // batch fails like any other request would.
      const broken = this.brokenError();
      return broken ? Promise.reject(broken) : Promise.resolve([]);
    }
    return this.#track('dupFileDescriptors', this.#dupBatches(batch), true);
  }

  async #dupBatches({ lists, above }: CheckedFdLists): Promise<number[]> {
    // Copies a transport makes of one piece go above every fd of the batch
    // (`above`), so none can take the number of a closed fd in a later piece.
    // One piece (up to MAX_FDS_PER_MESSAGE fds): its numbers as they come,
    // all or nothing already.
    // Stryker disable next-line ConditionalExpression,BlockStatement: the one piece through the general path below (forced false, or this block emptied) gives the same numbers and the same error: allSettled of one, an empty release (a socket transport sends its folded duplications at once then, which it would a turn later)
    if (lists.length === 1) {
      // Stryker disable next-line BlockStatement: emptied, the piece goes through the general path below, with the same outcome
      try {
        return await this.dupMany(lists[0] as FdList, above);
      } catch (err) {
        throw badEntryError(err, lists[0] as FdList, 0);
      }
    }
    const chunks = lists.map((list) => this.dupMany(list, above));
    const settled = await Promise.allSettled(chunks);
    const at = settled.findIndex((s) => s.status === 'rejected');
    const failed = settled[at] as PromiseRejectedResult | undefined;
    // Joined a piece at a time: flatMap takes about 80 ns a number here (20 µs for 253).
    const joined = (pieces: readonly number[][]): number[] => {
      const all: number[] = [];
      for (const piece of pieces) all.push(...piece);
      return all;
    };
    if (failed) {
      // The entries looked at before the release's await (badEntryError).
      const error = badEntryError(failed.reason, lists[at] as FdList, at * MAX_FDS_PER_MESSAGE);
      // All or nothing: the chunks that did arrive are released again.
      await this.release(joined(settled.filter((s) => s.status === 'fulfilled').map((s) => s.value)));
      throw error;
    }
    return joined(settled.map((s) => (s as PromiseFulfilledResult<number[]>).value));
  }

  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    if (typeof method !== 'string' || method.length === 0) {
      return Promise.reject(new TypeError('call: method must be a non-empty string'));
    }
    if (this.#closing) return Promise.reject(this.closedError(`${method}()`));
    // Encoded here, for every transport: arguments JSON cannot carry, or
    // past MAX_CALL_JSON_BYTES, reject the same way everywhere, nothing sent.
    let json: string;
    try {
      json = callToJson(method, args);
    } catch (err) {
      return Promise.reject(err);
    }
    const work = this.callRemote(method, json) as Promise<T>;
    // Stryker disable next-line ConditionalExpression: forced false, a socket transport's call is tracked as well, and its caller gets the same ClosedError in the same turn (closeRejectedError(`${method}()`), from close() instead of the transport's close), close() not waiting for a call either way (forced true is killed: a direct call that never returns is not rejected by close())
    if (this.closeRejectsPendingDupsAndCalls) return work;
    // Not waited for by close(): a direct or worker command's method may never return.
    return this.#track(`${method}()`, work, false);
  }

  /**
   * The caller's promise of a request whose transport work is `work`: it
   * settles as `work` does, or with ClosedError when close() comes first,
   * on every transport alike for a batch, and for a duplication or a call
   * where closeRejectsPendingDupsAndCalls is false (whatever the
   * transport's own close does with its requests, and whether it has any:
   * a direct or worker batch can still be releasing the pieces that
   * arrived). `waitOnClose`: close() resolves only once `work` has settled
   * too.
   */
  #track<T>(operation: string, work: Promise<T>, waitOnClose: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const request: PendingRequest = {
        fail: () => reject(this.closeRejectedError(operation)),
        work: waitOnClose ? work : undefined,
      };
      this.#pending.add(request);
      work.then(
        (v) => {
          this.#pending.delete(request);
          resolve(v);
        },
        (e: unknown) => {
          this.#pending.delete(request);
          reject(e);
        },
      );
    });
  }

  proxy<T>(): Remote<T> {
    return new Proxy(Object.create(null) as Remote<T>, {
      get: (_target, prop) => {
        if (typeof prop !== 'string' || prop === 'then') return undefined;
        return (...args: unknown[]) => this.call(prop, ...args);
      },
    });
  }

  close(): Promise<void> {
    // While this connection's onCommandClosed hook runs: the hook may be
    // waiting for this close(), and #closing waits for the hook.
    if (this.#runningCommandClosedHook) return Promise.resolve();
    if (!this.#closing) {
      const pending = [...this.#pending];
      this.#pending.clear();
      for (const request of pending) request.fail();
      this.#closing = this.#close(pending.map((r) => r.work));
    }
    return this.#closing;
  }

  /**
   * The transport's close, then the work of the duplications close()
   * rejected (a call's is undefined: nothing to wait for): the
   * transport's close settles what it sent (or the command's
   * side has closed it), and a batch whose piece failed has released what
   * arrived of the others. Each work is bounded by the transport's close:
   * direct and worker make their copies at once (a release waits at most
   * closesSettled's give-up time); child, helper and pidfd fail every
   * request as their close begins; remote fails what is pending once its
   * channel is closed, and a reply it holds back until a stream has
   * written (#replies) is settled once close destroys the streams.
   */
  async #close(works: ReadonlyArray<Promise<unknown> | undefined>): Promise<void> {
    try {
      await this.closeTransport();
    } finally {
      await Promise.allSettled(works);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs the onCommandClosed hook given to the constructor (the transport's
   * close() calls this once the command is closed), the connection marked
   * meanwhile: a close() of it made from the hook does not wait for the
   * hook it is part of.
   */
  protected async commandClosed(): Promise<void> {
    const hook = this.#onCommandClosed;
    if (!hook) return;
    this.#runningCommandClosedHook = true;
    try {
      await hook(this.location);
    } finally {
      this.#runningCommandClosedHook = false;
    }
  }

  /**
   * Why every request now fails although close() was not called (the peer
   * died, the protocol broke), or undefined while the connection works.
   */
  // Stryker disable next-line BlockStatement: emptied, it returns undefined all the same
  protected brokenError(): Error | undefined {
    return undefined;
  }

  protected closedError(operation: string): ClosedError {
    return new ClosedError(`${operation} failed: the ${this.transport} connection is closed`);
  }

  /** The error of a request `operation` that was pending when close() was called. */
  protected closeRejectedError(operation: string): ClosedError {
    return new ClosedError(`${operation} failed: the ${this.transport} connection was closed`);
  }

  /** Duplicates one validated fd into the command's context. */
  protected abstract dupOne(fd: number): Promise<number>;
  /** dupOne, blocking this thread at most `timeoutMs`. */
  protected abstract dupOneSync(fd: number, timeoutMs: number): number;
  /**
   * Duplicates 1..253 validated fds in one step. Any copy the transport
   * makes of them in this process must be numbered at least `above` (one
   * more than the highest fd of the whole batch: native.dupAll does this).
   */
  protected abstract dupMany(fds: FdList, above: number): Promise<number[]>;
  /** Closes fds that were duplicated into the command's context but must not stay there. */
  protected abstract release(fds: number[]): Promise<void>;
  /** Runs `method` on the command with `json`, the call's JSON (`{ method, args }`, within MAX_CALL_JSON_BYTES). */
  protected abstract callRemote(method: string, json: string): Promise<unknown>;
  protected abstract closeTransport(): Promise<void>;
}

/**
 * The QueueFullError for a request `operation` that met a connection's full
 * send queue, in the caller's terms: who is not reading (`peer`), how much
 * waits, and what to do.
 */
export function queueFullError(
  operation: string,
  peer: string,
  queue: { queuedBytes: number; queuedMessages: number; limit: number },
  cause?: Error,
): QueueFullError {
  const size = (n: number): string => (n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);
  return new QueueFullError(
    `${operation} failed: the send queue is full: ${queue.queuedMessages} earlier requests (${size(queue.queuedBytes)}) ` +
      `still wait for ${peer} to read them (limit ${size(queue.limit)}); ` +
      'nothing of this request was sent. Await earlier requests before making more, or raise ' +
      'ConnectOptions.sendQueueLimit',
    queue,
    // FdBridgeError leaves an undefined cause out.
    { cause },
  );
}
