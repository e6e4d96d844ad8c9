/**
 * Unix domain sockets on the event loop, carrying data and fds together.
 * Thin, typed wrappers over the addon's Socket: every fd they create is
 * non-blocking and close-on-exec, every receive is driven by uv_poll.
 *
 * Ownership: `send` borrows the fds it is given; a received message's fds
 * belong to whoever received it; closing a socket closes every received fd
 * that nobody claimed.
 */
import { readlinkSync, statSync } from 'node:fs';
import { resolve } from 'node:path';

import { ClosedError, EofError, ownFdRefusal, PeerGoneError, SECOND_OWNER, SystemError, TimeoutError } from './errors';
import { closeOwnFds, handedOver, OwnedFd, ownedFdOfFdbridge, refuseOwnFd, validateFds } from './fd';
import { constants, native, type NativeExitWatch, type NativeMessageCallback, type NativeSocket } from './native';
import { socketFileIdentity, unlinkOwnSocketFile, type SocketFileIdentity } from './socket-file';
import { validateDeadlineMs, validateTimeoutMs } from './validate';

export type SocketKind = 'stream' | 'dgram' | 'seqpacket';

/**
 * A filesystem path, or a Linux abstract name (no file, per network
 * namespace). A name whose bytes are not UTF-8 is given as its bytes (a
 * Uint8Array or Buffer): a received `from` is one exactly when a string
 * could not name that very socket.
 */
export type SocketAddress = string | Uint8Array | { abstract: string | Uint8Array };

/** A socket name: a string (its UTF-8 bytes) or the bytes themselves. */
export type SocketName = string | Uint8Array;

/**
 * A sender bound at a relative path, as a received `from`: the kernel
 * reports the name as it was bound, relative to the sender's working
 * directory, and not that directory, so no other process can tell which
 * socket it names (resolved here, it would name one in the receiver's
 * directory). It cannot be answered: sendTo, connect and bind refuse it
 * with a TypeError. fdbridge's own bind binds absolute paths.
 */
export interface RelativeSenderName {
  relative: SocketName;
}

/** A received `from`: an address to answer, or a relative sender's name, which cannot be answered. */
export type SenderAddress = SocketAddress | RelativeSenderName;

/** Whether a received `from` is a relative sender's name (which cannot be answered). */
export function isRelativeSenderName(from: SenderAddress): from is RelativeSenderName {
  return relativeNameOf(from) !== undefined;
}

/** The name of `{ relative: name }`, else undefined. */
function relativeNameOf(address: unknown): SocketName | undefined {
  if (address === null || typeof address !== 'object' || address instanceof Uint8Array || !('relative' in address)) return undefined;
  const name = address.relative;
  return typeof name === 'string' || name instanceof Uint8Array ? name : undefined;
}

export interface Message {
  data: Buffer;
  /** Received fds, close-on-exec; the receiver owns them. */
  fds: number[];
  /**
   * On a socket made with `receiveFrom` (DatagramSocket): the sender's bound
   * address, null when it sent from an unbound socket, `{ relative: name }`
   * when it bound a relative path (it cannot be answered). Absent otherwise.
   */
  from?: SenderAddress | null;
  /** On a `receiveFrom` socket with SO_PASSCRED: the sender's credentials. */
  credentials?: Credentials;
}

/** A sender's pid, uid and gid as the kernel recorded them when it sent (SCM_CREDENTIALS). */
export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * What sending to a full datagram receiver does (Linux queues
 * net.unix.max_dgram_qlen datagrams per receiver): 'wait' queues the
 * datagram here until the receiver has room (the event loop sleeps
 * meanwhile) or is gone; 'fail' rejects at once with a SystemError EAGAIN,
 * nothing sent. Nothing is ever dropped silently.
 */
export type WhenFull = 'wait' | 'fail';

export interface ReceiveOptions {
  /**
   * Rejects with a TimeoutError if nothing arrives in time. A datagram peer
   * that died sends no end of file: whoever waits for its answer needs this
   * (or to watch the peer's pidfd). An integer from 0 to 2^31 - 1 (ms), else
   * a RangeError at once.
   */
  timeoutMs?: number;
  /**
   * A pidfd (borrowed) of the process expected to send: if it exits before
   * anything arrives, the receive rejects with PeerGoneError. The way to
   * wait for a datagram peer's answer without guessing a deadline.
   */
  peerPidfd?: number;
}

export interface UnixSocketOptions {
  /** How many fds one receive can take (an integer 0..253, default 253; else a RangeError). Fewer makes larger sets arrive truncated. */
  maxFds?: number;
  /** Receive buffer in bytes (an integer 1..64 MiB, default 64 KiB; else a RangeError): the largest DGRAM/SEQPACKET message accepted whole. */
  bufferSize?: number;
  /**
   * Receive every message into one reused buffer instead of a fresh Buffer
   * each (no allocation per message). A message handler then gets a view
   * that is valid only until it returns; receive() still hands out copies.
   */
  reuseBuffer?: boolean;
  /**
   * Hand the messages of this socket and of every other socket made with
   * this option to their handlers together, in one callback per turn of the
   * event loop, instead of one callback per message: for a server with many
   * connections (the helper daemon). Microtasks then run once after all of
   * them, and a handler's data is valid only until it returns (as with
   * reuseBuffer). A socket's own messages keep their order, and the next one
   * is read only after the previous one was handled, its microtasks run.
   */
  batchMessages?: boolean;
  /**
   * DGRAM: receive with the sender's address (and, with SO_PASSCRED, its
   * credentials) in every message (DatagramSocket sets this).
   */
  receiveFrom?: boolean;
  /**
   * The send queue's bound, in bytes (default 32 MiB). Sends the kernel
   * cannot take yet wait in a queue, in order; while it holds this much
   * (each message charged its data plus 256 bytes of bookkeeping), a send
   * throws QueueFullError with nothing sent. One message always fits an
   * empty queue.
   */
  sendQueueLimit?: number;
}

/**
 * For fdbridge's own sockets (not exported from the package): with `own`,
 * the socket is numbered at or above the fd floor and registered as an fd
 * fdbridge holds for itself (native/sock_ops.h), so that it never takes a
 * number the caller closed and may still name, and a caller naming it is
 * refused with EBADF as for a closed fd. A transport's connections, a
 * helper daemon's listening and accepted sockets are made so; sockets made
 * for a caller (whose fd the caller may send) are not.
 */
export interface OwnSocketOption {
  own?: boolean;
}

/** The send queue's bound unless UnixSocketOptions.sendQueueLimit says otherwise. */
export const DEFAULT_SEND_QUEUE_LIMIT = 32 * 1024 * 1024;

