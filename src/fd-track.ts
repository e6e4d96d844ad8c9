/**
 * Who opened a leaked fd (`fdbridge run --track-fds`, `{ trackFds: true }`
 * in checkFdLeaks): for each fd a watched process creates, the JS stack of
 * the call that made it and the native stack of the libc call under it.
 *
 * Two recorders, both writing into one directory ($FDBRIDGE_FDTRACK_DIR)
 * that the reader looks into after the fact, even once the process is gone:
 * - JS (this file's installJsTracking, preloaded with `--require` into every
 *   Node process and worker of a tracked run): wraps the JS calls that make
 *   fds (fs.open/openSync/promises.open, net connect/listen and the
 *   connections a listening server accepts, child_process
 *   stdio pipes, and fdbridge's own native dup/pipe/memfd/eventfd/socket/
 *   pidfd calls), and appends `{ fd, target, call, stack }` to
 *   js-<pid>.log; the JS closes (fs.close/closeSync through Node's fs
 *   binding, FileHandle.close, fdbridge's close/closeAll/closeCaller/
 *   closeCallers/closeInBackground)
 *   append `{ fd, closed }` before they close, and `{ fd, kept }` after a
 *   close fdbridge refused, which left the fd open.
 * - native (native/fdtrack/fdtrack.c, LD_PRELOADed): every libc call that
 *   makes an fd, whoever calls it (an addon's open/socket/dup, recvmsg's
 *   SCM_RIGHTS fds), into native-<pid>.bin; its frames are symbolized here
 *   with addr2line.
 * A record counts for a leaked fd only if it names the same target the leak
 * does (readlink at creation against readlink at the check), so an fd number
 * reused by a call no recorder saw is never blamed on its previous owner;
 * and a JS record only if no close of its fd was recorded after it, so
 * neither is an fd closed and opened again on the same file by such a call.
 * A close the JS recorder cannot see (a thread it does not record, native
 * code) leaves a record standing, so every JS record is given as
 * unconfirmed (FdOrigin.unconfirmed). Where the native recorder runs too,
 * a JS record notes the sequence number of the native record of its fd
 * (`nseq`): the same number at the check means no fd was made there since
 * through the C library, in any thread (FdOrigin.nativeCurrent). An
 * io_uring ring makes and closes fds neither recorder sees, so that holds
 * only while the process has no ring but libuv's for epoll_ctl, set up
 * through the C library or open now; the native recorder tells libuv's from
 * another ring of the same shape by who set it up (fdtrack.c
 * libuv_epoll_ring).
 * The C library is compiled on first use ($CC, default cc); without a
 * compiler only JS stacks are recorded, and the report says so.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, normalize, sep } from 'node:path';
import { isMainThread, SHARE_ENV, threadId, type WorkerOptions } from 'node:worker_threads';

import { packageRoot } from './paths';

/** Where a leaked fd was opened, as far as the recorders saw. */
export interface FdOrigin {
  /** The call that made it: `fs.openSync`, `native.memfd`, `open` (libc), `recvmsg` (received over a socket), ... */
  call: string;
  /** JS frames, innermost first (`fn (file:line:col)`), the recorder's own left out. */
  js?: string[];
  /** Native frames, innermost first (`function (file:line)` or `module+0xoffset`), the libc wrapper left out. */
  native?: string[];
  /**
   * `call` is the last open of this number, naming this file, that the JS
   * recorder saw, with no close of it seen since; but a close it cannot see
   * (by a thread it does not record, or by native code) followed by an open
   * of the same file at the same number that it did not see either would
   * read the same, and the fd would then be that open's. Set for every JS
   * record: a pipe or socket too, whose inode a dup, a received fd or the
   * pipe's other end can put at a freed number.
   */
  unconfirmed?: true;
  /**
   * Set on a JS record when the native recorder also watched the process
   * (`run --track-fds`) and saw no fd made at this number after `call` made
   * it, through the C library, in any thread, and the process set up no
   * io_uring ring that can make fds (through the C library: any ring but
   * libuv's for epoll_ctl, which the native recorder tells by its shape and
   * by who set it up; libuv's for file operations under UV_USE_IO_URING=1
   * on Node 20 is one) and has none open now but libuv's for epoll_ctl: an
   * unseen close followed by such an open would have replaced the native
   * record. What it does not see is an
   * open that bypasses the C library's exported calls otherwise (a raw
   * system call, a ring set up without the C library and closed by now,
   * the C library's own opens: opendir's, which fs.opendirSync uses,
   * fopen's). The harness
   * charges a leak to an earlier row only on such a record.
   */
  nativeCurrent?: true;
}

const ENV_DIR = 'FDBRIDGE_FDTRACK_DIR';
/** A worker thread shares its process's fd table, and so its log fd (passed by number). */
const ENV_LOG_FD = 'FDBRIDGE_FDTRACK_LOG_FD';
/**
 * The log's file (`dev:ino`), passed down with its number: a worker writes
 * through that number only while it still holds that file, since the thread
 * that opened the log closes it when its check stops, and a worker started
 * meanwhile may outlive the check, its number then taken by another file.
 */
const ENV_LOG_ID = 'FDBRIDGE_FDTRACK_LOG_ID';
/**
 * The variables installJsTracking sets (this thread's log, for the workers
 * it starts) and deletes as it runs: this process's state, not a setting
 * (the harness neither puts them back nor charges a row with them).
 */
export const JS_LOG_VARIABLES: readonly string[] = [ENV_LOG_FD, ENV_LOG_ID];

