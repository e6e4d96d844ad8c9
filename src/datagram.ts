/**
 * Connectionless datagram sockets bound to a name: a receiver binds a path
 * (or an abstract name) and anyone who may write to it sends it messages
 * with fds (`sendTo`), each a whole message with the sender's address and,
 * on request, the sender's kernel-checked credentials. Driven by the event
 * loop like every other socket here.
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
import { dirname } from 'node:path';

import { ClosedError, FdBridgeError, SystemError, TimeoutError } from './errors';
import { closeFds } from './fd';
import { constants, native, type NativeSocket } from './native';
import { parseAddress, type SocketAddress } from './socket';
import { bindReplacingStale, ensurePrivateDir, socketFileIdentity, unlinkOwnSocketFile, type SocketFileIdentity } from './socket-file';

/** A sender's pid, uid and gid as the kernel recorded them when it sent (SCM_CREDENTIALS). */
export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

/** One received datagram. `C`: whether the socket asked for credentials. */
export interface Datagram<C extends boolean = false> {
  data: Buffer;
  /** Received fds, close-on-exec; the receiver owns them. */
  fds: number[];
  /**
   * Where the sender is bound, so that it can be answered; null when it sent
   * from an unbound socket: it has no address and cannot be answered.
   */
  from: SocketAddress | null;
  /**
   * The sender's credentials, on a socket made with `credentials: true`
   * (a connectionless socket has no SO_PEERCRED). The kernel checks them: a
   * sender can claim only its own pid, uid and gid, unless it holds
   * CAP_SYS_ADMIN / CAP_SETUID / CAP_SETGID.
   */
  credentials: C extends true ? Credentials : undefined;
}

/**
 * What `sendTo` does when the receiver's queue is full (it is not reading
 * fast enough; Linux queues net.unix.max_dgram_qlen datagrams per receiver):
 * 'wait' queues the datagram here until the receiver has room (the event
 * loop sleeps meanwhile) or is gone; 'fail' rejects at once with a
 * SystemError EAGAIN, nothing sent. Nothing is ever dropped silently.
 */
export type WhenFull = 'wait' | 'fail';

export interface DatagramSocketOptions<C extends boolean = false> {
  /** How many fds one receive can take (0..253, default 253); more arrive truncated. */
  maxFds?: number;
  /** The largest datagram received whole, in bytes (default 64 KiB); a larger one arrives truncated. */
  bufferSize?: number;
  /** Receive every sender's credentials with its datagrams (SO_PASSCRED, set before bind). */
  credentials?: C;
  /** sendTo's default when a receiver is full (default 'wait'). */
  whenFull?: WhenFull;
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

export interface ReceiveOptions {
  /**
   * Rejects with a TimeoutError if no datagram arrives in time. A datagram
   * peer that died sends no end of file: whoever waits for an answer needs
   * this (or to watch the peer's pidfd).
   */
  timeoutMs?: number;
}

/** Streaming receive: every datagram (ownership of its fds passes) or receive error. */
export type DatagramHandler<C extends boolean = false> = (err: Error | null, datagram?: Datagram<C>) => void;

interface Waiter<C extends boolean> {
  resolve(d: Datagram<C>): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

function describeAddress(address: SocketAddress): string {
  return typeof address === 'string' ? address : `@${address.abstract}`;
}

function checkWhenFull(value: unknown): WhenFull {
  if (value === undefined) return 'wait';
  if (value !== 'wait' && value !== 'fail') throw new TypeError(`whenFull must be 'wait' or 'fail', not ${String(value)}`);
  return value;
}

/** A connectionless Unix datagram socket, bound to a name or unbound. */
export class DatagramSocket<C extends boolean = false> {
  /** Where this socket is bound; null for an unbound socket (it can send, but nobody can answer it). */
  readonly address: SocketAddress | null;
  #native: NativeSocket;
  #fd: number;
  #closed = false;
  #fileIdentity: SocketFileIdentity | undefined;
  #whenFull: WhenFull;
  #handler: DatagramHandler<C> | undefined;
  #waiters: Array<Waiter<C>> = [];
  #buffered: Array<Datagram<C> | Error> = [];
  #readError: Error | undefined;
  #reading = false;