/** The fds of a message that carried none (shared, never mutated). */
const NO_FDS: number[] = Object.freeze([]) as unknown as number[];

/**
 * Hands one loop turn's messages of the batched sockets (batchMessages) to
 * their handlers, in the order they were read. Every message is handed on
 * even if a handler throws (its fds are owned by nobody else); the first
 * exception is rethrown once all are delivered, the others become uncaught
 * exceptions of their own, as they would have been one callback each.
 */
let batchViews: { data: ArrayBuffer; bytes: Buffer; meta: ArrayBuffer; numbers: Float64Array } | undefined;
function dispatchBatch(count: number, handlers: NativeMessageCallback[], data: ArrayBuffer, meta: ArrayBuffer): void {
  if (batchViews?.data !== data || batchViews.meta !== meta) {
    batchViews = { data, bytes: Buffer.from(data), meta, numbers: new Float64Array(meta) };
  }
  const { bytes, numbers } = batchViews;
  let first: { error: unknown } | undefined;
  for (let i = 0, at = 0; i < count; i++) {
    const offset = numbers[at] as number;
    const length = numbers[at + 1] as number;
    const nfds = numbers[at + 2] as number;
    at += 3;
    let fds: number[] | undefined;
    if (nfds > 0) {
      fds = new Array<number>(nfds);
      for (let k = 0; k < nfds; k++) fds[k] = numbers[at + k] as number;
      at += nfds;
    }
    try {
      (handlers[i] as NativeMessageCallback)(null, bytes.subarray(offset, offset + length), fds);
    } catch (error) {
      if (first === undefined) first = { error };
      else process.nextTick(() => { throw error; });
    }
  }
  if (first !== undefined) throw first.error;
}
let batchDispatcherSet = false;

/** Streaming receive: called for every message (ownership of fds passes) or receive error. */
export type MessageHandler = (
  err: Error | null,
  data?: Buffer,
  fds?: number[],
  from?: SenderAddress | null,
  credentials?: Credentials,
) => void;

export function kindToType(kind: SocketKind): number {
  switch (kind) {
    case 'stream':
      return constants.SOCK_STREAM;
    case 'dgram':
      return constants.SOCK_DGRAM;
    case 'seqpacket':
      return constants.SOCK_SEQPACKET;
    default:
      throw new TypeError(`socket kind must be 'stream', 'dgram' or 'seqpacket', not ${String(kind)}`);
  }
}

/**
 * An fd handed in as a listening socket (UnixServer.fromListeningFd, a
 * daemon's listenFd) is one, of the kind it is to be served as: else a
 * TypeError (ERR_INVALID_ARG_VALUE) saying what it is, thrown before
 * anything is done with it (no option set on it, no poll, no accept(2)).
 */
