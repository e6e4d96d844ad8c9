/**
 * Every error fdbridge raises at run time is an {@link FdBridgeError} with a
 * stable `code`. Bad arguments throw plain `TypeError`/`RangeError` at once.
 *
 * System errors follow Node's own convention: `code` is the errno name
 * (`'EBADF'`), `errno` the negative errno (`-9`), `syscall` the failing call.
 */
import { constants as osConstants } from 'node:os';
import { getSystemErrorName, types } from 'node:util';

import { linuxErrno } from './linux-errnos';
import type { TransportName } from './transports';

const BRAND = Symbol.for('fdbridge.error');

export interface FdBridgeErrorOptions {
  cause?: unknown;
}

/**
 * Base class of every fdbridge error.
 *
 * `instanceof` works across copies of this module (the compiled dist/ and the
 * TypeScript sources, or two installed versions, can meet in one process when
 * a command module is loaded by path): each error carries its class names
 * under a global symbol, and the classes check that brand.
 */
export class FdBridgeError extends Error {
  readonly code: string;
  readonly [BRAND]: readonly string[];

  constructor(code: string, message: string, options?: FdBridgeErrorOptions) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.code = code;
    const names: string[] = [];
    // Stryker disable next-line ConditionalExpression: `typeof c === 'function'` forced true changes nothing: new.target extends Error, so the walk up its prototypes meets Error before anything that is not a function
    for (let c: unknown = new.target; typeof c === 'function' && c !== Error; c = Object.getPrototypeOf(c)) {
      names.push((c as { name: string }).name);
    }
    this[BRAND] = names;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    try {
      const names = typeof value === 'object' && value !== null ? (value as { [BRAND]?: unknown })[BRAND] : undefined;
      if (Array.isArray(names)) return names.includes(this.name);
      return Function.prototype[Symbol.hasInstance].call(this, value);
    } catch {
      // A thrown value whose getter (or Proxy trap) throws: none of ours.
      return false;
    }
  }

  override get name(): string {
    return this.constructor.name;
  }
}

/** True for any fdbridge error, even one built by another copy of the library. */
export function isFdBridgeError(value: unknown): value is FdBridgeError {
  return value instanceof FdBridgeError;
}

/** A system call failed. */
export class SystemError extends FdBridgeError {
  /** Negative errno, as in Node's own errors (`-9` for EBADF). */
  readonly errno: number;
  readonly syscall: string;
  /**
   * The entry of a list the failure is about, and its number: of a
   * dupFileDescriptors list, an fd that is not open or one of fdbridge's
   * own; of a closeClientFds list, the first fd that is not the client's
   * (EBADF both). Absent for a failure not about one entry.
   */
  declare readonly index?: number;
  declare readonly fd?: number;

  constructor(errno: number, syscall: string, message?: string, options?: FdBridgeErrorOptions & { entry?: { index: number; fd: number } }) {
    const neg = errno > 0 ? -errno : errno;
    const name = errnoName(neg);
    super(name, message ?? `${syscall} failed: ${name} (${describeErrno(neg)})`, options);
    this.errno = neg;
    this.syscall = syscall;
    if (options?.entry) Object.assign(this, { index: options.entry.index, fd: options.entry.fd });
  }
}

/**
 * `err`, a Node error that carries a system errno (libuv's: `errno` a
 * number, `code` its name), as a SystemError for `syscall`, the call or step
 * that failed; the message says `what` could not be done, and why. `errno`:
 * the errno when `err` names it some other way. Undefined for an error with
 * no errno.
 */
export function systemErrorOf(err: unknown, syscall: string, what: string, errno: unknown = (err as { errno?: unknown } | null)?.errno): SystemError | undefined {
  if (typeof errno !== 'number' || !Number.isInteger(errno) || errno === 0) return undefined;
  const neg = errno > 0 ? -errno : errno;
  return new SystemError(neg, syscall, `${what}: ${syscall} failed: ${errnoName(neg)} (${describeErrno(neg)})`, { cause: err });
}