// ---------------------------------------------------------------------------
// the native library

/** A checkout's build of the interposer. */
function checkoutLibrary(): string {
  return join(packageRoot, 'build', 'fdtrack', 'libfdtrack.so');
}

/**
 * The interposer library, compiled now if it is not built yet (into the
 * checkout's build/, else into `fallbackDir`). Undefined, with the reason,
 * when it cannot be built (no C compiler): tracking then records JS stacks only.
 */
export function fdtrackLibrary(fallbackDir: string): { path?: string; unavailable?: string } {
  const source = join(packageRoot, 'native', 'fdtrack', 'fdtrack.c');
  const built = checkoutLibrary();
  if (existsSync(built) && statSync(built).mtimeMs >= statSync(source).mtimeMs) return { path: built };
  const cc = process.env['CC'] || 'cc';
  for (const out of [built, join(fallbackDir, 'libfdtrack.so')]) {
    try {
      mkdirSync(join(out, '..'), { recursive: true });
      // Compiled beside it, then renamed over it: another process building or
      // preloading it at the same time sees the old file or the whole new one,
      // never a half-written library (ld.so would refuse it, or worse, map it).
      const partial = `${out}.${process.pid}.${threadId}.tmp`;
      try {
        execFileSync(cc, ['-O2', '-g', '-fPIC', '-shared', '-Wall', '-fno-omit-frame-pointer', '-o', partial, source, '-ldl', '-lpthread'], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        renameSync(partial, out);
      } finally {
        rmSync(partial, { force: true });
      }
      return { path: out };
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
      if (e.code === 'ENOENT') return { unavailable: `no C compiler (${cc}) to build native/fdtrack/fdtrack.c: native stacks are not recorded` };
      if (out !== built) return { unavailable: `cannot build native/fdtrack/fdtrack.c: ${e.stderr?.toString().trim() || e.message}` };
      // the checkout's build/ may be read-only (an installed package): try the fallback
    }
  }
  return { unavailable: 'cannot build native/fdtrack/fdtrack.c' };
}

/**
 * The environment that makes a process (and all it starts) record fds into
 * `dir`: LD_PRELOAD of the interposer (when built) and the JS recorder
 * preloaded by NODE_OPTIONS.
 */
export function trackingEnvironment(dir: string, library: string | undefined, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const preload = join(packageRoot, 'dist', 'src', 'fd-track-preload.js');
  return {
    [ENV_DIR]: dir,
    NODE_OPTIONS: `${env['NODE_OPTIONS'] ?? ''} --require ${JSON.stringify(preload)}`.trim(),
    ...(library ? { LD_PRELOAD: [library, env['LD_PRELOAD']].filter(Boolean).join(':') } : {}),
  };
}

// ---------------------------------------------------------------------------
// the JS recorder

let logFd: number | undefined;
/** The log this thread opened itself, closed when its recording stops (stopJsTracking). */
let ownLog: number | undefined;
/** The file (`dev:ino`) a log this thread writes through but did not open must be. */
let inheritedId: string | undefined;

function fileId(fd: number): string {
  const st = fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

/**
 * Appends `line` to the log, `fd` (logFd, which its callers have checked is
 * set). Through a log another thread opened, only
 * while its number still holds the log's file: once it does not (that
 * thread's check stopped and closed it, and the number may be another
 * file's now), this thread stops recording, and the line is dropped.
 */
function writeLog(fd: number, line: string): void {
  try {
    if (fd !== ownLog && fileId(fd) !== inheritedId) {
      logFd = inheritedId = undefined;
      return;
    }
    writeSync(fd, line);
  } catch {
    // the log is best effort: never fail the caller's open or close
  }
}

/** The harness's own frames (the runner calling a scenario) say nothing about who opened an fd. */
const HARNESS = join(packageRoot, 'dist', 'harness') + sep;

/** The frames of the current JS stack that are not this file's or Node's own. */
function jsFrames(): string[] {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  Error.captureStackTrace(holder, jsFrames);
  Error.stackTraceLimit = limit;
  return (holder.stack ?? '')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().replace(/^at /, ''))
    .filter((l) => !l.includes(__filename) && !l.includes(HARNESS) && !/\(node:|^node:|\(internal\//.test(l))
    .slice(0, 16);
}

function recordJs(fd: unknown, call: string, stack: string[]): void {
  if (logFd === undefined || readingNative || typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) return;
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return;
  }
  const nseq = nativeFile === undefined ? undefined : nativeSeq(nativeFile, fd, target);
  writeLog(logFd, `${JSON.stringify(nseq === undefined ? { fd, target, call, stack } : { fd, target, call, stack, nseq })}\n`);
}

/** This process's native record file, when the native recorder may be writing one (its directory is this thread's). */
let nativeFile: string | undefined;
/** Set while this thread reads the native file: its own open and close of it are not the program's, and not recorded. */
let readingNative = false;

/**
 * The sequence number of the native record of `fd` in `file`, if that
 * record names `target` (the open just made, as the C library saw it);
 * undefined when there is none (no native recorder, a call it did not
 * see, a record being written by another thread).
 */
function nativeSeq(file: string, fd: number, target: string): number | undefined {
  readingNative = true;
  try {
    const rec = readNative(file, fd, FIXED_HEADER)?.rec;
    return rec && cString(rec, 16, TARGET) === target ? Number(rec.readBigUInt64LE(0)) : undefined;
  } catch {
    return undefined;
  } finally {
    readingNative = false;
  }
}

/**
 * Notes that `fd` is being closed: its records end here. Written before the
 * close, so that an open of the freed number (another thread's) is recorded
 * after it. Without it, a later open of the same file at the same number
 * by a call no recorder sees would read as the fd that was closed.
 * `kept`: the close just noted was refused and left the fd open (fdbridge's
 * closeFd and closeFds refuse a number of its own, closeFds then the whole
 * list): the records the close ended stand again.
 */
function recordClose(fd: unknown, kept = false): void {
  if (logFd === undefined || readingNative || typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) return;
  writeLog(logFd, `${JSON.stringify(kept ? { fd, kept } : { fd, closed: true })}\n`);
}

type AnyFn = (...args: unknown[]) => unknown;

/**
 * Replaces obj[name] with a wrapper that notes the close of its first
 * argument, an fd, before it runs, and, where `refused` says of its result
 * that the fd was left open, that the close was refused.
 */
function wrapClose(
  obj: object,
  name: string,
  fdOf: (self: unknown, args: unknown[]) => unknown = (_self, args) => args[0],
  refused: (result: unknown) => boolean = () => false,
): void {
  const o = obj as Record<string, unknown>;
  const original = o[name];
  if (typeof original !== 'function') return;
  try {
    o[name] = function (this: unknown, ...args: unknown[]): unknown {
      const fd = fdOf(this, args);
      recordClose(fd);
      const result = (original as AnyFn).apply(this, args);
      if (refused(result)) recordClose(fd, true);
      return result;
    };
  } catch {
    // a read-only property: not recorded
  }
}

/** Replaces obj[name] with a wrapper that records the fds `fdsOf(result)` gives. */
function wrapSync(obj: object, name: string, call: string, fdsOf: (result: unknown) => unknown[]): void {
  const o = obj as Record<string, unknown>;
  const original = o[name];
  if (typeof original !== 'function') return;
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    const result = (original as AnyFn).apply(this, args);
    if (logFd === undefined || readingNative) return result;
    const stack = jsFrames();
    for (const fd of fdsOf(result)) recordJs(fd, call, stack);
    return result;
  };
  try {
    o[name] = wrapped;
  } catch {
    // a read-only property: not recorded
  }
}

const one = (r: unknown): unknown[] => [r];
const all = (r: unknown): unknown[] => (Array.isArray(r) ? r : []);
const handleFd = (h: unknown): unknown => (h as { _handle?: { fd?: unknown } } | null)?._handle?.fd;

/**
 * Installs the JS recorder in this thread, once: a no-op unless
 * $FDBRIDGE_FDTRACK_DIR is set. With `own` (by default in the main thread)
 * the thread opens js-<pid>.log itself (kept open, so it is part of every
 * baseline); otherwise, a worker started by a recording thread, it writes
 * through that thread's log (its fd passed down by number, with its file's
 * dev:ino), as long as that number holds that file (see writeLog). A check with
 * trackFds run in a worker thread records through a log of its own.
 */
let wrapped = false;

export function installJsTracking(own: boolean = isMainThread): void {
  const dir = process.env[ENV_DIR];
  if (!dir || logFd !== undefined) return;
  // Stryker disable next-line ConditionalExpression: forced true, a worker started by a recording thread (its preload) opens a log of its own on the same file instead of writing through its creator's: the same records; not equivalent, one more fd for the worker's life (its teardown closes it), opened before any check in it
  if (own) {
    let log: number;
    try {
      log = openSync(join(dir, `js-${process.pid}.log`), 'a');
    } catch {
      // Tracking must not change what the program does: a process that
      // cannot write its log runs unrecorded (one started as another user
      // may not enter the directory, mkdtemp's mode 0700; a full disk, no
      // fd left). Without a log of its own the reader says the process was
      // not tracked (leakOrigin), and its workers find no log to write
      // through (the numbers inherited in the environment are its
      // parent's).
      delete process.env[ENV_LOG_FD];
      delete process.env[ENV_LOG_ID];
      return;
    }
    logFd = ownLog = log;
    process.env[ENV_LOG_FD] = String(logFd);
    process.env[ENV_LOG_ID] = fileId(logFd);
  } else {
    const inherited = Number(process.env[ENV_LOG_FD]);
    const id = process.env[ENV_LOG_ID];
    // Stryker disable next-line ConditionalExpression,LogicalOperator: forced false, or `&&` (both missing), a worker whose environment names the directory but no log fd or file (a Worker given an env of its own) takes NaN or no file for its log: its first write's fstat fails or differs, and it records nothing, as when it returns here
    if (!Number.isInteger(inherited) || !id) return;
    logFd = inherited;
    inheritedId = id;
  }
  // The interposer maps its file as the process starts, before any JS runs.
  const nativeRecords = join(dir, `native-${process.pid}.bin`);
  nativeFile = existsSync(nativeRecords) ? nativeRecords : undefined;
  if (wrapped) return;
  wrapped = true;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require('node:fs') as typeof import('node:fs');
  wrapSync(fs, 'openSync', 'fs.openSync', one);
  const open = fs.open;
  (fs as { open: unknown }).open = function (this: unknown, ...args: unknown[]): unknown {
    const cb = args[args.length - 1];
    if (logFd !== undefined && typeof cb === 'function') {
      const stack = jsFrames();
      args[args.length - 1] = (err: unknown, fd: unknown) => {
        if (!err) recordJs(fd, 'fs.open', stack);
        return (cb as AnyFn)(err, fd);
      };
    }
    return (open as AnyFn).apply(this, args);
  };
  const openPromise = fs.promises.open;
  (fs.promises as { open: unknown }).open = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const stack = logFd === undefined ? [] : jsFrames();
    const handle = await (openPromise as AnyFn).apply(this, args);
    const fd = (handle as { fd?: unknown }).fd;
    recordJs(fd, 'fs.promises.open', stack);
    // A FileHandle's close is a property of each handle (a class field), not of its prototype.
    if (logFd !== undefined) wrapClose(handle as object, 'close', () => fd);
    return handle;
  };
  // Closes end an fd's records (see recordClose). fs.closeSync and fs.close
  // both call the fs binding's close by property, so wrapping that one sees
  // them also through a binding taken before this ran (`const { closeSync }
  // = require('node:fs')`); without the binding, the module's functions.
  const binding = fsBinding();
  if (binding) wrapClose(binding, 'close');
  else {
    wrapClose(fs, 'closeSync');
    wrapClose(fs, 'close');
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const net = require('node:net') as typeof import('node:net');
  wrapNetCall(net.Socket.prototype, 'connect', 'net.Socket.connect');
  wrapNetCall(net.Server.prototype, 'listen', 'net.Server.listen');
  wrapTcpHandle();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const childProcess = require('node:child_process') as typeof import('node:child_process');
  const ChildProcess = (childProcess as unknown as { ChildProcess: { prototype: object } }).ChildProcess;
  const spawn = (ChildProcess.prototype as Record<string, unknown>)['spawn'];
  if (typeof spawn === 'function') {
    (ChildProcess.prototype as Record<string, unknown>)['spawn'] = function (this: { stdio?: unknown[] }, ...args: unknown[]): unknown {
      const result = (spawn as AnyFn).apply(this, args);
      if (logFd === undefined) return result;
      const stack = jsFrames();
      for (const s of this.stdio ?? []) recordJs(handleFd(s), 'child_process.spawn (stdio pipe)', stack);
      return result;
    };
  }
  wrapWorker();
  // fdbridge's own fds: its addon's calls that make them.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { native } = require('./native') as { native: object };
  for (const name of ['dup', 'memfd', 'eventfd', 'pidfdOpen', 'pidfdGetfd', 'peerPidfd', 'listen', 'connect', 'dgramSocket']) {
    wrapSync(native, name, `native.${name}`, one);
  }
  for (const name of ['dupAll', 'pipe', 'socketpair']) wrapSync(native, name, `native.${name}`, all);
  // closeCaller and closeCallers refuse a number fdbridge holds for itself,
  // closing nothing (closeFd, closeFds): false, and -1 - the fd.
  wrapClose(native, 'close');
  wrapClose(native, 'closeCaller', undefined, (closed) => closed === false);
  wrapCloseMany(native, 'closeCallers', (closed) => typeof closed === 'number' && closed < 0);
  for (const name of ['closeAll', 'closeInBackground']) wrapCloseMany(native, name);
  // An ES module's named imports of node:fs (`import { openSync } from
  // 'node:fs'`) are a copy of the module's functions taken at its first
  // import: this makes them the wrappers too, whenever they were imported.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('node:module') as typeof import('node:module')).syncBuiltinESMExports();
}

/** The call and JS stack of a net.Socket's connect or a net.Server's listen, kept (by the socket or server) until its handle has an fd. */
const netOrigins = new WeakMap<object, { call: string; stack: string[] }>();
/** The handles whose fd is recorded: a client's bind and then connect make one fd, recorded once. */
const recordedHandles = new WeakSet<object>();

interface NetHandle {
  fd?: unknown;
  owner?: unknown;
  onconnection?: unknown;
}

/**
 * Replaces net's `proto[name]` (Socket's connect, Server's listen) with a
 * wrapper that notes the call's stack for the socket or server and records
 * its handle's fd if it has one when the call returns (a Unix socket, a
 * listen without a host, a handle or fd given). A TCP connect or a listen
 * on a host makes its socket later, after the name's lookup (a nextTick
 * even for an address): wrapTcpHandle records that one.
 */
function wrapNetCall(proto: object, name: string, call: string): void {
  const o = proto as Record<string, unknown>;
  const original = o[name];
  if (typeof original !== 'function') return;
  o[name] = function (this: { _handle?: NetHandle | null }, ...args: unknown[]): unknown {
    if (logFd === undefined || readingNative) return (original as AnyFn).apply(this, args);
    const origin = { call, stack: jsFrames() };
    netOrigins.set(this, origin);
    const result = (original as AnyFn).apply(this, args);
    recordHandle(this._handle, origin);
    return result;
  };
}

/**
 * Records the fd of a TCP handle as libuv makes it: uv_tcp_bind and
 * uv_tcp_connect create the socket (uv_tcp_init does not), so once bind,
 * bind6, connect or connect6 returns, a client's handle has its fd, and a
 * server's has it by listen (net binds a server's handle before it names
 * the server its owner, then listens). The call and stack are those of the
 * connect or listen of the handle's owner (wrapNetCall); a handle whose
 * owner made no such call while this thread recorded is not recorded.
 * Node's TCP prototype comes from process.binding('tcp_wrap') (see
 * fsBinding); without it, such sockets go unrecorded.
 */
function wrapTcpHandle(): void {
  let proto: Record<string, unknown>;
  try {
    const binding = (process as unknown as { binding(name: string): { TCP?: { prototype?: unknown } } }).binding('tcp_wrap');
    if (typeof binding.TCP?.prototype !== 'object' || binding.TCP.prototype === null) return;
    proto = binding.TCP.prototype as Record<string, unknown>;
  } catch {
    return;
  }
  for (const name of ['bind', 'bind6', 'connect', 'connect6', 'listen']) {
    const original = proto[name];
    if (typeof original !== 'function') continue;
    proto[name] = function (this: NetHandle, ...args: unknown[]): unknown {
      const result = (original as AnyFn).apply(this, args);
      if (logFd !== undefined) {
        const owner = this.owner;
        const origin = typeof owner === 'object' && owner !== null ? netOrigins.get(owner) : undefined;
        if (origin) recordHandle(this, origin);
      }
      return result;
    };
  }
}

/**
 * Records `handle`'s fd once, if it has one yet. A listening handle's
 * connections are recorded too, as they are accepted (its onconnection,
 * which Node's handle calls by name, is wrapped): under the listen's call
 * and stack, since the accept itself runs from the event loop.
 */
function recordHandle(handle: NetHandle | null | undefined, origin: { call: string; stack: string[] }): void {
  const fd = handle?.fd;
  if (!handle || typeof fd !== 'number' || fd < 0 || recordedHandles.has(handle)) return;
  recordedHandles.add(handle);
  recordJs(fd, origin.call, origin.stack);
  const onconnection = handle.onconnection;
  if (typeof onconnection !== 'function') return;
  const accepted = `${origin.call} (accepted connection)`;
  handle.onconnection = function (this: unknown, ...args: unknown[]): unknown {
    const client = args[1] as NetHandle | undefined;
    recordJs(client?.fd, accepted, origin.stack);
    return (onconnection as AnyFn).apply(this, args);
  };
}

/**
 * Makes worker_threads.Worker start, while this thread records, a worker
 * given neither `env` nor `execArgv` with the recorder too. Such a worker
 * takes this thread's options as they were at its start, not the
 * NODE_OPTIONS that recording set in the environment: given `execArgv`
 * (this process's own, the default) it reads NODE_OPTIONS from its
 * environment, the recorder's `--require` with it. A worker given `env:
 * SHARE_ENV` is given `execArgv` too and reads the process's own
 * environment, which holds the recorder only when `process.env` is that
 * environment (not under jest, whose `process.env` is a copy). When Worker
 * refuses this process's flags in `execArgv` (--expose-gc,
 * --max-old-space-size=N, ...), the worker starts with the caller's options
 * and records nothing. A worker given an `env` of its own reads NODE_OPTIONS
 * from that one, as the caller chose. A Worker class taken before recording
 * started (`const { Worker } = require('node:worker_threads')`) is not this
 * one: its workers record nothing.
 */
function wrapWorker(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const workerThreads = require('node:worker_threads') as typeof import('node:worker_threads');
  const Original = workerThreads.Worker;
  const Worker = class Worker extends Original {
    constructor(filename: string | URL, options?: WorkerOptions) {
      const recording = recordingOptions(options);
      try {
        super(filename, recording);
      } catch (err) {
        // Worker refuses, given in execArgv, many flags it takes over when
        // execArgv is left out (--expose-gc, --max-old-space-size=N, ...):
        // such a worker starts as the caller asked and records nothing.
        if (recording === options || (err as { code?: unknown } | null)?.code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err;
        super(filename, options);
      }
    }
  };
  try {
    (workerThreads as { Worker: unknown }).Worker = Worker;
  } catch {
    // a read-only property: such workers are not recorded
  }
}

/**
 * The options wrapWorker starts a worker with: while this thread records, a
 * worker given neither `env` nor `execArgv` is given this thread's
 * environment and execArgv, one given `env: SHARE_ENV` and no `execArgv` this
 * thread's execArgv; else `options` itself (the same object: nothing to
 * fall back from when Worker refuses).
 */
function recordingOptions(options: WorkerOptions | undefined): WorkerOptions | undefined {
  if (logFd === undefined || options?.execArgv !== undefined) return options;
  // `env: process.env`: this thread's, which may be an object of the
  // program's own (jest gives each test file a copy of the environment)
  // that a worker given no env does not read.
  if (options?.env == null) return { ...options, env: process.env, execArgv: process.execArgv };
  if (options.env === SHARE_ENV) return { ...options, execArgv: process.execArgv };
  return options;
}

/**
 * Node's fs binding (the object fs's functions call into), if this Node
 * still gives it out (process.binding is deprecated: with
 * --pending-deprecation Node warns once, DEP0111).
 */
function fsBinding(): object | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding('fs');
    return typeof (binding as { close?: unknown } | null)?.close === 'function' ? (binding as object) : undefined;
  } catch {
    return undefined;
  }
}

/** As wrapClose, for a call whose first argument is a list of fds, which it closes all or (`refused`) none of. */
function wrapCloseMany(obj: object, name: string, refused: (result: unknown) => boolean = () => false): void {
  const o = obj as Record<string, unknown>;
  const original = o[name];
  if (typeof original !== 'function') return;
  o[name] = function (this: unknown, ...args: unknown[]): unknown {
    const fds = args[0];
    const listed = logFd !== undefined && fds !== null && typeof fds === 'object' && Symbol.iterator in fds ? [...(fds as Iterable<unknown>)] : [];
    for (const fd of listed) recordClose(fd);
    const result = (original as AnyFn).apply(this, args);
    if (refused(result)) for (const fd of listed) recordClose(fd, true);
    return result;
  };
}

/**
 * Records fds for the length of an in-process check (checkFdLeaks with
 * trackFds): in this thread (JS stacks, the main thread's or a worker's),
 * and in the Node processes it starts meanwhile, which inherit the
 * environment. Inside a run or a check that records already (its directory
 * in the environment), it records into that one's directory and its stop()
 * leaves it recording. `stop()` closes the log, puts the environment back
 * and removes the records; it must come after they were read.
 */
export function startFdTracking(): { dir: string; stop(): void } {
  const running = process.env[ENV_DIR];
  if (running) {
    installJsTracking();
    return { dir: running, stop: () => undefined };
  }
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-fdtrack-'));
  const added = trackingEnvironment(dir, undefined);
  const saved = Object.fromEntries(Object.keys(added).map((k) => [k, process.env[k]]));
  Object.assign(process.env, added);
  installJsTracking(true);
  return {
    dir,
    stop() {
      stopJsTracking();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      delete process.env[ENV_LOG_FD];
      delete process.env[ENV_LOG_ID];
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Stops this thread's JS recorder (its wrappers stay, and record nothing) and closes the log it opened. */
function stopJsTracking(): void {
  // Stryker disable next-line ConditionalExpression: forced true, closeSync(undefined) throws only in a stop whose start found this thread recording though the environment named no directory (the program deleted FDBRIDGE_FDTRACK_DIR from process.env during a tracked check); not equivalent, no test stages it
  if (ownLog !== undefined) closeSync(ownLog);
  logFd = ownLog = inheritedId = nativeFile = undefined;
}

// ---------------------------------------------------------------------------
// reading

interface JsRecord {
  fd: number;
  target: string;
  call: string;
  stack: string[];
  /** A close of `fd` (no target, call or stack): what was recorded before it is over. */
  closed?: true;
  /** The close of `fd` just recorded was refused, the fd left open: what it ended stands again. */
  kept?: true;
  /** The sequence number of the native record of `fd` when this was recorded, naming `target` (nativeSeq). */
  nseq?: number;
}

/** The last JS record of `fd` in `pid`'s log, if it names `target` and no close of `fd` (but a refused one) came after it. */
function jsOrigin(dir: string, pid: number, fd: number, target: string): JsRecord | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, `js-${pid}.log`), 'utf8');
  } catch {
    return undefined;
  }
  let found: JsRecord | undefined;
  /** What the last close ended, while nothing but that close came after it. */
  let ended: JsRecord | undefined;
  for (const line of text.split('\n')) {
    // Stryker disable next-line ConditionalExpression,StringLiteral: a prefilter (other fds' lines are not parsed); r.fd === fd below decides the same
    if (!line.includes(`"fd":${fd},`)) continue;
    try {
      const r = JSON.parse(line) as JsRecord;
      // Stryker disable next-line ConditionalExpression: `r.fd !== fd` forced false: the prefilter above lets through only lines whose fd key is `fd` (JSON.stringify escapes the quotes of a `"fd":N,` inside a string)
      if (r.fd !== fd) continue;
      if (r.kept) {
        found = ended;
        continue;
      }
      ended = r.closed ? found : undefined;
      found = !r.closed && r.target === target ? r : undefined;
    } catch {
      // a line cut short by a crash
    }
  }
  return found;
}