  /**
   * Binds a datagram socket to `address` (a path, or `{ abstract: name }`),
   * with the file safety of the helper daemon's socket: bind(2) never
   * follows or replaces an existing name, the mode (0600) is set through an
   * O_PATH|O_NOFOLLOW handle, the directory must be private, a stale socket
   * file is replaced and a live one never taken (ERR_FDBRIDGE_ADDRESS_IN_USE).
   * An abstract name has no file and no permissions: anyone in the network
   * namespace can send to it (check `credentials`).
   */
  static bind<C extends boolean = false>(address: SocketAddress, options: DatagramBindOptions<C> = {}): DatagramSocket<C> {
    const [name, abstract] = parseAddress(address);
    const whenFull = checkWhenFull(options.whenFull);
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new RangeError(`mode must be a permission mask such as 0o600, not ${mode}`);
    }
    const passCred = options.credentials === true;
    const bind = (): number => native.listen(constants.SOCK_DGRAM, name, abstract, abstract ? -1 : mode, 0, passCred);
    let fd: number;
    if (abstract) {
      fd = bind();
    } else {
      if (options.privateDir ?? true) ensurePrivateDir(dirname(name));
      fd =
        options.replaceStale === false
          ? bind()
          : bindReplacingStale(name, constants.SOCK_DGRAM, bind, () => new FdBridgeError('ERR_FDBRIDGE_ADDRESS_IN_USE', `a socket is already bound at ${name}`));
    }
    let identity: SocketFileIdentity | undefined;
    try {
      if (!abstract) identity = socketFileIdentity(name);
      return new DatagramSocket<C>(fd, address, identity, whenFull, options);
    } catch (err) {
      closeFds([fd]);
      if (!abstract) unlinkOwnSocketFile(name, identity);
      throw err;
    }
  }

  /**
   * An unbound datagram socket: it can send to bound ones, and receivers see
   * `from: null` (it cannot be answered). With `credentials: true` the
   * kernel autobinds it to an abstract name on its first send.
   */
  static open<C extends boolean = false>(options: DatagramSocketOptions<C> = {}): DatagramSocket<C> {
    const whenFull = checkWhenFull(options.whenFull);
    const fd = native.dgramSocket();
    try {
      if (options.credentials === true) native.setPassCred(fd, true);
      return new DatagramSocket<C>(fd, null, undefined, whenFull, options);
    } catch (err) {
      closeFds([fd]);
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
    this.#native = new native.Socket(
      fd,
      constants.SOCK_DGRAM,
      { maxFds: options.maxFds, bufferSize: options.bufferSize },
      (err, data, fds, from, credentials) => this.#onDatagram(err, data as Buffer | undefined, fds, from, credentials),
    );
    this.#native.receiveFrom(true);
    this.#fd = fd;
    this.address = address;
    this.#fileIdentity = identity;
    this.#whenFull = whenFull;
  }