/**
 * The refusal of `fd`, one of fdbridge's own numbers (its registry: a
 * connection's or a daemon's socket, a pin, a command's copy), named to
 * `operation` where a caller names its own fds: a SystemError EBADF naming
 * the operation and the fd. `consequence`: what the operation would have
 * done, for the message. Made by the TypeScript checks (src/fd.ts,
 * refuseOwnFd) and for the addon's own refusals (native.ts, kind 'ownfd').
 */
export function ownFdRefusal(fd: number, operation: string, consequence: string): SystemError {
  return new SystemError(
    osConstants.errno.EBADF,
    operation,
    `${operation}: fd ${fd} is one of fdbridge's own (a connection's or a daemon's socket, a pin, a command's copy): it has its owner, ` +
      `which closes it; ${consequence}`,
  );
}

/** Why a second owner of one of fdbridge's own numbers is refused (new UnixSocket, fromListeningFd, new OwnedFd). */
export const SECOND_OWNER = 'a second owner would close the number again, another file by then perhaps';

/** The peer closed its end (end of file on a STREAM or SEQPACKET socket). */
export class EofError extends FdBridgeError {
  constructor(message = 'the peer closed the socket', options?: FdBridgeErrorOptions) {
    super('ERR_FDBRIDGE_EOF', message, options);
  }
}

/**
 * A message arrived cut short: its control data (`MSG_CTRUNC`: the fds did not
 * all fit, from a small buffer or the receiver's RLIMIT_NOFILE) or its data
 * (`MSG_TRUNC`). Every fd of that message that did arrive has been closed;
 * `fdsClosed` says how many.
 */
export class TruncatedError extends FdBridgeError {
  readonly what: 'control' | 'data';
  readonly fdsClosed: number;
  readonly bytes: number;
  /**
   * The message's data as far as it arrived (whole for a control truncation
   * on DGRAM/SEQPACKET), so a protocol can still answer the request; empty
   * when unknown.
   */
  readonly data: Buffer;

  constructor(what: 'control' | 'data', fdsClosed: number, bytes: number, syscall = 'recvmsg', data?: Buffer) {
    const reason =
      what === 'control'
        ? 'its fds did not all fit (MSG_CTRUNC: control buffer too small or the receiver is at its fd limit)'
        : `its ${bytes} data bytes did not fit the receive buffer (MSG_TRUNC)`;
    super(
      'ERR_FDBRIDGE_TRUNCATED',
      `${syscall}: message truncated: ${reason}; ${fdsClosed} fd(s) that did arrive were closed`,
    );
    this.what = what;
    this.fdsClosed = fdsClosed;
    this.bytes = bytes;
    this.data = data ?? Buffer.alloc(0);
  }
}

/**
 * A send found the socket's send queue at its limit: the peer has not been
 * reading for as long as it took to queue `limit` bytes (a burst far beyond
 * what it drains, or a peer that stopped reading). Nothing of this send was
 * sent or queued, and the fds it named were not touched; everything queued
 * before it still goes out in order, and the socket stays usable.
 */
export class QueueFullError extends FdBridgeError {
  /** What the queue held: bytes charged (data plus bookkeeping per message) and messages. */
  readonly queuedBytes: number;
  readonly queuedMessages: number;
  /** The limit, in bytes. */
  readonly limit: number;
  /**
   * Set when an unbound datagram sender's queued datagrams wait for the most
   * receivers one socket waits for at once (64) and this one was for another:
   * how many; the bytes were not what refused it.
   */
  readonly waitingReceivers?: number;

  constructor(
    message: string,
    queue: { queuedBytes: number; queuedMessages: number; limit: number; waitingReceivers?: number },
    options?: FdBridgeErrorOptions,
  ) {
    super('ERR_FDBRIDGE_QUEUE_FULL', message, options);
    this.queuedBytes = queue.queuedBytes;
    this.queuedMessages = queue.queuedMessages;
    this.limit = queue.limit;
    if (queue.waitingReceivers !== undefined) this.waitingReceivers = queue.waitingReceivers;
  }
}