// The layout of native/fdtrack/fdtrack.c's file (x86-64 and aarch64 Linux: little-endian, 8-byte aligned).
const MAX_FDS_AT = 8;
const FRAMES_AT = 12;
const NMODULES_AT = 16;
const FLAGS_AT = 20;
/** fdtrack.c's FLAG_IO_URING: a ring that can make fds was set up. */
const FLAG_IO_URING = 1;
/** fdtrack.c's FLAG_EXEC: the image that wrote the records called exec, and no image mapped the file since: the running one is not recorded. */
const FLAG_EXEC = 2;
const MODULES_AT = 24;
/** The header's part before the module table: magic, max_fds, frames, nmodules, flags. */
const FIXED_HEADER = MODULES_AT;
const MODULE_PATH = 240;
const MODULES = 128;
const BASES_AT = MODULES_AT + MODULES * MODULE_PATH;
const HEADER = BASES_AT + MODULES * 8;
const TARGET = 200;
const FRAME = 16;
const KINDS = [
  'open', 'socket', 'socketpair', 'accept', 'pipe', 'dup', 'fcntl', 'eventfd', 'memfd_create', 'epoll_create', 'inotify_init', 'timerfd_create', 'signalfd', 'recvmsg', 'pidfd_open', 'pidfd_getfd',
  'io_uring_setup', "io_uring_setup (libuv's epoll_ctl ring)",
];
/** fdtrack.c's K_IO_URING_LIBUV: libuv's ring for epoll_ctl alone, set up by libuv (its shape and its caller). */
const KIND_LIBUV_RING = KINDS.indexOf("io_uring_setup (libuv's epoll_ctl ring)");