function checkListeningFd(fd: number, kind: SocketKind): void {
  let what: string | undefined;
  try {
    const shape = native.socketShape(fd);
    const itsKind = [constants.SOCK_STREAM, constants.SOCK_DGRAM, constants.SOCK_SEQPACKET].includes(shape.type) ? typeToKind(shape.type) : `type ${shape.type}`;
    if (!shape.unix) what = `a socket of another family than AF_UNIX (${itsKind})`;
    else if (itsKind !== kind) what = `a ${itsKind} socket`;
    else if (!shape.listening) what = `a ${itsKind} socket that is not listening`;
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOTSOCK') throw err; // EBADF: not an open fd
    what = 'something that is not a socket';
  }
  if (what === undefined) return;
  throw Object.assign(new TypeError(`fromListeningFd: fd ${fd} must be a listening Unix domain ${kind} socket (options.kind), not ${what}`), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
}

/**
 * What a receive's `peerPidfd` names must be a pidfd of the caller's: an
 * fd of another kind is a TypeError (ERR_INVALID_ARG_VALUE) saying what it
 * is, thrown at once (its readiness, a pipe with bytes in it or a socket
 * whose peer hung up, says nothing of a process's exit, and would be taken
 * for one: PeerGoneError); one of fdbridge's own numbers is a SystemError
 * EBADF, returned (the caller's pidfd was closed, and the number is
 * fdbridge's now), as a number not open is (ExitWatch's EBADF).
 */
function peerPidfdRefusal(fd: number): SystemError | undefined {
  if (native.registration(fd) !== 0) return ownFdRefusal(fd, 'receive', "peerPidfd must be a pidfd of the caller's");
  // The link names what the number holds and opens nothing (a read of its
  // fdinfo would take a number of the caller's, seen by a leak check in
  // another thread, and fail at RLIMIT_NOFILE).
  let what: string;
  try {
    what = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined; // not open: the watch's EBADF says so
  }
  // A pidfd links as anon_inode:[pidfd], under pidfs (Linux 6.9 on) too.
  if (PIDFD_LINK.test(what)) return undefined;
  throw Object.assign(new TypeError(`receive: peerPidfd ${fd} must be a pidfd (pidfd_open(2), openPidfd), not ${what}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

const PIDFD_LINK = /^anon_inode:\[pidfd\]$/;

function typeToKind(type: number): SocketKind {
  if (type === constants.SOCK_STREAM) return 'stream';
  if (type === constants.SOCK_DGRAM) return 'dgram';
  if (type === constants.SOCK_SEQPACKET) return 'seqpacket';
  throw new TypeError(`unsupported socket type ${type}`);
}

/** Validates an address and returns [name, abstract]. */
export function parseAddress(address: SocketAddress): [SocketName, boolean] {
  const relative = relativeNameOf(address);
  if (relative !== undefined) {
    throw new TypeError(
      `a sender bound at the relative path ${describeName(relative)} cannot be answered: the kernel reports the path as it was bound, ` +
        "relative to the sender's working directory, and not that directory (resolved here it would name another socket); " +
        'the sender must bind an absolute path or an abstract name',
    );
  }
  if (address !== null && typeof address === 'object' && !(address instanceof Uint8Array)) {
    // Exactly one of the forms: a path beside an abstract name would be ignored silently.
    const others = Object.keys(address).filter((key) => key !== 'abstract');
    if (others.length > 0) {
      throw new TypeError(
        `a socket address is a path (a string or a Uint8Array) or { abstract: name } and nothing else, not an object with ${others
          .map((key) => JSON.stringify(key))
          .join(', ')}`,
      );
    }
  }
  const [name, abstract] =
    typeof address === 'string' || address instanceof Uint8Array ? [address, false] : [address?.abstract, true];
  if (!(typeof name === 'string' || name instanceof Uint8Array) || name.length === 0) {
    throw new TypeError('a socket address is a non-empty path or { abstract: name } (a string or a Uint8Array)');
  }
  // A lone surrogate has no UTF-8 form: Buffer.from would encode it as U+FFFD, naming another socket.
  if (typeof name === 'string' && !(name as string & { isWellFormed(): boolean }).isWellFormed()) {
    throw new TypeError(
      `a socket ${abstract ? 'name' : 'path'} given as a string must be well-formed (a lone surrogate has no UTF-8 form, and would ` +
        `name the socket at U+FFFD instead; give other bytes as a Uint8Array): ${JSON.stringify(name)}`,
    );
  }
  const bytes = Buffer.byteLength(name);
  if (bytes > constants.MAX_SOCKET_PATH_BYTES) {
    throw new RangeError(
      `socket ${abstract ? 'name' : 'path'} is ${bytes} bytes; sun_path holds at most ${constants.MAX_SOCKET_PATH_BYTES} ` +
        `(use a shorter directory, e.g. under $XDG_RUNTIME_DIR, or an abstract name): ${describeName(name)}`,
    );
  }
  // A path ends at its first NUL (sun_path is read as a C string): the addon refuses one holding a NUL (EINVAL), but a bad argument is a TypeError at once.
  if (!abstract && (typeof name === 'string' ? name.includes('\0') : name.includes(0))) {
    throw new TypeError(
      `a socket path cannot hold a NUL byte (the kernel would end it there; an abstract name may hold one): ${typeof name === 'string' ? JSON.stringify(name) : describeName(name)}`,
    );
  }
  return [name, abstract];
}

/**
 * A path to make a socket file at, as a string: one given as bytes must be
 * UTF-8 that a string gives back byte for byte (the file helpers take strings).
 */
export function pathString(name: SocketName): string {
  if (typeof name === 'string') return name;
  const s = Buffer.from(name.buffer, name.byteOffset, name.length).toString('utf8');
  if (!Buffer.from(s).equals(name)) {
    throw new TypeError(`a socket file to bind must have a UTF-8 path (bind an abstract name for other bytes): ${describeName(name)}`);
  }
  return s;
}

/** A name for messages: a string as it is, bytes with each non-printable ASCII byte as \xHH. */
function describeName(name: SocketName): string {
  if (typeof name === 'string') return name;
  let out = '';
  for (const b of name) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}


/**
 * The native socket under a UnixSocket, for the frame channel
 * (frame-channel.ts), which layers fdbridge's protocol on it. Not exported
 * from the package: a UnixSocket's public surface is a general socket's.
 */
const nativeSockets = new WeakMap<UnixSocket, NativeSocket>();

export function nativeSocketOf(socket: UnixSocket): NativeSocket {
  return nativeSockets.get(socket) as NativeSocket;
}

interface Waiter {
  resolve(m: Message): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
  watch?: NativeExitWatch;
  /** Set when the peer's process has exited: the receive rejects with it once nothing is left to read. */
  peerGone?: PeerGoneError;
}

/**
 * A received message given out (a receive() resolves with it): its fds are
 * the receiver's from here; until then the socket's environment keeps them
 * (native.handOver), and the socket's close() closes them.
 */
function handOverMessage(m: Message): Message {
  if (m.fds.length > 0) handedOver(m.fds);
  return m;
}

/** A waiter is done with: its deadline and its pidfd watch go. */
function releaseWaiter(w: Waiter): void {
  clearTimeout(w.timer);
  w.watch?.close();
}

export function describeAddress(address: SocketAddress): string {
  return typeof address === 'string' || address instanceof Uint8Array ? describeName(address) : `@${describeName(address.abstract)}`;
}

/**
 * What a path names when it is not a socket, as `a regular file`, or
 * undefined for a socket, a name that is gone, or one that cannot be
 * looked at. Followed through symlinks, as the kernel follows them.
 */
function notASocket(path: string): string | undefined {
  let st;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
  if (st === undefined || st.isSocket()) return undefined;
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a socket';
}

/**
 * A sendto failure, with the destination and the way out in its message.
 * Linux answers a datagram sent to a path that names no socket (a regular
 * file, a directory, a FIFO, a device) with ECONNREFUSED, as it answers one
 * sent to a socket file nobody is bound to any more, and one sent to a
 * stream or seqpacket socket with EPROTOTYPE (unix(7); net/unix/af_unix.c
 * unix_find_bsd, unix_dgram_sendmsg): the code stays the kernel's, the
 * message says which it was.
 */
function sendToError(err: Error, address: SocketAddress, waited: boolean): Error {
  if (!(err instanceof SystemError)) return err;
  const where = describeAddress(address);
  const what = err.code === 'ECONNREFUSED' && typeof address === 'string' ? notASocket(address) : undefined;
  const gone = waited
    ? `the receiver bound at ${where} when it was sent is gone (it closed its socket or died; a socket bound there since gets only what is sent from now on)`
    : `nobody is bound at ${where} any more (the receiver closed its socket or died)`;
  const why: Record<string, string> = {
    EAGAIN: "the receiver's queue (it is not reading), or this socket's send buffer, is full: retry later, or send with whenFull: 'wait'",
    ECONNREFUSED:
      what === undefined
        ? gone
        : `${where} is ${what === 'not a socket' ? 'no socket' : `${what}, not a socket`}: nothing can receive datagrams there`,
    EPROTOTYPE: `the socket bound at ${where} is not a datagram socket (a stream or seqpacket socket: connect to it with UnixSocket instead)`,
    ENOENT: `there is no socket at ${where}`,
    EACCES: `no permission to send to ${where} (the socket file's mode, or a directory above it)`,
    EPERM: `${where} refuses this sender (it is connected to another socket, or refuses fds: SO_PASSRIGHTS)`,
    EMSGSIZE: 'the datagram is larger than the socket buffer allows',
    ECANCELED: 'the socket was closed before the receiver had room',
  };
  const reason = why[err.code];
  if (reason === undefined) return err;
  return new SystemError(err.errno, 'sendto', `sendto(${where}) failed: ${err.code}: ${reason}`, { cause: err });
}

export function checkWhenFull(value: unknown): WhenFull {
  if (value === undefined) return 'wait';
  if (value !== 'wait' && value !== 'fail') throw new TypeError(`whenFull must be 'wait' or 'fail', not ${String(value)}`);
  return value;
}

/**
 * A read error waiting among the buffered messages. Told from a message by
 * this wrapper, never by `instanceof Error`: the addon makes its errors with
 * the factory the last realm to load it gave (native.init: each jest test
 * file, a vm context), whose Error is not this module's when a socket
 * outlives the realm that made it.
 */
class BufferedError {
  constructor(readonly error: Error) {}
}

/**
 * Set while fdbridge wraps a socket of its own (wrapOwnSocket): the one
 * way to a UnixSocket of a number its registry holds.
 */
let wrappingOwn = false;

/**
 * `new UnixSocket(fd, kind, options)` of a socket fdbridge made for itself
 * (registered as its own: `own` pairs, connections and accepted sockets, a
 * child's end): the one owner its registration is for.
 */
export function wrapOwnSocket(fd: number, kind?: SocketKind, options?: UnixSocketOptions): UnixSocket {
  wrappingOwn = true;
  try {
    return new UnixSocket(fd, kind, options);
  } finally {
    wrappingOwn = false;
  }
}

/** One connected (or socketpair) Unix domain socket. */
export class UnixSocket {
  readonly kind: SocketKind;
  #native: NativeSocket;
  #fd: number;
  #closed = false;
  #handler: MessageHandler | undefined;
  #waiters: Waiter[] = [];
  /** Messages (and read errors) #onMessage has handed out so far: a receive's deadline looks for progress. */
  #handedOut = 0;
  #buffered: Array<Message | BufferedError> = [];
  #readError: Error | undefined;
  #reading = false;
  #refed = true;
  /** The reused receive buffer (reuseBuffer), else undefined. */
  #scratch: Buffer | undefined;
  /** Messages arrive in memory that is reused (reuseBuffer, batchMessages): receive() copies them. */
  #copyKept: boolean;
  /** Whose the background closer counts this socket's closes (useBackgroundCloser). */
  #closeOwner = 0;
  /** Once closed: the tickets of its background closes that were not done (backgroundCloseTickets). */
  #closedTickets: number[] = [];
  #queueLimit: number;
  #pauseReadingAt: number | null = null;

  /** A connected pair (socketpair(2)), both ends non-blocking and close-on-exec. */
  static pair(kind: SocketKind = 'seqpacket', options?: UnixSocketOptions & OwnSocketOption): [UnixSocket, UnixSocket] {
    const [a, b] = native.socketpair(kindToType(kind), options?.own === true);
    let first: UnixSocket | undefined;
    try {
      first = wrapOwnSocket(a, kind, options);
      return [first, wrapOwnSocket(b, kind, options)];
    } catch (err) {
      if (first) first.close();
      else closeOwnFds([a]);
      closeOwnFds([b]);
      throw err;
    }
  }

  /**
   * Connects to a listening socket. A full backlog (EAGAIN) is retried until
   * `timeoutMs` (default 5000) has passed.
   */
  static async connect(
    address: SocketAddress,
    options: UnixSocketOptions & OwnSocketOption & { kind?: SocketKind; timeoutMs?: number } = {},
  ): Promise<UnixSocket> {
    const kind = options.kind ?? 'seqpacket';
    const [name, abstract] = parseAddress(address);
    // A deadline, not a timer: any finite ms (a caller's remaining time has fractions); NaN would retry a busy listener forever.
    const timeoutMs = options.timeoutMs === undefined ? 5000 : validateDeadlineMs(options.timeoutMs, 'UnixSocket.connect: timeoutMs');
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
      let fd: number;
      try {
        fd = native.connect(kindToType(kind), name, abstract, options.own === true);
      } catch (err) {
        if (!(err instanceof SystemError) || err.code !== 'EAGAIN' || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
        continue;
      }
      try {
        return wrapOwnSocket(fd, kind, options);
      } catch (err) {
        // Bad options (or a failed poll setup): the connected fd is still
        // ours, and what the server sent on it already is in its queue.
        native.closeConnection(fd);
        throw err;
      }
    }
  }

  /**
   * Takes ownership of `fd`, a Unix domain socket (its kind is read with
   * SO_TYPE when omitted). If the constructor throws, the fd is still the
   * caller's to close.
   */
  constructor(fd: number, kind?: SocketKind, options?: UnixSocketOptions) {
    const own = wrappingOwn;
    wrappingOwn = false;
    // Checked first for the refusal's sake (an fd of ours whose SO_TYPE
    // cannot be read is refused as ours); the native constructor checks
    // again, in the step that takes the fd (NativeSocketOptions.caller).
    if (!own) refuseOwnFd(fd, 'new UnixSocket', SECOND_OWNER);
    this.kind = kind ?? typeToKind(native.socketType(fd));
    this.#queueLimit = options?.sendQueueLimit ?? DEFAULT_SEND_QUEUE_LIMIT;
    const batch = options?.batchMessages === true;
    if (batch && !batchDispatcherSet) {
      native.setMessageBatchHandler(dispatchBatch);
      batchDispatcherSet = true;
    }
    this.#copyKept = options?.reuseBuffer === true || batch;
    const nativeOptions = { ...options, sendQueueLimit: this.#queueLimit, batch, caller: own ? undefined : 'new UnixSocket', callerOwn: false, callerCloexec: false };
    this.#native = new native.Socket(fd, kindToType(this.kind), nativeOptions, (err, data, fds, from, credentials) =>
      this.#onMessage(err, typeof data === 'number' ? this.#view(data) : data, fds ?? NO_FDS, from, credentials),
    );
    nativeSockets.set(this, this.#native);
    if (options?.receiveFrom) this.#native.receiveFrom(true);
    this.#fd = fd;
  }

  /** A view of the first `length` bytes of the reused receive buffer (made when the socket first read). */
  #view(length: number): Buffer {
    this.#scratch ??= Buffer.from(this.#native.buffer as ArrayBuffer);
    return this.#scratch.subarray(0, length);
  }

  /**
   * Makes the receive buffer `bytes` long instead of the size it was made
   * with; a longer message then arrives truncated (TruncatedError, its fds
   * closed). Only before the socket first reads (it makes the buffer then):
   * returns whether it took. For a socket that only drains what a peer
   * sends, e.g. one that is told it is refused.
   */
  setReceiveBufferSize(bytes: number): boolean {
    return !this.#closed && this.#native.setReceiveBufferSize(bytes);
  }

  /** The socket's fd (borrowed: the socket owns it), or -1 once closed. */
  get fd(): number {
    return this.#closed ? -1 : this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Messages waiting for the kernel to make room. */
  get queuedSends(): number {
    return this.#native.queuedSends;
  }

  /** What those messages are charged against the send queue's limit, in bytes. */
  get queuedSendBytes(): number {
    return this.#native.queuedSendBytes;
  }

  /**
   * Messages that waited in the send queue and have since gone to the
   * kernel: it moves while the peer reads, even when new messages fill the
   * queue again to where it was.
   */
  get sentFromQueue(): number {
    return this.#native.sentFromQueue;
  }

  /**
   * Bounds the send queue and, for a side that answers what it reads,
   * passes backpressure on to the peer:
   * - `limit` (bytes, see UnixSocketOptions.sendQueueLimit): sends throw
   *   QueueFullError while the queue holds that much;
   * - `pauseReadingAt` (bytes, or null: never, the default): while the
   *   queue holds more, no message is read (even with a handler set); the
   *   peer's messages wait in the kernel, then in its own bounded queue.
   *   Reading resumes once the queue drains to it. Only one side of a
   *   connection may pause this way, or each could wait for the other.
   */
  setSendQueueLimits(limits: { limit?: number; pauseReadingAt?: number | null }): void {
    if (this.#closed) return;
    const limit = limits.limit ?? this.#queueLimit;
    const pause = limits.pauseReadingAt === undefined ? this.#pauseReadingAt : limits.pauseReadingAt;
    for (const [name, v] of [['limit', limit], ['pauseReadingAt', pause ?? 0]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer (bytes), not ${String(v)}`);
    }
    this.#native.setSendQueueLimits(limit, pause ?? -1);
    this.#queueLimit = limit;
    this.#pauseReadingAt = pause;
  }

  /**
   * Sends data with 0..253 fds (borrowed) as one message. Resolves once the
   * kernel has the message. An fd that is not a non-negative integer throws
   * TypeError at once; closed fds (EBADF), too many fds (RangeError) and a
   * broken connection (EPIPE) reject with nothing queued.
   */
  send(data: Uint8Array, fds?: readonly number[]): Promise<void> {
    if (Array.isArray(fds)) validateFds(fds);
    return new Promise((resolve, reject) => {
      const r = this.write(data, fds, (err) => (err ? reject(err) : resolve()));
      if (r) resolve();
    });
  }

  /**
   * Like `send`, without a promise: returns true when the kernel took the
   * message now; false when it was queued (then `done(err, tag)` is called
   * exactly once, when it has left or failed; `tag` may be any value).
   * Throws on failure, with nothing sent or queued: TypeError for an fd
   * that is not a non-negative integer, QueueFullError when the send queue
   * is at its limit. The data is copied before this returns: the
   * caller may reuse its buffer.
   *
   * `exemptFromLimit` queues the message even past the limit: only for the
   * few small messages that release what earlier sends took (a protocol's
   * cleanup or goodbye), whose number those earlier sends bound.
   *
   * An fd that fdbridge holds for itself (a pin, a queued copy, an fd given
   * to a command and not adopted) is refused with EBADF, as a closed one:
   * past the fd floor such an fd can take a number the caller closed and
   * still names. `ownFds` says the fds are fdbridge's own pins, sent on a
   * caller's behalf.
   */
  write<T = undefined>(
    data: Uint8Array,
    fds?: readonly number[],
    done?: (err: Error | null, tag: T) => void,
    tag?: T,
    options?: { exemptFromLimit?: boolean; ownFds?: boolean },
  ): boolean {
    if (Array.isArray(fds)) validateFds(fds);
    if (this.#closed) throw new ClosedError('send: the socket is closed');
    return this.#native.send(data, fds, done, tag, options?.exemptFromLimit === true, options?.ownFds === true) === 0;
  }

  /**
   * DGRAM, unconnected: sends `data` with 0..253 fds (borrowed) as one
   * datagram to the socket bound at `address`; resolves once the kernel has
   * queued it for the receiver. An fd that is not a non-negative integer
   * throws TypeError at once. Rejects, with nothing sent, on a closed fd
   * (EBADF), a name nobody is bound to (ENOENT, ECONNREFUSED), no permission
   * (EACCES), or a full receiver under 'fail' (EAGAIN); under 'wait' a full
   * receiver delays it instead, and one that goes away meanwhile rejects it;
   * QueueFullError when the datagrams waiting already fill the send queue,
   * or (an unbound sender's, each waiting for the receiver its name had when
   * it was sent, through a socket connected to it) already wait for 64
   * receivers (`waitingReceivers`); EMFILE when no fd is left for such a socket.
   * Datagrams leave in call order: a 'fail' send never overtakes a waiting one.
   */
  sendTo(address: SocketAddress, data: Uint8Array, fds?: readonly number[], whenFull: WhenFull = 'wait'): Promise<void> {
    if (Array.isArray(fds)) validateFds(fds);
    return new Promise((resolve, reject) => {
      if (this.#closed) throw new ClosedError('sendTo: the socket is closed');
      const [name, abstract] = parseAddress(address);
      const wait = checkWhenFull(whenFull) === 'wait';
      // A completion's error is a waiting datagram's.
      const done = (err: Error | null): void => (err ? reject(sendToError(err, address, true)) : resolve());
      let r: 0 | 1;
      try {
        r = this.#native.sendTo(name, abstract, data, fds, wait, done);
      } catch (err) {
        throw sendToError(err as Error, address, false);
      }
      if (r === 0) resolve();
    });
  }

  /**
   * While this socket does not read (pause(), or a pauseReadingAt pause), a
   * peer that hangs up is reported at once: the message handler gets an
   * EofError, and the peer's unread messages stay unread (close() releases
   * their fds). For a side that only answers requests, which has nobody
   * left to answer and would otherwise not learn of the hangup until it
   * reads again.
   */
  watchHangup(on: boolean): void {
    if (!this.#closed) this.#native.watchHangup(on);
  }

  /**
   * True when the peer has closed its end (or both directions are shut),
   * as poll(2) sees it now: nothing is read, and messages it sent before
   * stay readable. False once this socket is closed.
   */
  hungUp(): boolean {
    return !this.#closed && this.#native.hungUp();
  }

  /**
   * True when this socket's fd, one of fdbridge's own (`own`), was closed
   * by someone other than fdbridge (a close of a number the program does
   * not own): the socket has let go of the number, which it never reads,
   * writes, polls or closes again. Looks at the file there (an fstat); once
   * closed, what the close found. Always false for a socket made on a
   * caller's fd.
   */
  lost(): boolean {
    return this.#native.lost();
  }

  /**
   * The next message; its fds belong to the caller. With `timeoutMs`, a
   * TimeoutError if none arrives in time (the message is not lost: the next
   * receive gets it); one already queued when the deadline passes is
   * received, however late the event loop gets to it (`timeoutMs: 0` takes
   * a queued message).
   */
  receive(options: ReceiveOptions = {}): Promise<Message> {
    if (this.#handler) throw new Error('receive(): this socket delivers to a message handler');
    const timeoutMs = options.timeoutMs === undefined ? undefined : validateTimeoutMs(options.timeoutMs, 'receive: timeoutMs');
    const next = this.#buffered.shift();
    if (next !== undefined) return next instanceof BufferedError ? Promise.reject(next.error) : Promise.resolve(handOverMessage(next));
    if (this.#readError) return Promise.reject(this.#readError);
    if (this.#closed) return Promise.reject(new ClosedError('receive: the socket is closed'));
    const pidfd = options.peerPidfd;
    if (pidfd !== undefined && !(Number.isInteger(pidfd) && pidfd >= 0)) throw new RangeError(`peerPidfd must be an fd, not ${pidfd}`);
    const refused = pidfd === undefined ? undefined : peerPidfdRefusal(pidfd);
    if (refused) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      if (pidfd !== undefined) {
        // Throws (EBADF...) before anything is waited for.
        waiter.watch = new native.ExitWatch(pidfd, () => {
          waiter.watch?.close();
          waiter.watch = undefined;
          waiter.peerGone = new PeerGoneError(`receive: the process of pidfd ${pidfd} exited before anything arrived`);
          // After this turn's reads and batched messages (handed out in the check phase, before immediates).
          setImmediate(() => this.#settlePeerGone());
        });
        if (!this.#refed) waiter.watch.unref(); // part of the socket: it keeps the loop alive when the socket does
      }
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          const why = this.kind === 'dgram' ? ' (a datagram peer that died sends no end of file)' : '';
          this.#timeOut(waiter, new TimeoutError(`receive: nothing arrived within ${timeoutMs} ms${why}`), -1);
        }, timeoutMs);
      }
      this.#waiters.push(waiter);
      this.#setReading(true);
    });
  }

  /**
   * A peer that exited sent everything it will ever send before it did: what
   * is queued is read first (the read path takes it, in this turn of the
   * loop or the next), and only a receive still waiting when nothing is left
   * to read rejects with PeerGoneError.
   */
  #settlePeerGone(): void {
    if (this.#closed || !this.#waiters.some((w) => w.peerGone !== undefined)) return;
    if (native.pollReadable([this.#fd])[0]) return;
    for (const w of this.#waiters.filter((w) => w.peerGone !== undefined)) this.#giveUp(w, w.peerGone as PeerGoneError);
  }

  /**
   * A receive's deadline passed. A loop turn that comes late runs its due
   * timers before it reads, so messages queued by the deadline may still
   * wait in the kernel: while the socket is readable and reading made
   * progress since the last look (`seen`, a count of messages handed out),
   * the waiter waits for the turn's reads, handed out in the check phase
   * before immediates; it times out once nothing is left for it (or the
   * socket's number was lost: never polled then).
   */
  #timeOut(waiter: Waiter, err: TimeoutError, seen: number): void {
    if (!this.#closed && this.#waiters.includes(waiter) && this.#handedOut !== seen && !this.#native.lost() && native.pollReadable([this.#fd])[0]) {
      const now = this.#handedOut;
      setImmediate(() => this.#timeOut(waiter, err, now));
    } else this.#giveUp(waiter, err);
  }

  /** Ends one receive (deadline passed, peer exited); what arrives later goes to the next. */
  #giveUp(waiter: Waiter, err: Error): void {
    const i = this.#waiters.indexOf(waiter);
    if (i < 0) return;
    this.#waiters.splice(i, 1);
    releaseWaiter(waiter);
    if (this.#waiters.length === 0) this.#setReading(false);
    waiter.reject(err);
  }

  /**
   * Streams every message to `handler` (the lowest-overhead way to receive);
   * receive() is not available afterwards. Messages already buffered are
   * delivered first.
   */
  setMessageHandler(handler: MessageHandler): void {
    if (this.#closed) throw new ClosedError('setMessageHandler: the socket is closed');
    this.#handler = handler;
    for (const m of this.#buffered.splice(0)) {
      if (m instanceof BufferedError) handler(m.error);
      else handler(null, m.data, handedOver(m.fds), m.from, m.credentials);
    }
    if (this.#readError) handler(this.#readError);
    else this.#setReading(true);
  }

  /** Stops delivering messages to the handler until `resume()`: the kernel buffers them. */
  pause(): void {
    this.#setReading(false);
  }

  resume(): void {
    if (this.#handler && !this.#readError) this.#setReading(true);
  }

  /** SO_PEERCRED: the peer's pid, uid and gid as of connect(). */
  peerCredentials(): { pid: number; uid: number; gid: number } {
    return native.peerCred(this.#liveFd('getsockopt(SO_PEERCRED)'));
  }

  /** SO_PEERPIDFD (Linux 6.5+): a pidfd for the peer, owned by the caller. */
  peerPidfd(options: OwnSocketOption = {}): OwnedFd {
    const own = options.own === true;
    const pidfd = handedOver(native.peerPidfd(this.#liveFd('getsockopt(SO_PEERPIDFD)'), own));
    return own ? ownedFdOfFdbridge(pidfd) : new OwnedFd(pidfd);
  }

  /** Half-closes the socket (shutdown(2)); the peer then sees EOF after what is queued. */
  shutdown(how: 'read' | 'write' | 'both' = 'write'): void {
    const map = { read: constants.SHUT_RD, write: constants.SHUT_WR, both: constants.SHUT_RDWR };
    native.shutdown(this.#liveFd('shutdown'), map[how]);
  }

  /**
   * From now on this socket itself, when closed, goes to the background
   * closer (native.closeInBackground) as `owner`'s, as is: not shut down,
   * its receive queue not emptied (see close()); for a protocol that tells
   * its peer of the end itself (the helper daemon). Off or on, the fds of a
   * message that arrives truncated, and the copies of the fds of queued
   * sends that fail (or that close() cancels), go to the background closer
   * as `owner`'s: they come from another process, or a copy can be its
   * file's last reference once the sender closed its own, and such a close
   * can block (a TCP socket with SO_LINGER and unsent data). A helper
   * daemon names the peer's uid plus one, so that one user's closes that
   * block hold back only that user's.
   */
  useBackgroundCloser(on: boolean, owner = 0): void {
    this.#closeOwner = owner;
    if (!this.#closed) this.#native.useBackgroundCloser(on, owner);
  }

  /**
   * Hands `fds` (a peer's, now ours to close) to the background closer as
   * one batch of this socket's owner; returns its ticket
   * (native.afterBackgroundCloses), which the socket also remembers until
   * it is closed (backgroundCloseTickets).
   */
  closeInBackground(fds: readonly number[]): number {
    if (!this.#closed) return this.#native.closeInBackground(fds);
    const ticket = native.closeInBackground(fds, this.#closeOwner);
    this.#closedTickets.push(ticket);
    return ticket;
  }

  /**
   * The tickets of this socket's background closes not done yet: the fds
   * of messages that arrived truncated, closeInBackground's (a frame
   * channel's ledger swept), the copies of queued sends that failed or
   * that close() cancelled, and what the native socket handed over after
   * its close (a message's fds nobody could take).
   */
  backgroundCloseTickets(): number[] {
    if (!this.#closed) return this.#native.backgroundCloseTickets();
    this.#closedTickets = this.#closedTickets.filter((t) => !native.backgroundCloseDone(t));
    return [...this.#closedTickets, ...this.#native.backgroundCloseTickets()];
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    this.#refed = false;
    this.#native.unref();
    for (const w of this.#waiters) w.watch?.unref();
    return this;
  }

  ref(): this {
    this.#refed = true;
    this.#native.ref();
    for (const w of this.#waiters) w.watch?.ref();
    return this;
  }

  /**
   * Closes the socket: the fd, the poll handle, queued sends (they reject with
   * ECANCELED), and every received fd nobody claimed. Pending receives reject
   * with ClosedError. Idempotent.
   *
   * No fd a peer sent is closed on this thread: the last close of one can
   * block for as long as the peer chose (a TCP socket with SO_LINGER and
   * unsent data). The socket is shut down (shutdown(2): no peer can send
   * to it any more), what its receive queue still holds is received and
   * handed to the background closer with the messages received and not
   * claimed, and only then is the socket closed, here: when close()
   * returns the peer has its end of file, or EPIPE.
   *
   * `{ shutdown: false }`: the socket lives on elsewhere (its fd was sent
   * to, or inherited by, another process, or another thread holds a
   * duplicate, that goes on using it). shutdown(2) acts on the socket, every holder's copy, and its
   * queue is the other holder's to read: only this copy is closed, on the
   * background closer (should it be the last one after all, its close
   * drops the queue), nothing is read and the peer sees nothing.
   */
  close(options: CloseOptions = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closedTickets = this.#native.close({ shutdown: options.shutdown !== false });
    // Received and never claimed: a peer's fds, whose last close can block
    // (a lingering TCP socket), so on the background closer.
    for (const m of this.#buffered.splice(0)) if (!(m instanceof BufferedError) && m.fds.length > 0) this.closeInBackground(m.fds);
    const err = new ClosedError('receive: the socket was closed');
    for (const w of this.#waiters.splice(0)) {
      releaseWaiter(w);
      w.reject(err);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #liveFd(syscall: string): number {
    if (this.#closed) throw new SystemError(-9, syscall, `${syscall} failed: the socket is closed`);
    return this.#fd;
  }

  #setReading(on: boolean): void {
    if (on === this.#reading || this.#closed) return;
    this.#reading = on;
    if (on) this.#native.startReading();
    else this.#native.stopReading();
  }

  #onMessage(err: Error | null, data?: Buffer, fds?: number[], from?: SenderAddress | null, credentials?: Credentials): void {
    this.#handedOut++;
    // EOF and socket errors end reading for good; truncation affects one message.
    if (err && !(err.name === 'TruncatedError')) {
      this.#readError = err;
      this.#reading = false;
    }
    if (this.#handler) {
      if (fds !== undefined && fds.length > 0) handedOver(fds);
      this.#handler(err, data, fds, from, credentials);
      return;
    }
    // A receive() caller keeps the message past this call: copy a view of the
    // reused buffer, and never hand out the shared empty fd list.
    let message: Message | undefined;
    if (!err) {
      message = { data: this.#copyKept ? Buffer.from(data as Buffer) : (data as Buffer), fds: fds === NO_FDS ? [] : (fds as number[]) };
      if (from !== undefined) {
        message.from = from;
        message.credentials = credentials;
      }
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      releaseWaiter(waiter);
      if (message === undefined) waiter.reject(err as Error);
      else waiter.resolve(handOverMessage(message));
    } else if (this.#closed) {
      if (message !== undefined && message.fds.length > 0) this.closeInBackground(message.fds);
    } else {
      this.#buffered.push(message ?? new BufferedError(err as Error));
    }
    if (this.#readError) {
      for (const w of this.#waiters.splice(0)) {
        releaseWaiter(w);
        w.reject(this.#readError);
      }
    } else if (this.#waiters.length === 0) {
      this.#setReading(false);
    } else {
      this.#settlePeerGone();
    }
  }
}

export interface ListenOptions extends UnixSocketOptions {
  kind?: SocketKind;
  /** Permission bits of the socket file (e.g. 0o600), set before listen(). */
  mode?: number;
  backlog?: number;
}

/** How close() ends a socket (UnixSocket, UnixServer, DatagramSocket). */
export interface CloseOptions {
  /**
   * false: the socket lives on elsewhere (its fd was sent to, or inherited
   * by, another process, or another thread holds a duplicate, that goes on
   * using it): close only this copy, with no shutdown(2) (which would end
   * the socket for every holder), nothing read from its queue and, for a
   * bound socket, its file left in place. Default true.
   */
  shutdown?: boolean;
}

/** A listening Unix domain socket. */
export class UnixServer {
  readonly address: SocketAddress;
  readonly kind: SocketKind;
  #native: NativeSocket;
  #fd: number;
  #closed = false;
  #options: UnixSocketOptions;
  #fileIdentity: SocketFileIdentity | undefined;
  /** Another process keeps a copy of the listening socket (fromListeningFd): close() closes only ours. */
  #shared = false;
  #handler: ((err: Error | null, socket?: UnixSocket) => void) | undefined;
  /** Once closed: the tickets of its background closes that were not done (backgroundCloseTickets). */
  #closedTickets: number[] = [];
  #acceptWaiters: Array<{ resolve(s: UnixSocket): void; reject(e: Error): void }> = [];

  /**
   * Binds and listens. bind(2) never replaces an existing name: a path that
   * exists gives EADDRINUSE (the caller decides whether it is stale).
   */
  static listen(address: SocketAddress, options: ListenOptions & OwnSocketOption = {}): UnixServer {
    return new UnixServer(address, options);
  }

  /**
   * Takes ownership of `fd`, a socket already listening (one systemd passed
   * with LISTEN_FDS, say). Its file, if any, is not ours: close() never
   * removes it. `address` only names it in messages.
   */
  static fromListeningFd(fd: number, address: string, options: Omit<ListenOptions, 'mode' | 'backlog'> & OwnSocketOption = {}): UnixServer {
    return new UnixServer(address, options, fd);
  }

  /**
   * With `own` (OwnSocketOption), the listening socket is fdbridge's and so
   * is every connection it accepts (native/sock_ops.h, SockAccept).
   */
  private constructor(address: SocketAddress, options: ListenOptions & OwnSocketOption, listeningFd?: number) {
    this.address = address;
    this.kind = options.kind ?? 'seqpacket';
    this.#options = {
      maxFds: options.maxFds,
      bufferSize: options.bufferSize,
      reuseBuffer: options.reuseBuffer,
      batchMessages: options.batchMessages,
      sendQueueLimit: options.sendQueueLimit,
    };
    if (listeningFd !== undefined) {
      // Checked first so that one of fdbridge's own fds is refused as such,
      // whatever it is; checked again by the native constructor, in the
      // step that takes the fd (NativeSocketOptions.caller).
      refuseOwnFd(listeningFd, 'fromListeningFd', SECOND_OWNER);
      checkListeningFd(listeningFd, this.kind);
      // Made close-on-exec and non-blocking, and with `own` registered, in
      // that step. Registered where it is, not moved above the floor: a
      // socket passed in (systemd's LISTEN_FDS, at fixed numbers from 3 by
      // sd_listen_fds's protocol) was open before this process ran any
      // caller's code, so it cannot have taken a number the caller closed.
      // Registered, it is refused if a caller names it, and what it accepts
      // is ours too.
      const callerOptions = { caller: 'fromListeningFd', callerOwn: options.own === true, callerCloexec: true };
      this.#native = new native.Socket(listeningFd, kindToType(this.kind), callerOptions, undefined, (err, cfd) => this.#onAccept(err, cfd));
      // Another process keeps it (systemd, to start the service again):
      // close() must not shut it down for that one, and closing this copy
      // drops nothing queued.
      this.#shared = true;
      this.#fd = listeningFd;
      return;
    }
    const [given, abstract] = parseAddress(address);
    const name = abstract ? given : pathString(given);
    const mode = options.mode ?? -1;
    if (mode !== -1 && (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)) {
      throw new RangeError(`mode must be a permission mask such as 0o600, not ${mode}`);
    }
    const fd = native.listen(kindToType(this.kind), name, abstract, mode, options.backlog ?? 128, false, options.own === true);
    try {
      if (!abstract) this.#fileIdentity = socketFileIdentity(name as string);
      this.#native = new native.Socket(fd, kindToType(this.kind), undefined, undefined, (err, cfd) =>
        this.#onAccept(err, cfd),
      );
      // A worker terminated with this server open runs no close(): its teardown removes the file instead.
      if (!abstract) this.#native.boundFile(resolve(name as string));
    } catch (err) {
      // Not listening after all: release the fd and the socket file we made.
      closeOwnFds([fd]);
      this.#unlinkOwnFile();
      throw err;
    }
    this.#fd = fd;
  }

  get fd(): number {
    return this.#closed ? -1 : this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Delivers every accepted connection to `handler` (which owns the socket). */
  onConnection(handler: (err: Error | null, socket?: UnixSocket) => void): void {
    this.#handler = handler;
    if (!this.#closed) this.#native.startAccepting();
  }

  /** The next connection. */
  accept(): Promise<UnixSocket> {
    if (this.#closed) return Promise.reject(new ClosedError('accept: the server is closed'));
    return new Promise((resolve, reject) => {
      this.#acceptWaiters.push({ resolve, reject });
      this.#native.startAccepting();
    });
  }

  unref(): this {
    this.#native.unref();
    return this;
  }

  ref(): this {
    this.#native.ref();
    return this;
  }

  /**
   * Stops listening and removes the socket file, but only if the path still
   * names the very socket this server bound (never someone else's file).
   * The listening socket is shut down first (connect(2) is refused from
   * then on) and the connections not accepted yet are accepted and closed
   * as UnixSocket.close() closes (their clients read end of file).
   *
   * `{ shutdown: false }`: the listening socket lives on elsewhere (its fd
   * was sent to, or inherited by, another process that goes on accepting):
   * only this copy is closed, on the background closer; nothing is
   * shut down or accepted, and the socket file stays (the other holder is
   * still reached by its name). A server from fromListeningFd always
   * closes so (systemd keeps a copy).
   */
  close(options: CloseOptions = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    const handedOff = options.shutdown === false;
    this.#closedTickets = this.#native.close({ shutdown: !handedOff && !this.#shared });
    if (!handedOff) this.#unlinkOwnFile();
    const err = new ClosedError('accept: the server was closed');
    for (const w of this.#acceptWaiters.splice(0)) w.reject(err);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * The tickets of this server's background closes not done yet
   * (native.afterBackgroundCloses): its own, once closed handed on or as
   * fromListeningFd's, and those of connections it accepted that nobody
   * took, or closed unaccepted (what their clients queued on them).
   */
  backgroundCloseTickets(): number[] {
    if (!this.#closed) return this.#native.backgroundCloseTickets();
    this.#closedTickets = this.#closedTickets.filter((t) => !native.backgroundCloseDone(t));
    return [...this.#closedTickets, ...this.#native.backgroundCloseTickets()];
  }

  /** Removes the socket file, if the path still names the very socket this server bound. */
  #unlinkOwnFile(): void {
    if (typeof this.address === 'string') unlinkOwnSocketFile(this.address, this.#fileIdentity);
  }

  #onAccept(err: Error | null, fd?: number): void {
    let socket: UnixSocket | undefined;
    if (!err && fd !== undefined) {
      try {
        socket = wrapOwnSocket(fd, this.kind, this.#options);
      } catch (e) {
        // Its queue may hold what its client sent before it was accepted.
        this.#native.closeAccepted(fd);
        err = e as Error;
      }
    }
    if (this.#closed) {
      socket?.close();
      return;
    }
    const waiter = this.#acceptWaiters.shift();
    if (waiter) {
      if (socket) waiter.resolve(socket);
      else waiter.reject(err as Error);
      // A failed accept4 (EMFILE...) stopped accepting; try again for the
      // callers still waiting.
      if (err && this.#acceptWaiters.length > 0) this.#native.startAccepting();
      // Accept only while someone wants connections; the rest wait in the
      // kernel's backlog.
      if (this.#acceptWaiters.length === 0 && !this.#handler) this.#native.stopAccepting();
      return;
    }
    if (this.#handler) {
      this.#handler(err, socket);
      return;
    }
    // Unreachable while accepting is tied to waiters or a handler; never keep
    // a connection nobody owns.
    socket?.close();
  }
}

export { EofError };
