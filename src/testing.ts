/**
 * Raw-socket helpers for tests and scenarios (`fdbridge/testing`): the
 * syscalls a hand-written peer makes, without UnixSocket's event loop,
 * queueing or framing in between, so that a test can play a peer that does
 * exactly one thing (a send that must fail before sendmsg, a receive that
 * must find nothing, a socket that refuses fds). Every fd they return is
 * close-on-exec, non-blocking, and owned by the caller. Errors are
 * SystemErrors carrying the errno name (EAGAIN when nothing is ready).
 *
 * Not needed to pass fds: use connect() or UnixSocket for that.
 */
import { handedOver } from './fd';
import { native } from './native';
import { kindToType, type SocketKind } from './socket';
import { validateInteger } from './validate';

/** The most fds one message may carry (the kernel's SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE: number = native.constants.MAX_FDS_PER_MESSAGE;

/** The longest socket path, in bytes, sun_path holds (without its NUL). */
export const MAX_SOCKET_PATH_BYTES: number = native.constants.MAX_SOCKET_PATH_BYTES;

/**
 * A connected pair of Unix sockets of `kind`, non-blocking and
 * close-on-exec: `[a, b]`, both owned by the caller (UnixSocket.pair gives
 * the same pair wrapped in UnixSockets).
 */
export function rawSocketPair(kind: SocketKind): [number, number] {
  return handedOver(native.socketpair(kindToType(kind)));
}

export interface RawListenOptions {
  /** `name` is an abstract name (no file), not a path. */
  abstract?: boolean;
  /** The socket file's mode (chmod after bind); -1, the default, leaves it as the umask made it. */
  mode?: number;
  /** listen(2)'s backlog (not used for 'dgram', which is only bound). */
  backlog?: number;
}

/**
 * A socket bound to `name` (and listening, but for 'dgram'). A backlog
 * that is not an integer from 0 to 2^31 - 1, or a mode that is not -1 or
 * from 0 to 0o7777, is a TypeError or RangeError before anything is made
 * (listen(2) would take a negative backlog as the kernel's default).
 */
export function rawListen(kind: SocketKind, name: string, options: RawListenOptions = {}): number {
  const mode = options.mode === undefined ? -1 : validateInteger(options.mode, 'rawListen: options.mode', -1, 0o7777);
  const backlog = options.backlog === undefined ? 16 : validateInteger(options.backlog, 'rawListen: options.backlog', 0, 0x7fffffff);
  return handedOver(native.listen(kindToType(kind), name, options.abstract ?? false, mode, backlog));
}

/** A socket connected to `name` (a path, or an abstract name). */
export function rawConnect(kind: SocketKind, name: string, abstract = false): number {
  return handedOver(native.connect(kindToType(kind), name, abstract));
}

/**
 * One sendmsg(2) of `data` with `fds` (borrowed) as SCM_RIGHTS, now:
 * returns the bytes sent; EAGAIN when the socket's buffer is full; a
 * RangeError, before any syscall, for more than MAX_FDS_PER_MESSAGE fds.
 */
export function sendNow(fd: number, data: Uint8Array, fds?: readonly number[]): number {
  return native.sendNow(fd, data, fds);
}

/** One message read now by recvmsg(2), or null when none is waiting. */
export interface RawMessage {
  data: Buffer;
  /** fds that came with it: close-on-exec, owned by the caller. */
  fds: number[];
  /** Control messages other than SCM_RIGHTS (closed, if they held fds). */
  otherControlMessages: number;
}

/**
 * One recvmsg(2) now, with room for `bufferSize` bytes and `maxFds` fds
 * (MSG_CMSG_CLOEXEC); null when nothing is waiting. Truncation (more bytes
 * than `bufferSize`, more fds than `maxFds`) is a TruncatedError; the fds
 * that arrived go to the background closer, never closed on the calling
 * thread (a peer's lingering TCP socket would hold it there), and the
 * kernel drops none inside the call (it always has room for 253).
 */
export function receiveNow(fd: number, bufferSize: number, maxFds: number): RawMessage | null {
  const message = native.recvNow(fd, bufferSize, maxFds);
  if (message !== null) handedOver(message.fds);
  return message;
}

/** shutdown(2) of one or both directions of `fd` (borrowed): the peer reads EOF after what was sent ('write'). */
export function rawShutdown(fd: number, how: 'read' | 'write' | 'both'): void {
  const { SHUT_RD, SHUT_WR, SHUT_RDWR } = native.constants;
  const flag = how === 'read' ? SHUT_RD : how === 'write' ? SHUT_WR : how === 'both' ? SHUT_RDWR : undefined;
  // Anything else (a typo from an untyped caller) shuts nothing down, rather than both ways.
  if (flag === undefined) throw new TypeError(`rawShutdown: how must be 'read', 'write' or 'both', not ${typeof how === 'string' ? JSON.stringify(how) : String(how)}`);
  native.shutdown(fd, flag);
}

/**
 * SO_PASSRIGHTS (Linux 6.16+): off, the kernel refuses fds sent to this
 * socket (the sender's sendmsg fails with EPERM). ENOPROTOOPT on older
 * kernels.
 */
export function setPassRights(fd: number, on: boolean): void {
  native.setPassRights(fd, on);
}

/** SO_PASSCRED: every message then arrives with an SCM_CREDENTIALS control message. */
export function setPassCred(fd: number, on: boolean): void {
  native.setPassCred(fd, on);
}

/**
 * SO_PASSPIDFD (Linux 6.5+): every message then arrives with an SCM_PIDFD
 * control message, an fd of the sender's process (closed by receiveNow on
 * the background closer, counted in otherControlMessages).
 */
export function setPassPidfd(fd: number, on: boolean): void {
  native.setPassPidfd(fd, on);
}