interface NativeRecord {
  call: string;
  frames: Array<{ module: string | undefined; offset: bigint }>;
  /** Its place in the order of the process's native records (fdtrack.c next_seq). */
  seq: number;
  /** The process set up an io_uring ring that can make fds (fdtrack.c FLAG_IO_URING). */
  ioUring: boolean;
}

function cString(buf: Buffer, at: number, max: number): string {
  const end = buf.indexOf(0, at);
  // Stryker disable next-line EqualityOperator: `end >= at + max`: at equality both branches end at at + max
  return buf.toString('utf8', at, end === -1 || end > at + max ? at + max : end);
}

/**
 * The first `headBytes` of the native file `path` (the header's fixed part
 * at least) and the record of `fd` in it; undefined when there is no such
 * file, it is not fdtrack.c's, `fd` is beyond it or its record was never
 * written (or is being written now: fdtrack.c zeroes `seq` first).
 */
function readNative(path: string, fd: number, headBytes: number): { head: Buffer; rec: Buffer } | undefined {
  let fh: number;
  try {
    fh = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const head = Buffer.alloc(headBytes);
    if (readAt(fh, head, 0) < headBytes || head.toString('latin1', 0, 8) !== 'fdtrack1') return undefined;
    if ((head.readUInt32LE(FLAGS_AT) & FLAG_EXEC) !== 0) return undefined;
    const maxFds = head.readUInt32LE(MAX_FDS_AT);
    const nframes = head.readUInt32LE(FRAMES_AT);
    // Stryker disable next-line ConditionalExpression,EqualityOperator: fdtrack.c sizes its file to exactly max_fds records, so a read at fd >= maxFds comes back short and the record check below returns undefined too
    if (fd >= maxFds) return undefined;
    const recordSize = 16 + TARGET + nframes * FRAME;
    const rec = Buffer.alloc(recordSize);
    if (readAt(fh, rec, HEADER + fd * recordSize) < recordSize || rec.readBigUInt64LE(0) === 0n) return undefined;
    return { head, rec };
  } finally {
    closeSync(fh);
  }
}