/** An operation on something already closed by its owner. */
export class ClosedError extends FdBridgeError {
  constructor(message: string) {
    super('ERR_FDBRIDGE_CLOSED', message);
  }
}

/**
 * A connection ended because one of its fds was closed by someone other
 * than fdbridge (the program closed a number it does not own): `what` names
 * the fd ("its socket"), `consequence` what no longer gets through.
 */
export function closedBehindBackError(transport: string, what: string, fd: number, consequence: string): ClosedError {
  return new ClosedError(
    `the ${transport} connection ended: ${what} (fd ${fd}) was closed by someone other than fdbridge ` +
      `(a close of a number the program does not own), so ${consequence}; close() the connection`,
  );
}

/**
 * A deadline the caller set has passed: e.g. a datagram receive with
 * `timeoutMs` (a datagram peer that died sends no end of file, so waiting
 * for its answer needs a deadline or its pidfd).
 */
export class TimeoutError extends FdBridgeError {
  constructor(message: string, options?: FdBridgeErrorOptions) {
    super('ERR_FDBRIDGE_TIMEOUT', message, options);
  }
}

/**
 * The process a receive was waiting on (`peerPidfd`) exited before anything
 * arrived: how a datagram peer's death is seen, since it sends no end of
 * file.
 */
export class PeerGoneError extends FdBridgeError {
  constructor(message: string, options?: FdBridgeErrorOptions) {
    super('ERR_FDBRIDGE_PEER_GONE', message, options);
  }
}

/** A peer broke the wire protocol (bad frame, unexpected fds, unknown reply). */
export class ProtocolError extends FdBridgeError {
  constructor(message: string, options?: FdBridgeErrorOptions) {
    super('ERR_FDBRIDGE_PROTOCOL', message, options);
  }
}

/** The kernel or the process's permissions do not allow the operation. */
export class UnsupportedError extends FdBridgeError {
  constructor(message: string, options?: FdBridgeErrorOptions) {
    super('ERR_FDBRIDGE_UNSUPPORTED', message, options);
  }
}

/**
 * The errno name for a (negative or positive) errno, e.g. `EBADF`: libuv's,
 * or on Linux, for an errno libuv has no name for (ETOOMANYREFS), Linux's
 * own (LINUX_ERRNOS).
 */
export function errnoName(errno: number): string {
  let name: string;
  try {
    // Stryker disable next-line EqualityOperator: `>=` turns 0 into -0, which getSystemErrorName refuses as it refuses 0: the same "Unknown system error 0"
    name = getSystemErrorName(errno > 0 ? -errno : errno);
  } catch {
    return `Unknown system error ${errno}`;
  }
  return name.startsWith('Unknown system error') ? (linuxErrno(Math.abs(errno))?.[0] ?? name) : name;
}

function describeErrno(neg: number): string {
  const messages: Record<string, string> = {
    EBADF: 'bad file descriptor',
    EINVAL: 'invalid argument',
    EPIPE: 'the peer has closed its end',
    ECONNRESET: 'connection reset by the peer',
    ECONNREFUSED: 'nobody is listening there',
    ENOENT: 'no such file or directory',
    EADDRINUSE: 'the address is already in use',
    ENAMETOOLONG: 'name too long (sun_path holds 107 bytes plus NUL)',
    EMFILE: 'the process is at its fd limit (RLIMIT_NOFILE)',
    EPERM: 'operation not permitted',
    EACCES: 'permission denied',
    ESRCH: 'no such process',
    EAGAIN: 'resource temporarily unavailable',
    ECANCELED: 'cancelled: the socket was closed first',
    ENOTSOCK: 'not a socket',
    ENOSYS: 'not implemented by this kernel',
    ENOPROTOOPT: 'option not supported by this kernel',
    EMSGSIZE: 'message too long for the socket',
  };
  return messages[errnoName(neg)] ?? linuxErrno(-neg)?.[1] ?? 'system error';
}

export interface PeerExit {
  transport: TransportName;
  pid: number;
  threadId?: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** How it ended when neither an exit code nor a signal is known, e.g. 'exited' or 'closed the connection'. */
  detail?: string;
}

