/**
 * Connectionless datagram sockets bound to a name: a receiver binds a path
 * (or an abstract name) and anyone who may write to it sends it messages
 * with fds (`sendTo`), each a whole message with the sender's address and,
 * on request, the sender's kernel-checked credentials. A thin face over a
 * DGRAM UnixSocket (the same native socket, send queue and receive loop as
 * every other socket here) that adds the binding rules and the types.
 *
 * What a datagram socket does not give (and a connection does): there is no
 * end of file, so a peer that died is noticed only through a deadline or
 * its pidfd; there is no SO_PEERCRED (ask for `credentials` per message);
 * an answer needs a sender that is bound.
 *
 * Ownership: `sendTo` borrows its fds (a send that waits for a full
 * receiver holds its own duplicates); a received datagram's fds belong to
 * whoever received it; closing the socket closes the fds of datagrams
 * received and not yet handed out, and the kernel releases those of
 * datagrams still queued unread.
 */
import { dirname, resolve } from 'node:path';

import { runningCommandFds, type CommandReceipts } from './client-fds';
import { FdBridgeError } from './errors';
import { closeOwnFds } from './fd';
import { constants, native } from './native';
import {
  checkWhenFull,
  nativeSocketOf,
  parseAddress,
  pathString,
  UnixSocket,
  wrapOwnSocket,
  type Credentials,
  type OwnSocketOption,
  type ReceiveOptions,
  type SenderAddress,
  type SocketAddress,
  type WhenFull,
  type CloseOptions,
} from './socket';
import { bindReplacingStale, checkSocketDirectory, ensurePrivateDir, socketFileIdentity, unlinkOwnSocketFile, type SocketFileIdentity } from './socket-file';

export type { Credentials, ReceiveOptions, WhenFull } from './socket';

/** One received datagram. `C`: whether the socket asked for credentials. */
export interface Datagram<C extends boolean = false> {
  data: Buffer;
  /** Received fds, close-on-exec; the receiver owns them. */
  fds: number[];
  /**
   * Where the sender is bound, so that it can be answered; null when it sent
   * from an unbound socket: it has no address and cannot be answered.
   * `{ relative: name }` when it bound a path relative to its own working
   * directory (not fdbridge: its bind makes paths absolute), which the
   * kernel does not report: it cannot be answered either, and sendTo
   * refuses it with a TypeError (isRelativeSenderName tells).
   */
  from: SenderAddress | null;
  /**
   * The sender's credentials, on a socket made with `credentials: true`
   * (a connectionless socket has no SO_PEERCRED). The kernel checks them: a
   * sender can claim only its own pid, uid and gid, unless it holds
   * CAP_SYS_ADMIN / CAP_SETUID / CAP_SETGID.
   */
  credentials: C extends true ? Credentials : undefined;
}

export interface DatagramSocketOptions<C extends boolean = false> {
  /** How many fds one receive can take (an integer 0..253, default 253; else a RangeError); more arrive truncated. */
  maxFds?: number;
  /** The largest datagram received whole, in bytes (an integer 1..64 MiB, default 64 KiB; else a RangeError); a larger one arrives truncated. */
  bufferSize?: number;
  /** Receive every sender's credentials with its datagrams (SO_PASSCRED, set before bind). */
  credentials?: C;
  /** sendTo's default when a receiver is full (default 'wait'). */
  whenFull?: WhenFull;
  /**
   * The bound on datagrams waiting here for full receivers, in bytes
   * (default 32 MiB, each charged its data plus 256): past it, sendTo
   * rejects with QueueFullError, nothing sent (see UnixSocketOptions).
   */
  sendQueueLimit?: number;
}

export interface DatagramBindOptions<C extends boolean = false> extends DatagramSocketOptions<C> {
  /** Permission bits of the socket file (default 0o600: only this uid may send). */
  mode?: number;
  /**
   * The socket file's directory must be private: created 0700 if missing,
   * else a real directory (no symlink), ours, with no group/other access
   * (default true). Set false only for a directory secured some other way.
   */
  privateDir?: boolean;
  /** Remove a stale socket file (nobody bound behind it) at the path (default true). */
  replaceStale?: boolean;
}

export interface SendToOptions {
  /** Overrides the socket's `whenFull` for this datagram. */
  whenFull?: WhenFull;
}

/** Streaming receive: every datagram (ownership of its fds passes) or receive error. */
export type DatagramHandler<C extends boolean = false> = (err: Error | null, datagram?: Datagram<C>) => void;

