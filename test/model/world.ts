/**
 * The real system of the model-based test: one connection over one transport
 * to the model command (test/fixtures/model-command.js), a pool of client
 * fds naming files of known identity, every request made so far with what
 * the model said it must come to, and the processes whose fd tables must end
 * where they started.
 *
 * Files are memfds, pipes and socketpair ends: each has an inode of its own,
 * so (st_dev, st_ino) names exactly one of them (eventfds would not: they
 * all share the anon inode).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { ClosedError, connect, PeerExitedError, QueueFullError, SystemError, type Connection, type TransportName } from '../../src';
import { closeFd, closeFds, diffFdTables, dupFd, fdFloor, formatFdTableDiff, makeMemfd, makePipe, openFdTable, type FdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { backgroundClosesPending, ownedFdCount } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import type { ChildConnection } from '../../src/transports/child';
import type { WorkerConnection } from '../../src/transports/worker';
import { fdTableSettles } from '../util/processes';

/** Named, so that the model's helper daemon (test/fixtures/model-helper.js) can serve it: helper clients name commands. */
export const MODEL_COMMAND = { name: 'model', module: join(packageRoot, 'test', 'fixtures', 'model-command.js'), export: 'ModelCommand' };

/**
 * How long a request may stay unsettled once nothing legitimately holds it
 * (no hold() outstanding, the peer alive or known dead): past this it is
 * reported as never settled (a lost reply). Not a speed bound: the slowest
 * legitimate wait in a sequence is a sleep() of at most 100 ms or a spin()
 * of at most 150 ms.
 */
export const HANG_MS = Number(process.env['FDBRIDGE_MODEL_HANG_MS'] ?? 20_000);

/**
 * The send queue's bound the model's connections are opened with (worker,
 * child, helper, pidfd): small enough that the larger bursts outrun it.
 */
export const QUEUE_LIMIT = 4 << 20;

/**
 * An upper bound of what a request's frames are charged against the send
 * queue (frame bytes plus 256 of bookkeeping each): `payload` bytes of call
 * arguments, or `fds` duplications (253 per frame; a dupFileDescriptor
 * counted as a frame of its own, though it may share one).
 */
export function queueCharge(payload: number, fds: number): number {
  return payload + 1024 + Math.ceil(fds / 253) * (8 + 4 * 253 + 256);
}

/** What a request must come to, as the model says. */
export type Expectation =
  /** Resolves with fd numbers naming these files (by model file id) in the command's process. */
  | { kind: 'fds'; files: number[]; single: boolean }
  /** Rejects with SystemError EBADF (a number that was not open in the client when the call was made). */
  | { kind: 'ebadf' }
  /** Resolves with this JSON value (a function: the value it returns when the request settles). */
  | { kind: 'value'; value: unknown };

export type ConnState = 'open' | 'dead' | 'closed';

export interface Request {
  readonly label: string;
  readonly step: number;
  readonly expect: Expectation;
  /** The connection's state when the request was made. */
  readonly issuedIn: ConnState;
  /** What came while this request was unsettled (as far as the test had seen): close(), the peer's death. */
  readonly interrupted: Set<'closed' | 'died'>;
  /** A hold() not yet released: allowed to stay pending. */
  held: boolean;
  /** What it may be charged against the send queue (queueCharge). */
  readonly charge: number;
  /**
   * The charge of every request unsettled (as far as the test had seen)
   * when it was made: the send queue held at most that much then. Under the
   * limit, QueueFullError is wrong; at or over it, it may come.
   */
  readonly queuedBefore: number;
  /** Rejected with QueueFullError: nothing of it was sent. */
  queueFull: boolean;
  /** Puts the model back as it was before the request, when nothing of it was sent (QueueFullError). */
  readonly undo: (() => void) | undefined;
}

/** The reference model: what must be true, whatever the transport. */
export interface Model {
  conn: ConnState;
  /** Client fds by slot: the model file id each names, or null once closed. */
  slots: Array<number | null>;
  /** Numbers delivered to the command and still owned there -> model file id. */
  far: Map<number, number>;
  /** hold() calls made on the open connection and not yet released by an unhold(). */
  readonly held: Request[];
  /** The command's process or worker can be killed (all but direct). */
  readonly killable: boolean;
}