/**
 * The command's side went away (process killed or exited, worker terminated,
 * connection dropped) before replying. Every call that was pending rejects
 * with this error.
 */
export class PeerExitedError extends FdBridgeError {
  readonly transport: TransportName;
  readonly pid: number;
  readonly threadId: number | undefined;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;

  constructor(operation: string, exit: PeerExit) {
    const where =
      exit.transport === 'worker'
        ? `the worker thread ${exit.threadId ?? '?'}`
        : exit.transport === 'helper'
          ? `the helper daemon (pid ${exit.pid})`
          : exit.transport === 'remote'
            ? `the remote command's channel (via process pid ${exit.pid})`
            : `the ${exit.transport} process (pid ${exit.pid})`;
    const how =
      exit.signal !== null
        ? `was killed by ${exit.signal}`
        : exit.exitCode !== null
          ? `exited with code ${exit.exitCode}`
          : (exit.detail ?? 'closed the connection');
    super('ERR_FDBRIDGE_PEER_EXITED', `${operation} failed: ${where} ${how} before replying`);
    this.transport = exit.transport;
    this.pid = exit.pid;
    this.threadId = exit.threadId;
    this.exitCode = exit.exitCode;
    this.signal = exit.signal;
  }
}

/** What a command threw, carried back from wherever it ran. */
export interface RemoteErrorInfo {
  name: string;
  message: string;
  code?: string;
  /** A SystemError's failing call. */
  syscall?: string;
  stack?: string;
}

/** The command's method threw (or rejected); `remote` describes what it threw. */
export class RemoteError extends FdBridgeError {
  readonly remote: RemoteErrorInfo;
  readonly method: string;

  constructor(method: string, remote: RemoteErrorInfo) {
    super(
      'ERR_FDBRIDGE_REMOTE',
      `${method}() failed in the command: ${remote.name}${remote.code ? ` [${remote.code}]` : ''}: ${remote.message}`,
    );
    this.remote = remote;
    this.method = method;
  }
}

/**
 * One side of a helper connection would not deal with the other: the daemon
 * refused this client (its uid is not allowed there, or the daemon is at
 * its connection limit), or this client refused the process listening at
 * the socket (`peer` set: its SO_PEERCRED uid/pid is not one the client
 * trusts), in which case nothing at all was sent to it.
 */
export class PeerRefusedError extends FdBridgeError {
  /** The refused listener's credentials, when the client refused the daemon. */
  readonly peer: { pid: number; uid: number; gid: number } | undefined;
  /** The daemon's limit that refused this client ('connections', 'uidConnections'), if one did. */
  readonly quota: QuotaName | undefined;

  constructor(message: string, peer?: { pid: number; uid: number; gid: number }) {
    super('ERR_FDBRIDGE_REFUSED', message);
    this.peer = peer;
    // The daemon's REFUSED message, quoted after the client's own words, starts "quota <name>:" when a limit refused.
    // Stryker disable next-line StringLiteral: any other string that does not start "quota <name>:" names no quota either
    this.quota = peer === undefined ? quotaOf(/(?:^|: )(quota \w+:.*)/s.exec(message)?.[1] ?? '') : undefined;
  }
}

/**
 * A helper daemon does not serve the command a client named (not one of
 * its built-in ones, not one it was started with, or a module path where
 * it takes only names).
 */
export class UnknownCommandError extends FdBridgeError {
  constructor(message: string) {
    super('ERR_FDBRIDGE_UNKNOWN_COMMAND', message);
  }
}

/** What a helper daemon limits per client, and for all of them. */
export type QuotaName = 'connections' | 'uidConnections' | 'fds' | 'uidFds' | 'totalFds' | 'calls' | 'queuedBytes' | 'uidLogBytes' | 'helloTimeout' | 'idleTimeout';

const QUOTA_NAMES: readonly QuotaName[] = ['connections', 'uidConnections', 'fds', 'uidFds', 'totalFds', 'calls', 'queuedBytes', 'uidLogBytes', 'helloTimeout', 'idleTimeout'];