  /** The socket's fd (borrowed: the socket owns it), or -1 once closed. */
  get fd(): number {
    return this.#closed ? -1 : this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Datagrams waiting here for a full receiver to make room. */
  get queuedSends(): number {
    return this.#native.queuedSends;
  }

  /**
   * Sends `data` with 0..253 fds (borrowed) as one datagram to the socket
   * bound at `address`. Resolves once the kernel has queued it for the
   * receiver. Rejects with nothing sent on a bad fd (EBADF), a name nobody
   * is bound to (ENOENT, ECONNREFUSED), no permission (EACCES), a datagram
   * too large (EMSGSIZE), or a full receiver under 'fail' (EAGAIN); with
   * 'wait' a full receiver delays it instead, and one that goes away
   * meanwhile rejects it (ECONNREFUSED). Datagrams leave in call order.
   */
  sendTo(address: SocketAddress, data: Uint8Array, fds?: readonly number[], options: SendToOptions = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#closed) throw new ClosedError('sendTo: the socket is closed');
      const [name, abstract] = parseAddress(address);
      const wait = checkWhenFull(options.whenFull ?? this.#whenFull) === 'wait';
      const done = (err: Error | null): void => (err ? reject(this.#sendError(err, address)) : resolve());
      let r: 0 | 1;
      try {
        r = this.#native.sendTo(name, abstract, data, fds, wait, done);
      } catch (err) {
        throw this.#sendError(err as Error, address);
      }
      if (r === 0) resolve();
    });
  }

  /**
   * The next datagram; its fds belong to the caller. A truncated one rejects
   * with a TruncatedError (its fds already closed) and the next receive goes
   * on with the datagram after it.
   */
  receive(options: ReceiveOptions = {}): Promise<Datagram<C>> {
    if (this.#handler) throw new Error('receive(): this socket delivers to a message handler');
    const timeoutMs = options.timeoutMs;
    if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs >= 0)) {
      throw new RangeError(`timeoutMs must be a non-negative number of milliseconds, not ${timeoutMs}`);
    }
    const next = this.#buffered.shift();
    if (next !== undefined) return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    if (this.#readError) return Promise.reject(this.#readError);
    if (this.#closed) return Promise.reject(new ClosedError('receive: the socket is closed'));
    return new Promise((resolve, reject) => {
      const waiter: Waiter<C> = { resolve, reject };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          const i = this.#waiters.indexOf(waiter);
          if (i < 0) return;
          this.#waiters.splice(i, 1);
          if (this.#waiters.length === 0) this.#setReading(false);
          reject(
            new TimeoutError(
              `receive: no datagram within ${timeoutMs} ms on ${this.address ? describeAddress(this.address) : 'an unbound socket'} ` +
                '(a datagram peer that died sends no end of file)',
            ),
          );
        }, timeoutMs);
      }
      this.#waiters.push(waiter);
      this.#setReading(true);
    });
  }

  /**
   * Streams every datagram to `handler`; receive() is not available
   * afterwards. Datagrams already received are delivered first.
   */
  setMessageHandler(handler: DatagramHandler<C>): void {
    if (this.#closed) throw new ClosedError('setMessageHandler: the socket is closed');
    this.#handler = handler;
    for (const d of this.#buffered.splice(0)) {
      if (d instanceof Error) handler(d);
      else handler(null, d);
    }
    if (this.#readError) handler(this.#readError);
    else this.#setReading(true);
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    this.#native.unref();
    return this;
  }

  ref(): this {
    this.#native.ref();
    return this;
  }

  /**
   * Closes the socket: datagrams waiting to be sent reject (ECANCELED), the
   * fds of datagrams received and not handed out are closed (the kernel
   * releases those still queued unread), pending receives reject with
   * ClosedError, and the socket file is removed if the path still names
   * this very socket. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    if (typeof this.address === 'string') unlinkOwnSocketFile(this.address, this.#fileIdentity);
    for (const d of this.#buffered.splice(0)) if (!(d instanceof Error)) closeFds(d.fds);
    const err = new ClosedError('receive: the socket was closed');
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** A sendto failure, with the destination and the way out in its message. */
  #sendError(err: Error, address: SocketAddress): Error {
    if (!(err instanceof SystemError)) return err;
    const where = describeAddress(address);
    const why: Record<string, string> = {
      EAGAIN: "the receiver's queue is full (it is not reading): retry later, or send with whenFull: 'wait'",
      ECONNREFUSED: `nobody is bound at ${where} any more (the receiver closed its socket or died)`,
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

  #setReading(on: boolean): void {
    if (on === this.#reading || this.#closed) return;
    this.#reading = on;
    if (on) this.#native.startReading();
    else this.#native.stopReading();
  }

  #onDatagram(
    err: Error | null,
    data: Buffer | undefined,
    fds: number[] | undefined,
    from: string | { abstract: string } | null | undefined,
    credentials: Credentials | undefined,
  ): void {
    // Truncation concerns one datagram; any other error ends reading.
    if (err && err.name !== 'TruncatedError') {
      this.#readError = err;
      this.#reading = false;
    }
    const item: Datagram<C> | Error = err ?? {
      data: data as Buffer,
      fds: fds ?? [],
      from: from ?? null,
      credentials: credentials as Datagram<C>['credentials'],
    };
    if (this.#handler) {
      if (item instanceof Error) this.#handler(item);
      else this.#handler(null, item);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      if (item instanceof Error) waiter.reject(item);
      else waiter.resolve(item);
    } else if (this.#closed) {
      if (!(item instanceof Error)) closeFds(item.fds);
    } else {
      this.#buffered.push(item);
    }
    if (this.#readError) {
      for (const w of this.#waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(this.#readError);
      }
    } else if (this.#waiters.length === 0) {
      this.#setReading(false);
    }
  }
}