export interface Counters {
  sequences: number;
  steps: number;
  requests: number;
  fdsSent: number;
}

/** FDBRIDGE_MODEL_TRACE=1: each step and phase on stderr as it starts (to find where a sequence hangs). */
const TRACE = process.env['FDBRIDGE_MODEL_TRACE'] === '1';

export const counters: Counters = { sequences: 0, steps: 0, requests: 0, fdsSent: 0 };

function identityOfPath(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** For every open fd of `pid` naming one of `files` (identity -> file id): file id -> its fd numbers. */
export function census(pid: number, files: ReadonlyMap<string, number>): Map<number, Set<number>> {
  const out = new Map<number, Set<number>>();
  const dir = `/proc/${pid}/fd`;
  for (const name of readdirSync(dir)) {
    const id = identityOfPath(`${dir}/${name}`);
    const file = id === undefined ? undefined : files.get(id);
    if (file === undefined) continue;
    let set = out.get(file);
    if (!set) out.set(file, (set = new Set()));
    set.add(Number(name));
  }
  return out;
}

function explain(err: unknown): string {
  // Errors made by the addon or in a worker come from another realm than
  // jest's: look at their shape, not at instanceof Error.
  if (typeof err !== 'object' || err === null || typeof (err as Error).message !== 'string') return `a non-error ${String(err)}`;
  const e = err as Error & { code?: unknown };
  const name = e.constructor?.name ?? e.name;
  return `${name === 'Error' ? 'an untyped Error' : name}${e.code !== undefined ? ` [${String(e.code)}]` : ''}: ${e.message}`;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  return false;
}

function short(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** A helper daemon in its own process (test/fixtures/model-helper.js), shared by the helper sequences. */
export class HelperProcess {
  readonly child: ChildProcess;
  readonly socketPath: string;
  readonly exited: Promise<void>;
  /** Its fd table while it serves nobody. */
  readonly idle: FdTable;

  private constructor(child: ChildProcess, socketPath: string) {
    this.child = child;
    this.socketPath = socketPath;
    this.idle = openFdTable(child.pid);
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number {
    return this.child.pid as number;
  }

  static async start(socketPath: string): Promise<HelperProcess> {
    const child = spawn(process.execPath, [join(packageRoot, 'test', 'fixtures', 'model-helper.js'), socketPath, String(process.pid)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const onExit = (code: number | null): void => reject(new Error(`the model's helper daemon exited (${code}) before listening`));
      child.once('exit', onExit);
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('listening')) {
          child.off('exit', onExit);
          resolve();
        }
      });
    });
    // It prints nothing more: drop our end of its stdout, so that no fd of
    // ours lives as long as it does (its death must not change our table).
    child.stdout?.destroy();
    return new HelperProcess(child, socketPath);
  }

  async stop(): Promise<void> {
    if (this.alive) this.child.kill('SIGTERM');
    await this.exited;
  }
}

/** One sequence's real system. */
export class World {
  readonly transport: TransportName;
  readonly model: Model;
  conn!: Connection;
  /** pid of the command's process (this one for direct and worker). */
  farPid = -1;
  /** Client fds by slot (the model's slots name their files). */
  readonly pool: Array<number | null> = [];
  /** Client fds that only fill numbers (Crowd): they name no model file. */
  readonly ballast: number[] = [];
  /** Identity ("dev:ino") -> model file id, and back. */
  readonly fileIds = new Map<string, number>();
  readonly identities: string[] = [];
  /** Every request made and not yet seen settled, in the order made. */
  readonly #unsettled = new Set<Request>();
  /** Wakes awaitSettled when a request settles. */
  #onSettle: (() => void) | undefined;
  /** The charge of the requests made on the open connection and not yet seen settled. */
  #outstanding = 0;
  /** The send queue's limit (none on direct: its command is called at once, and dup(2) queues nothing). */
  readonly queueLimit: number;
  /** What the model found wrong, in the order found (reported by the step that finds it). */
  readonly failures: string[] = [];
  step = 0;
  #token = 0;
  /** fds the world opened to make files and has not closed (the other ends of pipes are closed at once). */
  #helper: HelperProcess | undefined;
  #clientBaseline!: FdTable;
  /** How many fds the library held for itself in this process before the sequence. */
  #ownedBaseline = 0;
  #farBaseline: FdTable | undefined;
  #farAtClose: FdTable | undefined;
  #farDied = false;