/**
 * The absolute path of a socket file to bind: a receiver sees the sender's
 * bound name as it was bound, and resolves a relative one against its own
 * working directory (another socket). One that does not fit sun_path is a
 * RangeError, never bound relative.
 */
function absoluteSocketPath(path: string): string {
  const absolute = resolve(path);
  const bytes = Buffer.byteLength(absolute);
  if (bytes > constants.MAX_SOCKET_PATH_BYTES) {
    throw new RangeError(
      `socket path ${path} is ${bytes} bytes made absolute (${absolute}); sun_path holds at most ${constants.MAX_SOCKET_PATH_BYTES}, ` +
        `and a relative name cannot be answered by a receiver in another directory (use a shorter directory or an abstract name)`,
    );
  }
  return absolute;
}

/** A connectionless Unix datagram socket, bound to a name or unbound. */
export class DatagramSocket<C extends boolean = false> {
  /** Where this socket is bound; null for an unbound socket (it can send, but nobody can answer it). */
  readonly address: SocketAddress | null;
  #socket: UnixSocket;
  #fileIdentity: SocketFileIdentity | undefined;
  #whenFull: WhenFull;
  /**
   * The command that made this socket (bound or opened in its constructor
   * or a method, before the first await), if any: the fds it receives are
   * its client's as they are delivered, for closeClientFds (client-fds.ts).
   */
  readonly #command: CommandReceipts | undefined = runningCommandFds();

