/**
 * The callbacks a row's scenario scheduled (timers, immediates, fs
 * requests) and that have not run yet, so that a row is not over until
 * they have: a callback that ran during the next row would have its fd
 * changes counted as that row's, where neither the next row's look nor
 * process.getActiveResourcesInfo() (which does not list an unref'd timer)
 * could tell whose code made them.
 *
 * How a callback is known to be the row's: the scenario's run() is
 * started inside an async scope marked with the row's RowWork, and an
 * async_hooks init hook marks every resource created while a marked
 * resource is the current one (the same propagation AsyncLocalStorage
 * does, Node's lib/internal/async_local_storage/async_hooks.js), so a
 * timer set from a callback of a callback of run() is the row's too,
 * ref'd or unref'd. Resources created by code the harness runs (its own
 * timers, a connection it closes for the row) are not marked. The hook is
 * enabled only while a row's code runs and is waited for: it turns on V8's
 * promise hooks, which cost every promise a call (300,000 awaits: 50 ms
 * without, 171 ms with init and after hooks), and a bench's latency is not
 * to pay for it. It has no destroy hook: with one, Node also tracks every
 * promise's collection (the same awaits: 692-902 ms), and it calls destroy
 * hooks late anyway (done(), below).
 */
import { AsyncResource, createHook, executionAsyncResource } from 'node:async_hooks';

/** The property of an async resource naming the row whose code created it. */
const ROW = Symbol('fdbridge.harness.row');

/**
 * The kinds of resource that stand for one callback to come (Node's
 * async_hooks type names): a timer (setTimeout, setInterval, and the
 * promise versions), an immediate, an fs request in flight. A handle (a
 * socket, a server, a watcher, a child process) is not waited for: it
 * lives until closed, and one a row leaves open holds an fd its look sees.
 */
const SCHEDULED = new Set(['Timeout', 'Immediate', 'FSREQCALLBACK', 'FSREQPROMISE']);

/**
 * The kinds of handle (Node's HandleWrap subclasses, by their async_hooks
 * type names) a row's code may open and leave running, whose callbacks are
 * its code and may act during a later row: a child process (its 'exit'), a
 * socket, a server, a signal listener, a watcher. The row keeps them,
 * weakly, so that the next row can say what of it is still open
 * (RowWork.openHandles): process.getActiveResourcesInfo() does not list
 * an unref'd handle, and a child process, a signal listener and a
 * watcher hold no fd of their own that a look would see.
 */
const HANDLES = new Set(['PROCESSWRAP', 'SIGNALWRAP', 'TCPWRAP', 'TCPSERVERWRAP', 'PIPEWRAP', 'PIPESERVERWRAP', 'UDPWRAP', 'TTYWRAP', 'FSEVENTWRAP', 'STATWATCHER']);

/**
 * How process.getActiveResourcesInfo() names a ref'd handle of each kind
 * (Node's MemoryInfoName: a server's PIPESERVERWRAP is a PipeWrap there).
 */
const LISTED: Record<string, string> = {
  PROCESSWRAP: 'ProcessWrap',
  SIGNALWRAP: 'SignalWrap',
  TCPWRAP: 'TCPSocketWrap',
  TCPSERVERWRAP: 'TCPServerWrap',
  PIPEWRAP: 'PipeWrap',
  PIPESERVERWRAP: 'PipeWrap',
  UDPWRAP: 'UDPWrap',
  TTYWRAP: 'TTYWrap',
  FSEVENTWRAP: 'FSEventWrap',
  STATWATCHER: 'StatWatcher',
};

/** How process.getActiveResourcesInfo() names an fs request in flight of each kind. */
const LISTED_REQUEST: Record<string, string> = { FSREQCALLBACK: 'FSReqCallback', FSREQPROMISE: 'FSReqPromise' };

/** A HandleWrap as an async_hooks init hook is given it. */
interface HandleWrap {
  ref(): void;
  unref(): void;
  hasRef(): boolean;
}

/** A callback a row scheduled that has not run. */
interface Scheduled {
  type: string;
  /** The Timeout or Immediate object (what clearTimeout / clearImmediate take), or the request's. */
  resource: object;
  /** Where it was scheduled (a V8 stack, formatted when first read). */
  where: { stack?: string };
}

type Marked = { [ROW]?: RowWork };

/**
 * How often a row lets go of its cleared timers: code that sets and clears a
 * timer per operation (a deadline) would otherwise keep each, with its stack.
 */
const PRUNE_EVERY = 1024;

/** asyncId -> the row whose scheduled callback it is, while it is pending. */
const pendingRows = new Map<number, RowWork>();
let openRows = 0;