  private constructor(transport: TransportName, helper: HelperProcess | undefined) {
    this.transport = transport;
    this.#helper = helper;
    this.queueLimit = transport === 'direct' ? Infinity : QUEUE_LIMIT;
    this.model = { conn: 'open', slots: [], far: new Map(), held: [], killable: transport !== 'direct' };
  }

  /** True when the command shares this process's fd table (direct, worker). */
  get samePid(): boolean {
    return this.farPid === process.pid;
  }


  static async start(transport: TransportName, helper: HelperProcess | undefined, files: number): Promise<World> {
    counters.sequences++;
    const w = new World(transport, helper);
    w.#clientBaseline = openFdTable();
    w.#ownedBaseline = ownedFdCount();
    if (helper) {
      // Each sequence starts with the daemon serving nobody (a sequence that
      // completed checked this at its end; one that failed waited for it).
      const diff = await fdTableSettles(helper.pid, helper.idle);
      if (diff) throw new Error(`the helper daemon's fd table is not back to its idle state from before the previous sequence:\n${diff}`);
      w.#farBaseline = helper.idle;
    }
    try {
      w.conn = await connect(transport, {
        command: MODEL_COMMAND,
        sendQueueLimit: QUEUE_LIMIT,
        ...(helper ? { socketPath: helper.socketPath } : {}),
        onCommandClosed: (loc) => {
          if (loc.pid !== process.pid && !helper) w.#farAtClose = openFdTable(loc.pid);
        },
      });
      w.farPid = w.conn.location.pid;
      if (transport === 'child' || transport === 'pidfd') w.#farBaseline = openFdTable(w.farPid);
      for (let i = 0; i < files; i++) w.openFile(i % 3);
    } catch (err) {
      await w.teardown();
      throw err;
    }
    return w;
  }

  trace(what: string): void {
    if (TRACE) writeSync(2, `model ${this.transport}: ${what}\n`);
  }

  token(): number {
    return ++this.#token;
  }

  /** Opens a new file (0: memfd, 1: pipe read end, 2: both ends of a socketpair) into new slots. */
  openFile(kind: number): void {
    const fds: number[] = [];
    if (kind === 0) fds.push(makeMemfd(`model-${this.identities.length}`));
    else if (kind === 1) {
      const [r, w] = makePipe();
      closeFd(w);
      fds.push(r);
    } else fds.push(...rawSocketPair('stream'));
    for (const fd of fds) {
      const id = identityOfPath(`/proc/self/fd/${fd}`) as string;
      const file = this.identities.length;
      this.identities.push(id);
      this.fileIds.set(id, file);
      this.pool.push(fd);
      this.model.slots.push(file);
    }
  }

  /**
   * Fills the client's lowest free numbers with ballast until the next one
   * is `extra` past the floor (see the Crowd step).
   */
  crowd(extra: number): void {
    const floor = fdFloor();
    if (this.ballast.length === 0) this.ballast.push(makeMemfd('model-ballast'));
    const source = this.ballast[0] as number;
    for (;;) {
      const fd = dupFd(source);
      this.ballast.push(fd);
      if (fd >= floor + extra) break;
    }
  }

  /** A second client fd naming the same file as `slot`. */
  dupLocal(slot: number): void {
    const fd = this.pool[slot] as number;
    this.pool.push(dupFd(fd));
    this.model.slots.push(this.model.slots[slot] as number);
  }