/** The quota named at the start of a message ("quota <name>: ..."), if any. */
export function quotaOf(message: string): QuotaName | undefined {
  const name = /^quota (\w+):/.exec(message)?.[1] as QuotaName | undefined;
  return name !== undefined && QUOTA_NAMES.includes(name) ? name : undefined;
}

/**
 * A helper daemon's limit turned a request (or a connection) away: more fds
 * left with the command than `fds` allows (or than `uidFds` allows all the
 * clients of one uid together, or `totalFds` every client), more requests
 * in flight than `calls`, replies piling up unread past `queuedBytes` (the
 * client is then disconnected), log lines of one uid waiting to be written
 * past `uidLogBytes` (that line refused), no HELLO within `helloTimeout`, idle past
 * `idleTimeout`. The message begins with "quota <name>:" on both sides of
 * the connection. (A connection refused by `connections` or
 * `uidConnections` is a PeerRefusedError whose `quota` names it.)
 */
export class QuotaExceededError extends FdBridgeError {
  readonly quota: QuotaName;

  constructor(quota: QuotaName, message: string) {
    super('ERR_FDBRIDGE_QUOTA', message.startsWith('quota ') ? message : `quota ${quota}: ${message}`);
    this.quota = quota;
  }

  /** The same error from its wire form (an ERROR frame's message). */
  static fromMessage(message: string): QuotaExceededError {
    return new QuotaExceededError(quotaOf(message) ?? 'calls', message);
  }
}

/**
 * Whether `value` is an Error, whichever realm made it. `instanceof Error`
 * is true only of this realm's: an error made in a vm context, or with the
 * classes of another jest test file's copy of this library (the addon makes
 * its errors with the factory the last realm to load it gave, native.init),
 * extends another Error. The one test for "is this an error" wherever a
 * thrown value may come from elsewhere; for fdbridge's own classes
 * `instanceof` works across realms already (their brand, FdBridgeError).
 */
export function isError(value: unknown): value is Error {
  try {
    return value instanceof Error || types.isNativeError(value);
  } catch {
    // A Proxy whose getPrototypeOf trap throws: no error of any realm.
    return false;
  }
}

/**
 * A thrown value as a string, whatever it is: String() throws for an
 * object whose toString throws or returns an object, and for a Proxy whose
 * traps throw (Object.prototype.toString reads Symbol.toStringTag through
 * them too).
 */
export function shown(value: unknown): string {
  try {
    return String(value);
  } catch {
    // its conversion threw: the kind of value it is
  }
  try {
    return Object.prototype.toString.call(value);
  } catch {
    return `(a value of type ${typeof value} that cannot be shown)`;
  }
}

/**
 * An error's message as a string, never throwing: what String() makes of
 * one that is no string (see shown), '' for none, and what reading it threw
 * when its getter (or a Proxy's trap) throws.
 */
function messageOf(err: Error): string {
  let value: unknown;
  try {
    value = err.message;
  } catch (thrown) {
    return `(its message could not be read: reading it threw ${shown(thrown)})`;
  }
  // Stryker disable next-line ConditionalExpression,StringLiteral: the fast path for a string, which shown() gives back as it is
  if (typeof value === 'string') return value;
  return value === undefined ? '' : shown(value);
}

/** `read()` if it is a string; undefined if it is anything else or reading it throws. */
function stringOf(read: () => unknown): string | undefined {
  let value: unknown;
  try {
    value = read();
  } catch {
    // reading it threw: no string
  }
  return typeof value === 'string' ? value : undefined;
}

/**
 * A thrown value for a log line: its stack, if it has one that can be read
 * (reading V8's `stack` formats the error, which reads its `name` and
 * `message`: a getter of either that throws throws from there), else the
 * value as a string (shown).
 */
export function stackOf(err: unknown): string {
  // Stryker disable next-line OptionalChaining: without `?.`, null's or undefined's `.stack` throws inside stringOf's try, which gives undefined as well
  return stringOf(() => (err as { stack?: unknown } | null | undefined)?.stack) ?? shown(err);
}