const hook = createHook({
  init(asyncId, type, _trigger, resource) {
    const row = (executionAsyncResource() as Marked)[ROW];
    if (row === undefined || row.closed) return;
    (resource as Marked)[ROW] = row;
    if (HANDLES.has(type)) row.opened(type, resource as HandleWrap);
    if (!SCHEDULED.has(type)) return;
    const where: Scheduled['where'] = {};
    Error.captureStackTrace(where);
    row.scheduled(asyncId, { type, resource, where });
  },
  after(asyncId) {
    pendingRows.get(asyncId)?.called(asyncId);
  },
});

/**
 * Whether a scheduled callback is done with: an fs request once its
 * callback has run (the after hook: Node's FSReqAfterScope); a timer or
 * immediate once Node marked it destroyed, after its callback unless it
 * repeats, or cleared (`_destroyed`, set as it ends: lib/internal/timers.js,
 * lib/timers.js' unenroll and clearImmediate). Node's destroy hook says the
 * same, but late: it is queued on an unref'd native immediate
 * (AsyncWrap::EmitDestroy), which does not wake a loop blocked in poll.
 */
function done(s: Scheduled, called: boolean): boolean {
  if (s.type !== 'Timeout' && s.type !== 'Immediate') return called;
  return (s.resource as { _destroyed?: boolean })._destroyed === true;
}

/**
 * Whether a handle is open (not closed, nor closing to completion): ref()
 * refs only an open one (HandleWrap::Ref does nothing once it is closed),
 * so an unref'd handle is ref'd for the look and unref'd again, with no
 * turn of the loop between. (A closed one whose native side is gone
 * answers hasRef() with undefined: not open.)
 */
function isOpen(h: HandleWrap | undefined): boolean {
  // Stryker disable next-line BooleanLiteral: true, equivalent but for memory: only the prune asks of a collected handle, which it then keeps; openHandles skips it
  if (h === undefined) return false;
  if (h.hasRef()) return true;
  h.ref();
  const open = h.hasRef();
  h.unref();
  return open;
}

/** Each name of `counts` as a report shows it: `PipeWrap`, `2 PipeWrap`. */
function counted(counts: ReadonlyMap<string, number>, shown: (name: string) => string): string[] {
  return [...counts].map(([name, n]) => (n > 1 ? `${n} ${shown(name)}` : shown(name)));
}

/** The first frame of a stack that is neither Node's own nor this file's: where the scenario scheduled the callback. */
function schedulingFrame(stack: string | undefined): string | undefined {
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const frame = line.trim().replace(/^at /, '');
    if (frame.includes('node:') || frame.includes(__filename)) continue;
    return frame;
  }
  return undefined;
}

/** One row's scheduled callbacks: open() as the row begins, close() once it is over. */
export class RowWork {
  readonly #pending = new Map<number, Scheduled>();
  /** The handles the row's code opened, weakly (one let go of by everyone is closed). */
  #handles: Array<{ type: string; handle: WeakRef<HandleWrap> }> = [];
  /** The fs requests cancel() found in flight, by the name process.getActiveResourcesInfo() gives them. */
  readonly #inFlight = new Map<string, number>();
  /** Callbacks scheduled so far: every PRUNE_EVERY, the cleared ones are let go of (no hook tells of them). */
  #scheduled = 0;
  /** Handles opened so far: every PRUNE_EVERY, the closed ones are let go of. */
  #opened = 0;
  #drained: (() => void) | undefined;
  #closed = false;