  /** A temporary client fd for the file `fd` names (the lowest free number, as dup(2) takes). */
  dupClientFd(fd: number): number {
    return dupFd(fd);
  }

  closeClientFd(fd: number): void {
    closeFd(fd);
  }

  closeLocal(slot: number): void {
    closeFd(this.pool[slot] as number);
    this.pool[slot] = null;
    this.model.slots[slot] = null;
  }

  /** Slots whose fd is open. */
  openSlots(): number[] {
    const out: number[] = [];
    this.model.slots.forEach((f, i) => {
      if (f !== null) out.push(i);
    });
    return out;
  }

  fileName(file: number): string {
    return `file ${file}`;
  }

  /** The model file a number names in the command's process, or a description of what it names instead. */
  #farFileOf(fd: number): number | string {
    const id = identityOfPath(`/proc/${this.farPid}/fd/${fd}`);
    if (id === undefined) return 'nothing (not open there)';
    const file = this.fileIds.get(id);
    return file ?? `something else (${id})`;
  }

  /**
   * Tracks a request: when it settles, what it came to is checked against
   * `expect` (and the connection's state then), and delivered numbers enter
   * the model's far side.
   */
  track(
    label: string,
    promise: Promise<unknown>,
    expect: Expectation,
    held = false,
    charge = queueCharge(0, 0),
    undo?: () => void,
  ): Request {
    counters.requests++;
    if (expect.kind === 'fds') counters.fdsSent += expect.files.length;
    const queuedBefore = this.#outstanding;
    if (this.model.conn === 'open') this.#outstanding += charge;
    const req: Request = {
      charge: this.model.conn === 'open' ? charge : 0,
      queuedBefore,
      label: `step ${this.step}: ${label}`,
      step: this.step,
      expect,
      issuedIn: this.model.conn,
      interrupted: new Set(),
      held,
      queueFull: false,
      undo,
    };
    this.#unsettled.add(req);
    void promise.then(
      (value) => this.#settle(req, true, value),
      (err: unknown) => this.#settle(req, false, err),
    );
    return req;
  }

  #fail(req: Request, what: string): void {
    this.failures.push(`${req.label} ${what}`);
  }

  #settle(req: Request, ok: boolean, value: unknown): void {
    if (!this.#unsettled.delete(req)) {
      this.#fail(req, 'settled twice');
      return;
    }
    this.#outstanding -= req.charge;
    // awaitSettled looks again once this has run whole (a microtask later):
    // the undo below can shrink what must settle.
    this.#onSettle?.();
    const e = req.expect;
    // Only a failure's message needs it (a burst's value is up to 64 KiB of JSON).
    const want = (): string =>
      e.kind === 'ebadf' ? 'SystemError EBADF' : e.kind === 'value' ? `the value ${short(e.value)}` : `fds naming ${e.files.length <= 8 ? e.files.map((f) => this.fileName(f)).join(', ') : `${e.files.length} files`}`;
    // The typed errors this request may end with besides its own answer:
    // that of the state it was made in (then nothing else), and those of
    // a close() or a death that came while it was pending (close() rejects
    // what is pending with ClosedError, a death with PeerExitedError;
    // which one wins when both come is not specified).
    const allowed: Array<typeof ClosedError | typeof PeerExitedError> = [];
    if (req.issuedIn === 'closed' || req.interrupted.has('closed')) allowed.push(ClosedError);
    if (req.issuedIn === 'dead' || req.interrupted.has('died')) allowed.push(PeerExitedError);
    if (req.issuedIn !== 'open') {
      if (ok || !allowed.some((Cls) => value instanceof Cls)) {
        this.#fail(
          req,
          `(made on a ${req.issuedIn} connection) ${ok ? `resolved with ${short(value)}` : `rejected with ${explain(value)}`}; expected ${allowed.map((c) => c.name).join(' or ')}`,
        );
      }
      return;
    }
    if (!ok) {
      if (allowed.some((Cls) => value instanceof Cls)) return;
      // The send queue may have been full only if this much was unsettled.
      if (value instanceof QueueFullError && req.queuedBefore >= this.queueLimit) {
        req.queueFull = true;
        req.undo?.();
        return;
      }
      if (e.kind === 'ebadf' && value instanceof SystemError && value.code === 'EBADF') return;
      this.#fail(req, `rejected with ${explain(value)}; expected ${[want(), ...allowed.map((c) => c.name)].join(' or ')}`);
      return;
    }
    if (e.kind === 'ebadf') {
      const got = Array.isArray(value) ? value : [value];
      const named = got.map((fd) => {
        const f = typeof fd === 'number' && this.farPid > 0 ? this.#farFileOf(fd) : '?';
        return typeof f === 'number' ? this.fileName(f) : f;
      });
      this.#fail(req, `resolved with ${short(value)} (naming ${named.slice(0, 4).join(', ')}${named.length > 4 ? ', ...' : ''} in the command's process); expected SystemError EBADF`);
      return;
    }
    if (e.kind === 'value') {
      const expected = typeof e.value === 'function' ? (e.value as () => unknown)() : e.value;
      if (!sameJson(value, expected)) this.#fail(req, `resolved with ${short(value)}; expected the value ${short(expected)}`);
      return;
    }
    const fds = e.single ? [value] : value;
    if (!Array.isArray(fds) || fds.length !== e.files.length || !fds.every((fd) => Number.isInteger(fd) && fd >= 0)) {
      this.#fail(req, `resolved with ${short(value)}; expected ${want()}`);
      return;
    }
    // Delivered, then swept by close() or gone with the process: nothing left to look at.
    if (req.interrupted.size > 0 || this.model.conn !== 'open') return;
    const seen = new Set<number>();
    for (let i = 0; i < fds.length; i++) {
      const fd = fds[i] as number;
      const file = e.files[i] as number;
      const at = e.single ? '' : ` at position ${i}`;
      if (seen.has(fd) || this.model.far.has(fd)) {
        this.#fail(req, `resolved with fd ${fd}${at}, a number the command already holds for another request`);
        return;
      }
      seen.add(fd);
      const named = this.#farFileOf(fd);
      if (named !== file) {
        this.#fail(
          req,
          `resolved with fd ${fd}${at}, which names ${typeof named === 'number' ? this.fileName(named) : named} in the command's process; expected ${this.fileName(file)}`,
        );
        return;
      }
    }
    for (let i = 0; i < fds.length; i++) this.model.far.set(fds[i] as number, e.files[i] as number);
  }

  /** Throws the first failure found so far. */
  check(): void {
    if (this.failures.length > 0) {
      const more = this.failures.length > 1 ? `\n(and ${this.failures.length - 1} more; the next: ${this.failures.slice(1, 4).join('; ')})` : '';
      throw new Error(`${this.failures[0]}${more}`);
    }
  }

  /**
   * Calls unhold(): it releases the holds made before it, less any that met
   * a full send queue (never sent; known by the time unhold() answers).
   */
  unhold(): void {
    const holds = this.model.conn === 'open' ? this.model.held.splice(0) : [];
    for (const h of holds) h.held = false;
    const sent = (): number => holds.filter((h) => !h.queueFull).length;
    this.track('unhold()', this.conn.call('unhold'), { kind: 'value', value: sent }, false, queueCharge(0, 0), () => {
      // Never sent: what it would have released stays held.
      for (const h of holds) h.held = true;
      this.model.held.unshift(...holds);
    });
  }

  /** Records that `how` came while every request not yet seen settled was pending. */
  interrupt(how: 'closed' | 'died'): void {
    for (const r of this.#unsettled) r.interrupted.add(how);
  }

  /**
   * Waits for the background closer to finish what the library handed it:
   * copies of the client's files it held (the duplicates a terminated
   * worker did not adopt, failed requests' pins, queued sends' copies) are
   * closed there, never on this loop (a close can block), and are the
   * library's until then. A copy never handed over stays open and the
   * check that follows still finds it.
   */
  async #closesDone(why: string, deadline: number): Promise<void> {
    while (backgroundClosesPending() > 0) {
      if (Date.now() > deadline) {
        throw new Error(`the background closer still had ${backgroundClosesPending()} fd(s) to close (${why}; waited ${HANG_MS} ms)`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * How many requests must still settle: every unsettled one but the holds
   * not released on an open connection. On an open connection a request is
   * held exactly while it is in model.held (Hold puts it there, unhold()
   * takes them out, its undo puts them back), so only that short list is
   * looked at, not every request.
   */
  #mustSettle(): number {
    if (this.model.conn !== 'open') return this.#unsettled.size;
    let held = 0;
    for (const h of this.model.held) if (h.held && this.#unsettled.has(h)) held++;
    return this.#unsettled.size - held;
  }

  /** Waits for every request that must settle (all but unreleased holds on an open connection), then for the background closer. */
  async awaitSettled(why: string): Promise<void> {
    const deadline = Date.now() + HANG_MS;
    await new Promise((r) => setImmediate(r));
    // What must settle can shrink as requests settle (an unhold() that met
    // a full queue leaves its holds held): count again after each one.
    let wake: ((hung: boolean) => void) | undefined;
    const timer = setTimeout(() => wake?.(true), Math.max(0, deadline - Date.now()));
    this.#onSettle = () => wake?.(false);
    try {
      while (this.#mustSettle() > 0) {
        if (await new Promise<boolean>((r) => (wake = r))) {
          const left = [...this.#unsettled].filter((r) => !(r.held && this.model.conn === 'open'));
          throw new Error(
            `${left.length} request(s) never settled (${why}; waited ${HANG_MS} ms): ${left
              .slice(0, 5)
              .map((r) => r.label)
              .join('; ')}`,
          );
        }
      }
    } finally {
      clearTimeout(timer);
      this.#onSettle = undefined;
    }
    return this.#closesDone(why, deadline);
  }

  /** Requests the test has not seen settle although the model says they must have by now. */
  unsettled(): Request[] {
    return [...this.#unsettled];
  }

  /**
   * The far side, whole: every fd of the command's process that names one of
   * the model's files is one the model says it holds, and the other way
   * round (nothing of a failed batch stayed, nothing was lost, nothing names
   * the wrong file). Where the command shares this process, the client's own
   * fds are in the same table and in the expectation. Then the client's side
   * alone: its fds naming the files are the pool's (no pin left behind).
   */
  checkCensus(where: string): void {
    const expectFar = new Map<number, Set<number>>();
    const add = (m: Map<number, Set<number>>, file: number, fd: number): void => {
      let s = m.get(file);
      if (!s) m.set(file, (s = new Set()));
      s.add(fd);
    };
    const expectClient = new Map<number, Set<number>>();
    this.model.slots.forEach((file, slot) => {
      if (file !== null) add(expectClient, file, this.pool[slot] as number);
    });
    const farAlive = this.model.conn === 'open' && this.farPid > 0;
    if (farAlive) for (const [fd, file] of this.model.far) add(expectFar, file, fd);
    const compare = (pid: number, expected: Map<number, Set<number>>, side: string): void => {
      const got = census(pid, this.fileIds);
      const files = new Set([...got.keys(), ...expected.keys()]);
      for (const file of files) {
        const g = got.get(file) ?? new Set<number>();
        const x = expected.get(file) ?? new Set<number>();
        const extra = [...g].filter((fd) => !x.has(fd));
        const missing = [...x].filter((fd) => !g.has(fd));
        if (extra.length > 0 || missing.length > 0) {
          throw new Error(
            `${where}: the ${side}'s fds naming ${this.fileName(file)} are not the model's:` +
              (extra.length ? ` open but not expected [${extra.slice(0, 20).join(', ')}${extra.length > 20 ? ', ...' : ''}]` : '') +
              (missing.length ? ` expected but missing [${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ', ...' : ''}]` : ''),
          );
        }
      }
    };
    if (farAlive && this.samePid) {
      for (const [file, fds] of expectClient) for (const fd of fds) add(expectFar, file, fd);
      compare(process.pid, expectFar, 'process (client and command)');
    } else {
      compare(process.pid, expectClient, 'client');
      if (farAlive) compare(this.farPid, expectFar, "command's process");
    }
  }

  /** Kills the command's process (child, pidfd, helper) or terminates its worker, and waits until it is gone. */
  async kill(): Promise<void> {
    this.#farDied = true;
    if (this.transport === 'worker') {
      await (this.conn as WorkerConnection).worker.terminate();
    } else if (this.transport === 'helper') {
      const helper = this.#helper as HelperProcess;
      helper.child.kill('SIGKILL');
      await helper.exited;
    } else {
      const child = (this.conn as ChildConnection).child;
      const exited = new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once('exit', () => resolve());
      });
      child.kill('SIGKILL');
      await exited;
    }
  }

  /**
   * The end of a sequence that ran to completion: what is held is released,
   * everything settles, the far side matches the model, and after close()
   * every fd table is where it started.
   */
  async finish(): Promise<void> {
    this.step++;
    this.trace('finish: settling');
    if (this.model.conn === 'open') {
      if (this.model.held.length > 0) this.unhold();
      await this.awaitSettled('at the end of the sequence');
      this.check();
      this.checkCensus('at the end of the sequence');
    }
    this.trace('finish: closing');
    this.interrupt('closed');
    await this.conn.close();
    if (this.model.conn === 'open') this.model.conn = 'closed';
    await new Promise((r) => setImmediate(r));
    this.trace('finish: checking fd tables');
    const left = this.unsettled();
    if (left.length > 0) throw new Error(`after close() resolved, ${left.length} request(s) were still unsettled: ${left.slice(0, 5).map((r) => r.label).join('; ')}`);
    this.check();
    await this.#checkTables();
  }

  async #checkTables(): Promise<void> {
    // The command's process, seen just before it ended (child, pidfd), or
    // the helper daemon, which outlives the connection.
    if (this.#farBaseline && !this.#farDied) {
      if (this.#helper) {
        const diff = await fdTableSettles(this.#helper.pid, this.#farBaseline);
        if (diff) throw new Error(`the helper daemon's fd table did not return to where it started:\n${diff}`);
      } else if (this.#farAtClose) {
        const diff = formatFdTableDiff(diffFdTables(this.#farBaseline, this.#farAtClose));
        if (diff) throw new Error(`the command's process's fd table, when its command had closed, was not where it started:\n${diff}`);
      } else {
        throw new Error("the connection's close() never ran onCommandClosed, so the command's process went unchecked");
      }
    }
    closeFds(this.pool.filter((fd): fd is number => fd !== null));
    this.pool.length = 0;
    closeFds(this.ballast.splice(0));
    const diff = await fdTableSettles(process.pid, this.#clientBaseline);
    if (diff) throw new Error(`the client's fd table did not return to where it started:\n${diff}`);
    // Every fd the library held for itself was closed or adopted, and said so.
    const owned = ownedFdCount();
    if (owned !== this.#ownedBaseline) {
      throw new Error(`the library holds ${owned} fds for itself in the client's process after close(); it held ${this.#ownedBaseline} before the sequence`);
    }
  }

  /** Cleanup after a failed sequence: nothing may be left running or open for the next one. Never throws. */
  async teardown(failure?: unknown): Promise<void> {
    this.trace(`teardown${failure === undefined ? '' : ` after: ${(failure as Error)?.message ?? String(failure)}`}`);
    try {
      this.interrupt('closed');
      await this.conn?.close();
    } catch {
      // reported by the sequence already
    }
    if (this.transport === 'child' || this.transport === 'pidfd') {
      const child = (this.conn as ChildConnection | undefined)?.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    }
    closeFds(this.pool.filter((fd): fd is number => fd !== null));
    this.pool.length = 0;
    closeFds(this.ballast.splice(0));
    // The daemon ends its side of the connection after ours: wait for that
    // (the next sequence starts from its idle table).
    if (this.#helper?.alive) await fdTableSettles(this.#helper.pid, this.#helper.idle);
  }
}