/** The native record of `fd` in `pid`'s file, if its target is `target`. */
function nativeOrigin(dir: string, pid: number, fd: number, target: string): NativeRecord | undefined {
  const read = readNative(join(dir, `native-${pid}.bin`), fd, HEADER);
  if (!read || cString(read.rec, 16, TARGET) !== target) return undefined;
  const { head, rec } = read;
  const nframes = head.readUInt32LE(FRAMES_AT);
  const nmodules = head.readUInt32LE(NMODULES_AT);
  const modules = Array.from({ length: nmodules }, (_, i) => cString(head, MODULES_AT + i * MODULE_PATH, MODULE_PATH));
  const frames = Array.from({ length: Math.min(rec.readUInt32LE(8), nframes) }, (_, i) => {
    const at = 16 + TARGET + i * FRAME;
    const m = rec.readUInt32LE(at);
    // Stryker disable next-line ConditionalExpression,EqualityOperator: module 0 (JIT code) forced through reads modules[-1], undefined as well
    return { module: m > 0 ? modules[m - 1] : undefined, offset: rec.readBigUInt64LE(at + 8) };
  });
  return {
    call: KINDS[rec.readUInt32LE(12)] ?? 'an fd-making call',
    frames,
    seq: Number(rec.readBigUInt64LE(0)),
    ioUring: (head.readUInt32LE(FLAGS_AT) & FLAG_IO_URING) !== 0,
  };
}