/**
 * Describes any thrown value for sending across a context boundary, an
 * error made in another realm as one of this realm's (isError).
 * `stack: false` leaves the stack out (a shared helper daemon's replies: a
 * stack names its install paths and internals, none of its clients'
 * business).
 */
export function describeError(err: unknown, options: { stack?: boolean } = {}): RemoteErrorInfo {
  // Never throws, whatever was thrown: a getter that throws, a Proxy whose
  // traps throw or a name or message that is no string is described with
  // what could be read (a name that is no string as 'Error'), so that the
  // side serving the command answers it, and serves on.
  if (!isError(err)) return { name: 'Error', message: shown(err) };
  const e = err as Error & { code?: unknown; syscall?: unknown };
  const code = stringOf(() => e.code);
  const syscall = stringOf(() => e.syscall);
  const stack = options.stack === false ? undefined : stringOf(() => e.stack);
  return {
    name: stringOf(() => e.name) ?? 'Error',
    message: messageOf(e),
    ...(code !== undefined ? { code } : {}),
    ...(syscall !== undefined ? { syscall } : {}),
    ...(stack ? { stack } : {}),
  };
}

/** The end of a text cut to fit (cutToJsonBytes): how many UTF-16 code units (String.length's) were left off. */
function cutNote(left: number): string {
  return `… (cut: ${left} more characters)`;
}

/** The UTF-8 bytes of `text` as a JSON string: its quotes and escapes ('"' and '\\' take 2, a control character up to 6). */
function jsonBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text));
}

/**
 * The UTF-8 bytes JSON.stringify makes of the code unit `c` (not half of a
 * surrogate pair, whose 4 bytes the caller counts): '"' and '\\' escaped
 * (2), control characters as \b \t \n \f \r (2) or \u00XX (6), a lone
 * surrogate as \uXXXX (6), others as UTF-8.
 */
function jsonUnitBytes(c: number): number {
  if (c < 0x20) return c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6;
  if (c === 0x22 || c === 0x5c) return 2;
  if (c < 0x80) return 1;
  if (c < 0x800) return 2;
  return c >= 0xd800 && c <= 0xdfff ? 6 : 3;
}

/**
 * `text` if it takes at most `maxBytes` as a JSON string, else as much of
 * its start as fits with cutNote after it (never half a surrogate pair), or
 * '' when not even the note fits. One pass over at most `maxBytes` code
 * units, counting what JSON.stringify makes of each (jsonUnitBytes).
 */
export function cutToJsonBytes(text: string, maxBytes: number): string {
  // Every code unit takes a byte at least: a longer text cannot fit (nor is
  // it stringified whole, which could pass the longest string V8 makes).
  // Stryker disable next-line ConditionalExpression,EqualityOperator: `true` not equivalent, untestable here (it stringifies a text that cannot fit, which throws only past V8's longest string, 2^29 - 24 code units: more memory than a test may take); `<` (a text of maxBytes code units takes 2 bytes more as JSON: it never fits)
  const short = text.length <= maxBytes;
  if (short && jsonBytes(text) <= maxBytes) return text;
  // The note's quotes are the cut text's; its count is at most text.length.
  const room = maxBytes - jsonBytes(cutNote(text.length));
  if (room < 0) return '';
  let used = 0;
  let kept = 0;
  // Stryker disable next-line EqualityOperator: `<=` never reaches the end: a text that does not fit breaks before it
  while (kept < text.length) {
    const c = text.charCodeAt(kept);
    const next = text.charCodeAt(kept + 1);
    const pair = c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff;
    const bytes = pair ? 4 : jsonUnitBytes(c);
    if (used + bytes > room) break;
    used += bytes;
    kept += pair ? 2 : 1;
  }
  return text.slice(0, kept) + cutNote(text.length - kept);
}

/**
 * Whether `cut` is `text`, or what cutToJsonBytes made of it: a start of
 * it, then the note saying how many characters were left off, as many as
 * `text` has past that start.
 */