  /**
   * Binds a datagram socket to `address` (a path, or `{ abstract: name }`),
   * with the file safety of the helper daemon's socket: bind(2) never
   * follows or replaces an existing name, the mode (0600) is set through an
   * O_PATH|O_NOFOLLOW handle, the directory must be private and nobody else
   * may write it or a directory above it (checkSocketDirectory), a stale socket
   * file is replaced and a live one never taken (ERR_FDBRIDGE_ADDRESS_IN_USE).
   * An abstract name has no file and no permissions: anyone in the network
   * namespace can send to it (check `credentials`).
   */
  static bind<C extends boolean = false>(address: SocketAddress, options: DatagramBindOptions<C> = {}): DatagramSocket<C> {
    const [given, abstract] = parseAddress(address);
    const name = abstract ? given : absoluteSocketPath(pathString(given));
    const bound: SocketAddress = abstract ? address : (name as string);
    const whenFull = checkWhenFull(options.whenFull);
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new RangeError(`mode must be a permission mask such as 0o600, not ${mode}`);
    }
    const passCred = options.credentials === true;
    // Stryker disable next-line UnaryOperator: the addon chmods a path's file only (SockListen: !abstract && mode >= 0), never reading an abstract name's mode
    const bind = (): number => native.listen(constants.SOCK_DGRAM, name, abstract, abstract ? -1 : mode, 0, passCred);
    let fd: number;
    if (abstract) {
      fd = bind();
    } else {
      const path = name as string;
      if (options.privateDir ?? true) ensurePrivateDir(dirname(path));
      // Private or not, nobody else may be able to replace the directory or
      // what is in it, up to the root (a world-writable, non-sticky parent
      // lets another user rename it away and put a socket of theirs there).
      checkSocketDirectory(dirname(path));
      fd =
        options.replaceStale === false
          ? bind()
          : bindReplacingStale(path, constants.SOCK_DGRAM, bind, () => new FdBridgeError('ERR_FDBRIDGE_ADDRESS_IN_USE', `a socket is already bound at ${path}`));
    }
    let identity: SocketFileIdentity | undefined;
    try {
      if (!abstract) identity = socketFileIdentity(name as string);
      return new DatagramSocket<C>(fd, bound, identity, whenFull, options);
    } catch (err) {
      closeOwnFds([fd]);
      // Stryker disable next-line ConditionalExpression: an abstract name's identity is never taken, and unlinkOwnSocketFile of no identity returns at once
      if (!abstract) unlinkOwnSocketFile(name as string, identity);
      throw err;
    }
  }

  /**
   * An unbound datagram socket: it can send to bound ones, and receivers see
   * `from: null` (it cannot be answered). With `credentials: true` the
   * kernel autobinds it to an abstract name on its first send.
   */
  static open<C extends boolean = false>(options: DatagramSocketOptions<C> & OwnSocketOption = {}): DatagramSocket<C> {
    const whenFull = checkWhenFull(options.whenFull);
    const fd = native.dgramSocket(options.own === true);
    try {
      if (options.credentials === true) native.setPassCred(fd, true);
      return new DatagramSocket<C>(fd, null, undefined, whenFull, options);
    } catch (err) {
      closeOwnFds([fd]);
      throw err;
    }
  }

  private constructor(
    fd: number,
    address: SocketAddress | null,
    identity: SocketFileIdentity | undefined,
    whenFull: WhenFull,
    options: DatagramSocketOptions<C>,
  ) {
    this.#socket = wrapOwnSocket(fd, 'dgram', {
      maxFds: options.maxFds,
      bufferSize: options.bufferSize,
      sendQueueLimit: options.sendQueueLimit,
      receiveFrom: true,
    });
    // What it receives is the command's receipts, which only its hold claims.
    if (this.#command !== undefined) nativeSocketOf(this.#socket).recordReceiptsFor(this.#command.tag);
    this.address = address;
    this.#fileIdentity = identity;
    // A worker terminated with this socket open runs no close(): its teardown removes the file instead.
    // A path address is a file this socket bound (bind() took its identity).
    if (typeof address === 'string') nativeSocketOf(this.#socket).boundFile(resolve(address));
    this.#whenFull = whenFull;
  }

  /** The socket's fd (borrowed: the socket owns it), or -1 once closed. */
  get fd(): number {
    return this.#socket.fd;
  }

  get closed(): boolean {
    return this.#socket.closed;
  }

  /** Datagrams waiting here for a full receiver to make room. */
  get queuedSends(): number {
    return this.#socket.queuedSends;
  }

  /**
   * Sends `data` with 0..253 fds (borrowed) as one datagram to the socket
   * bound at `address` (see UnixSocket.sendTo for every outcome); a full
   * receiver makes it wait or fail by `whenFull`, never drop.
   */
  sendTo(address: SocketAddress, data: Uint8Array, fds?: readonly number[], options: SendToOptions = {}): Promise<void> {
    return this.#socket.sendTo(address, data, fds, options.whenFull ?? this.#whenFull);
  }

  /**
   * The next datagram; its fds belong to the caller. A truncated one rejects
   * with a TruncatedError (its fds already closed) and the next receive goes
   * on with the datagram after it. With `timeoutMs`, a TimeoutError if none
   * arrives in time.
   */
  receive(options?: ReceiveOptions): Promise<Datagram<C>> {
    const received = this.#socket.receive(options) as Promise<Datagram<C>>;
    const command = this.#command;
    if (command === undefined) return received;
    return received.then((d) => {
      command.hold(d.fds);
      return d;
    });
  }

  /**
   * Streams every datagram to `handler`; receive() is not available
   * afterwards. Datagrams already received are delivered first.
   */
  setMessageHandler(handler: DatagramHandler<C>): void {
    const command = this.#command;
    this.#socket.setMessageHandler((err, data, fds, from, credentials) => {
      if (err) {
        handler(err);
        return;
      }
      // The command's client's from now on (closeClientFds may close them).
      // Stryker disable next-line ConditionalExpression,EqualityOperator: hold() of no fds claims nothing (the addon's claimReceipts of an empty list); the line's other mutants of both are compile errors or killed
      if (command !== undefined && fds !== undefined && fds.length > 0) command.hold(fds);
      handler(null, { data: data as Buffer, fds: fds ?? [], from: from ?? null, credentials: credentials as Datagram<C>['credentials'] });
    });
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    this.#socket.unref();
    return this;
  }

  ref(): this {
    this.#socket.ref();
    return this;
  }

  /**
   * Closes the socket: datagrams waiting to be sent reject (ECANCELED), the
   * fds of datagrams received and not handed out, and those still queued
   * unread, are closed on the background closer, pending receives reject
   * with ClosedError, and the socket file is removed if the path still
   * names this very socket. From then on a sender gets ECONNREFUSED.
   * Idempotent.
   *
   * `{ shutdown: false }`: the socket lives on elsewhere (its fd was sent
   * to, or inherited by, another process that goes on receiving on it):
   * only this copy is closed (see UnixSocket.close), nothing queued is
   * read, and the socket file stays.
   */
  close(options: CloseOptions = {}): void {
    if (this.#socket.closed) return;
    this.#socket.close(options);
    if (options.shutdown !== false && typeof this.address === 'string') unlinkOwnSocketFile(this.address, this.#fileIdentity);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * The tickets of this socket's background closes not done yet
   * (UnixSocket.backgroundCloseTickets): truncated datagrams' fds, those
   * still queued at close, and the socket's own close after
   * close({ shutdown: false }).
   */
  backgroundCloseTickets(): number[] {
    return this.#socket.backgroundCloseTickets();
  }
}