function readAt(fd: number, buf: Buffer, position: number): number {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:fs') as typeof import('node:fs')).readSync(fd, buf, 0, buf.length, position);
}

/** Modules whose frames say nothing about who opened an fd: the C library, the loader, the recorder, the Node binary. */
function isRuntime(module: string): boolean {
  return /\/(libc|libpthread|ld-linux|libfdtrack)[^/]*$/.test(module) || module === '/proc/self/exe' || /\/node$/.test(module);
}

/**
 * The frames as people read them: `function (file:line)` from addr2line for
 * shared objects (the addon, libraries), from the first frame that is not
 * the C library; frames in the Node binary and JIT code end the list (the
 * JS stack tells that part).
 */
function symbolize(frames: NativeRecord['frames']): string[] {
  const kept: Array<{ module: string; offset: bigint }> = [];
  for (const f of frames) {
    if (f.module === undefined) break;
    if (isRuntime(f.module)) {
      if (kept.length > 0) break;
      continue;
    }
    kept.push({ module: f.module, offset: f.offset });
  }
  return kept.map(({ module, offset }) => {
    // A return address: the call is the byte before.
    // Stryker disable next-line ConditionalExpression,EqualityOperator: offset 0 (the ELF header: never a return address) forced through asks addr2line for 0x-1, which it reads as 0x0 and answers the same ?? and ??:0
    const hex = `0x${(offset > 0n ? offset - 1n : 0n).toString(16)}`;
    try {
      const out = execFileSync('addr2line', ['-f', '-C', '-e', module, hex], {
        encoding: 'utf8',
        // Stryker disable next-line ArrayDeclaration: `[]` pipes stdin and stderr as well: addr2line given addresses reads no stdin, and execFileSync with stdio given writes none of the child's stderr anywhere
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      // Stryker disable next-line StringLiteral: the defaults are never taken: split gives one element at least (fn), and addr2line -f prints two lines an address (where)
      const [fn = '??', where = '??:0'] = out.split('\n');
      const place = where.startsWith('??') ? `${module.replace(/.*\//, '')}+0x${offset.toString(16)}` : normalize(where.replace(/ \(discriminator \d+\)$/, ''));
      return `${fn === '??' ? '?' : withoutParameters(fn)} (${place})`;
    } catch {
      return `${module.replace(/.*\//, '')}+0x${offset.toString(16)}`;
    }
  });
}

/** `ns::f(int, char*)` -> `ns::f`: the parameter list of a demangled name, which only makes the line long. */
function withoutParameters(fn: string): string {
  if (!fn.endsWith(')')) return fn;
  let depth = 0;
  // Stryker disable next-line ArithmeticOperator,EqualityOperator: starting past the end reads undefined, neither paren; index 0 is never the `(` that closes the walk (a demangled name comes before its parameter list)
  for (let i = fn.length - 1; i >= 0; i--) {
    if (fn[i] === ')') depth++;
    else if (fn[i] === '(' && --depth === 0) return fn.slice(0, i);
  }
  return fn;
}

/**
 * Where fd `fd` of process `pid` (naming `target` now) was opened, from the
 * records in `dir`; undefined when no recorder saw it made.
 */
export function fdOrigin(dir: string, pid: number, fd: number, target: string): FdOrigin | undefined {
  const js = jsOrigin(dir, pid, fd, target);
  const nat = nativeOrigin(dir, pid, fd, target);
  if (!js && !nat) return undefined;
  const native = nat ? symbolize(nat.frames) : [];
  // The native record is still the one the JS record noted: no fd was made at this number since through the C library.
  const current = js?.nseq !== undefined && nat?.seq === js.nseq && !nat.ioUring && !ringOpen(dir, pid);
  return {
    call: js?.call ?? (nat?.call === 'recvmsg' ? 'recvmsg (received over a Unix socket)' : (nat?.call ?? '?')),
    ...(js ? { js: js.stack } : {}),
    ...(native.length > 0 ? { native } : {}),
    ...(js ? { unconfirmed: true as const } : {}),
    ...(current ? { nativeCurrent: true as const } : {}),
  };
}

/**
 * What the report gives for fd `fd` of process `pid` (naming `target` now):
 * its origin (fdOrigin), else `call: 'unseen'` in a process a recorder ran
 * in, and `call: 'untracked'` in one where none did: it was started before
 * tracking began, or could not write its records (installJsTracking runs a
 * process that cannot open its log unrecorded; fdtrack.c one that cannot
 * map its file), so nothing it opened could have been seen.
 */
export function leakOrigin(dir: string, pid: number, fd: number, target: string): FdOrigin {
  const origin = fdOrigin(dir, pid, fd, target);
  if (origin) return origin;
  // A directory removed under the check (a temporary directory cleaned) took
  // every process's records with it: nothing tells then whether one ran.
  const recorded = !existsSync(dir) || existsSync(join(dir, `js-${pid}.log`)) || nativeRecording(join(dir, `native-${pid}.bin`));
  return { call: recorded ? 'unseen' : 'untracked' };
}

/** Whether the native file `path` is the running image's: there, and not left by an image that called exec (fdtrack.c FLAG_EXEC). */
function nativeRecording(path: string): boolean {
  try {
    return existsSync(path) && !execFlagged(path);
  } catch {
    return false;
  }
}

function execFlagged(path: string): boolean {
  const fh = openSync(path, 'r');
  try {
    const head = Buffer.alloc(FIXED_HEADER);
    return readAt(fh, head, 0) === FIXED_HEADER && (head.readUInt32LE(FLAGS_AT) & FLAG_EXEC) !== 0;
  } finally {
    closeSync(fh);
  }
}

/**
 * Whether `pid` has an io_uring ring open now that can make fds, one the
 * native recorder may not have seen set up (liburing makes its system calls
 * itself); true when its fd table cannot be read. Only libuv's ring for
 * epoll_ctl alone is left out: a ring whose native record in `dir` says
 * libuv set it up (fdtrack.c libuv_epoll_ring, which clears that record
 * when the number is closed) and whose fdinfo still shows that shape
 * (`SqMask: 0xff`, 256 entries, and `SqThread: -1`). The shape alone is
 * not enough: another ring of 256 entries without a kernel thread
 * (liburing's io_uring_queue_init(256, &ring, 0)) has it too. A kernel
 * whose fdinfo shows neither has every ring counted.
 */
function ringOpen(dir: string, pid: number): boolean {
  const file = join(dir, `native-${pid}.bin`);
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return true;
  }
  for (const fd of fds) {
    let info: string;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:[io_uring]') continue;
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    if (!/^SqMask:\s*0xff$/m.test(info) || !/^SqThread:\s*-1$/m.test(info) || !libuvRingRecord(file, Number(fd))) return true;
  }
  return false;
}

/** Whether the native record of `fd` in `file` is of a ring libuv set up for epoll_ctl (fdtrack.c K_IO_URING_LIBUV). */
function libuvRingRecord(file: string, fd: number): boolean {
  try {
    return readNative(file, fd, FIXED_HEADER)?.rec.readUInt32LE(12) === KIND_LIBUV_RING;
  } catch {
    return false;
  }
}


/** The lines that show an origin under a leak, indented by `indent`. */
export function describeFdOrigin(origin: FdOrigin | undefined, indent = '    '): string[] {
  // 'unseen' is how a leak with no record is kept (results.json): no call of that name opened it.
  if (!origin || origin.call === 'unseen') return [`${indent}opened by a call --track-fds did not see (no record for this fd)`];
  // 'untracked': no recorder ran in the process (leakOrigin).
  if (origin.call === 'untracked') {
    return [`${indent}not tracked: --track-fds recorded nothing in this process (started before tracking began, or it could not write its records, as a process started as another user cannot)`];
  }
  const lines = [
    origin.unconfirmed
      ? `${indent}opened by ${origin.call}, unless a close --track-fds cannot see (by a thread it does not record, or by native code) freed this number after that and a call it did not see put the same file here again`
      : `${indent}opened by ${origin.call}`,
  ];
  for (const f of origin.native ?? []) lines.push(`${indent}  native: ${f}`);
  for (const f of origin.js ?? []) lines.push(`${indent}  at ${f}`);
  if (origin.nativeCurrent) lines.push(`${indent}  (the native recorder saw no fd made at this number after it, through the C library, in any thread)`);
  return lines;
}