export function isCutOf(cut: string, text: string): boolean {
  if (cut === text) return true;
  const note = /… \(cut: (\d+) more characters\)$/.exec(cut);
  if (note === null) return false;
  const kept = cut.slice(0, note.index);
  return kept.length + Number(note[1]) === text.length && text.startsWith(kept);
}

/** The JSON of name, code and syscall at most: each field past it is cut (cutToJsonBytes). */
const SHORT_FIELD_BYTES = 1024;

/**
 * `info` as JSON of at most `maxBytes` UTF-8 bytes (at least 4 KiB), for an
 * ERROR frame: whole if it fits; else name, code and syscall cut to
 * SHORT_FIELD_BYTES each (a real one is far shorter: the client's typed
 * error is picked by them), then the
 * message cut to what is left, then the stack cut to what is left after
 * that, or left out. A message or stack may echo what a client sent, of
 * any length; an ERROR that did not fit one frame could not be sent.
 */
export function errorJson(info: RemoteErrorInfo, maxBytes: number): string {
  const whole: RemoteErrorInfo = { name: info.name, message: info.message };
  // Stryker disable next-line ConditionalExpression: forced true sets a key to undefined, which JSON.stringify leaves out as well
  if (info.code !== undefined) whole.code = info.code;
  // Stryker disable next-line ConditionalExpression: as code's
  if (info.syscall !== undefined) whole.syscall = info.syscall;
  // Stryker disable next-line ConditionalExpression: as code's
  if (info.stack !== undefined) whole.stack = info.stack;
  // What fits goes whole. Each code unit takes a byte at least: a longer one
  // is not stringified whole (which could pass the longest string V8 makes).
  // Stryker disable next-line ArithmeticOperator: not equivalent, untestable here: a smaller sum only stringifies whole what cannot fit, which throws only past V8's longest string (2^29 - 24 code units)
  const units = info.name.length + info.message.length + (info.code?.length ?? 0) + (info.syscall?.length ?? 0) + (info.stack?.length ?? 0);
  // Stryker disable next-line ConditionalExpression,EqualityOperator: as the sum above for `true`; `<` (maxBytes units take 20 bytes more as JSON, quotes and keys: they never fit)
  if (units <= maxBytes) {
    const json = JSON.stringify(whole);
    if (Buffer.byteLength(json) <= maxBytes) return json;
  }
  const out: RemoteErrorInfo = { name: cutToJsonBytes(info.name, SHORT_FIELD_BYTES), message: '' };
  if (info.code !== undefined) out.code = cutToJsonBytes(info.code, SHORT_FIELD_BYTES);
  if (info.syscall !== undefined) out.syscall = cutToJsonBytes(info.syscall, SHORT_FIELD_BYTES);
  // The message's room: all but the rest, whose "" it replaces.
  out.message = cutToJsonBytes(info.message, maxBytes - Buffer.byteLength(JSON.stringify(out)) + 2);
  if (info.stack !== undefined) {
    const stack = cutToJsonBytes(info.stack, maxBytes - Buffer.byteLength(JSON.stringify(out)) - Buffer.byteLength(',"stack":'));
    if (stack !== '') out.stack = stack;
  }
  return JSON.stringify(out);
}

/**
 * The error a failed duplication reports, from the far side's description
 * of it. A duplication runs no command code: what fails over there is a
 * system call (the command's process at its fd limit, where recvmsg cuts
 * the fds off or pidfd_getfd says EMFILE), and it is the same SystemError
 * a transport that duplicates in this process gets from dup(2), not a
 * RemoteError, naming the call the far side names (recvmsg for a
 * description that names none: a DUP's fds are received by it). Undefined
 * when the description is not a SystemError's.
 */
export function farSystemError(operation: string, info: RemoteErrorInfo): SystemError | undefined {
  if (info.name !== 'SystemError' || typeof info.code !== 'string') return undefined;
  const errno = (osConstants.errno as Record<string, number | undefined>)[info.code];
  if (errno === undefined) return undefined;
  return new SystemError(errno, info.syscall ?? 'recvmsg', `${operation} failed in the command's process: ${info.message}`);
}