  /** Starts watching (the hook is on while any row's work is open). */
  static open(): RowWork {
    if (openRows++ === 0) hook.enable();
    return new RowWork();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `fn` (the scenario's code) so that what it schedules, directly or from its callbacks, is this row's. */
  run<T>(fn: () => T): T {
    const scope = new AsyncResource('FDBRIDGE_ROW') as AsyncResource & Marked;
    scope[ROW] = this;
    return scope.runInAsyncScope(fn);
  }

  /** The hook's: the row's code opened a handle. Those closed are let go of every PRUNE_EVERY. */
  opened(type: string, handle: HandleWrap): void {
    this.#handles.push({ type, handle: new WeakRef(handle) });
    // Stryker disable next-line ConditionalExpression,ArithmeticOperator,MethodExpression: forced false, `*`, or no filter, equivalent but for memory: the list is never pruned, and openHandles skips what the prune would have let go of (closed or collected); forced true and `!==` are killed
    if (++this.#opened % PRUNE_EVERY === 0) this.#handles = this.#handles.filter((h) => isOpen(h.handle.deref()));
  }

  /**
   * The handles the row's code opened that are still open and unref'd, as
   * a report names them (`PROCESSWRAP (unref'd)`, `2 PIPEWRAP (unref'd)`): what is left of the row
   * that may still act, beside the ref'd ones process.getActiveResourcesInfo()
   * lists. Read after the row, while its handles' callbacks may run.
   */
  openHandles(): string[] {
    const left = new Map<string, number>();
    for (const { type, handle } of this.#handles) {
      const h = handle.deref();
      if (h !== undefined && !h.hasRef() && isOpen(h)) left.set(type, (left.get(type) ?? 0) + 1);
    }
    return counted(left, (type) => `${type} (unref'd)`);
  }

  /**
   * What of the row's own is left running, read after it ended (its timers
   * and immediates were all run or cancelled with it): its handles still
   * open, each ref'd one by the name process.getActiveResourcesInfo() gives
   * it (`ProcessWrap`, `2 PipeWrap`), each unref'd one as openHandles()
   * names it; and the fs requests it left in flight, as many of those
   * cancel() found as process.getActiveResourcesInfo() lists more of than
   * `before` (the same list as the row began): a request that completed
   * leaves no mark on its object. A timer, handle or request that no code
   * of the row's made (the process's own, a test framework's) is not named.
   */
  leftRunning(before: readonly string[]): string[] {
    const left = new Map<string, number>();
    const add = (name: string, n: number): void => {
      if (n > 0) left.set(name, (left.get(name) ?? 0) + n);
    };
    for (const { type, handle } of this.#handles) {
      const h = handle.deref();
      if (h !== undefined && h.hasRef()) add(LISTED[type] ?? type, 1);
    }
    if (this.#inFlight.size > 0) {
      const listed = new Map<string, number>();
      for (const r of before) listed.set(r, (listed.get(r) ?? 0) - 1);
      for (const r of process.getActiveResourcesInfo()) listed.set(r, (listed.get(r) ?? 0) + 1);
      for (const [name, n] of this.#inFlight) add(name, Math.min(n, listed.get(name) ?? 0));
    }
    return [...counted(left, (r) => r), ...this.openHandles()];
  }

  /** The hook's: a callback of this row's is scheduled. */
  scheduled(asyncId: number, s: Scheduled): void {
    this.#pending.set(asyncId, s);
    pendingRows.set(asyncId, this);
    if (++this.#scheduled % PRUNE_EVERY === 0) this.#prune();
  }

  /** Lets go of the callbacks that are done with though no hook said so (timers and immediates cleared). */
  #prune(): void {
    for (const [asyncId, s] of [...this.#pending]) if (done(s, false)) this.ran(asyncId);
  }

  /** The hook's: a callback of this row's has run; it is done unless it is a timer to run again. */
  called(asyncId: number): void {
    const s = this.#pending.get(asyncId);
    if (s !== undefined && done(s, true)) this.ran(asyncId);
  }

  /** The callback is done with (it ran, was cleared, or the request completed). */
  ran(asyncId: number): void {
    this.#pending.delete(asyncId);
    pendingRows.delete(asyncId);
    if (this.#pending.size === 0) this.#drained?.();
  }

  /** Whether a callback the row scheduled has not run yet. */
  get waiting(): boolean {
    return this.#pending.size > 0;
  }

  /** Resolves once every callback the row scheduled has run or been cancelled (those its callbacks schedule included). */
  drained(): Promise<void> {
    if (this.#pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      // A timer cleared (not run) calls no hook: each turn looks for those. The interval also keeps the loop
      // turning while only unref'd timers of the row are left.
      const awake = setInterval(() => this.#prune(), 10);
      this.#drained = () => {
        this.#drained = undefined;
        clearInterval(awake);
        resolve();
      };
    });
  }

  /**
   * Cancels the row's timers and immediates that have not run (an fs
   * request in flight cannot be), and returns each callback still pending
   * as a report names it: `a Timeout (unref'd), scheduled at <frame>`.
   */
  cancel(): string[] {
    const left: string[] = [];
    for (const [asyncId, s] of [...this.#pending]) {
      if (done(s, false)) {
        this.ran(asyncId);
        continue;
      }
      const frame = schedulingFrame(s.where.stack);
      const at = frame !== undefined ? `, scheduled at ${frame}` : '';
      if (s.type === 'Timeout' || s.type === 'Immediate') {
        const ref = (s.resource as { hasRef(): boolean }).hasRef() ? '' : " (unref'd)";
        if (s.type === 'Timeout') clearTimeout(s.resource as NodeJS.Timeout);
        else clearImmediate(s.resource as NodeJS.Immediate);
        left.push(`${s.type === 'Timeout' ? 'a' : 'an'} ${s.type}${ref}${at}: cancelled`);
      } else {
        left.push(`an fs request in flight (${s.type})${at}, which cannot be cancelled`);
        const name = LISTED_REQUEST[s.type] ?? s.type;
        this.#inFlight.set(name, (this.#inFlight.get(name) ?? 0) + 1);
      }
      this.ran(asyncId);
    }
    return left;
  }

  /** The row is over: what its code creates from now on is no row's. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const asyncId of this.#pending.keys()) pendingRows.delete(asyncId);
    this.#pending.clear();
    this.#drained?.();
    if (--openRows === 0) hook.disable();
  }
}
