/**
 * The client side of a connection to a command in another process (child and
 * helper transports): frames over one SEQPACKET socket, one round trip per
 * duplication, requests pipelined and paired with replies by id.
 */
import { BaseConnection, queueFullError, type CommandLocation, type ConnectOptions } from '../connection';
import {
  ClosedError,
  farSystemError,
  FdBridgeError,
  TimeoutError,
  PeerExitedError,
  PeerRefusedError,
  ProtocolError,
  QueueFullError,
  QuotaExceededError,
  RemoteError,
  TruncatedError,
  UnknownCommandError,
  UnsupportedError,
  type PeerExit,
  type RemoteErrorInfo,
} from '../errors';
import { closeFds } from '../fd';
import { native } from '../native';
import {
  decodeFrame,
  encodeCall,
  encodeDup,
  encodeEmpty,
  encodeFdList,
  encodeJson,
  FrameType,
  MAX_FDS_PER_FRAME,
  PROTOCOL_VERSION,
  type Frame,
  type ReadyPayload,
} from '../protocol';
import type { CommandSpec } from '../command';
import { UnixSocket } from '../socket';
import { dupAll } from './dup-above-floor';
import { refuseFds } from './refuse-fds';

/** What a pending request resolves with. */
const DUP_ONE = 0; // one fd: resolves with its number
const DUP_MANY = 1; // resolves with the list
const DUP_COALESCED = 2; // several dupFileDescriptor calls in one frame: each waiter gets its number
const CALL = 3; // resolves with the RESULT value

/** One request awaiting its reply. A class, so every entry has one shape (monomorphic property loads). */
class Pending {
  constructor(
    readonly kind: number,
    /** fds the reply must list. */
    readonly count: number,
    readonly operation: string,
    readonly resolve: (value: never) => void,
    readonly reject: (err: Error) => void,
    /** DUP_COALESCED: the callers, in frame order. */
    readonly waiters: Waiter[] | null,
    /** pidfd: our pinned copies, closed once the far side has pulled them. */
    readonly pins: number[] | null,
  ) {}

  /** Rejects this request and every caller folded into it. */
  fail(err: Error | ((operation: string) => Error)): void {
    const e = typeof err === 'function' ? err(this.operation) : err;
    if (this.waiters) for (const w of this.waiters) w.reject(e);
    else this.reject(e);
  }
}

interface Waiter {
  resolve(fd: number): void;
  reject(err: Error): void;
}

/**
 * The error for an ERROR reply: a daemon's quota is a QuotaExceededError, a
 * duplication's failed system call over there a SystemError (as on every
 * transport), anything else the command's RemoteError.
 */
function remoteFailure(method: string, info: RemoteErrorInfo, duplication: boolean): FdBridgeError {
  if (info.code === 'ERR_FDBRIDGE_QUOTA') return QuotaExceededError.fromMessage(info.message);
  return (duplication ? farSystemError(method, info) : undefined) ?? new RemoteError(method, info);
}

/** How a transport learns, after the socket died, how its peer ended. */
export type PeerExitProbe = () => Promise<PeerExit>;

/** A send queued even past the send queue's limit (see UnixSocket.write). */
const EXEMPT = { exemptFromLimit: true } as const;
/** A send of our own pins (see UnixSocket.write): not refused as fds we hold. */
const OWN_FDS = { ownFds: true } as const;

/** Every fd number in a DUP_OK payload is non-negative. */
function allNonNegative(buf: Buffer): boolean {
  for (let off = 8; off < buf.length; off += 4) if (buf.readInt32LE(off) < 0) return false;
  return true;
}

/**
 * A send or receive error that means the peer has closed its end: EPIPE on
 * a send, ECONNRESET when it died with our requests unread. Requests that
 * meet it fail with PeerExitedError, like those still waiting for a reply.
 */
function isPeerGone(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EPIPE' || code === 'ECONNRESET';
}


/**
 * What the client's side of a connection turned away. The command's side
 * never sends fds (its replies carry fd *numbers*, valid over there), so
 * every fd that arrives here is unexpected.
 */
export interface SocketConnectionStats {
  /** fds that arrived from the command's side (each closed at once; the connection then failed). */
  unexpectedFds: number;
  /** Messages rejected as malformed, unexpected or truncated (each fails the connection). */
  protocolErrors: number;
  /**
   * True when the kernel refuses fds sent to this socket (SO_PASSRIGHTS=0,
   * Linux 6.16+: the sender's sendmsg fails with EPERM); false on older
   * kernels, where the receive path closes and counts them instead.
   */
  refusesFds: boolean;
}

/** Sends HELLO and waits for READY (or REFUSED / ERROR / death) on a fresh socket. */
export async function handshake(
  socket: UnixSocket,
  command: CommandSpec,
  timeoutMs: number,
  describePeer: () => string,
  pull?: 'pidfd',
): Promise<ReadyPayload> {
  // In pidfd mode the far side proves it can pull our fds by pulling one at
  // once: our socket's own fd, which is certainly open here.
  const hello = pull ? { version: PROTOCOL_VERSION, command, pull, probeFd: socket.fd } : { version: PROTOCOL_VERSION, command };
  // The command's side never sends fds: have the kernel refuse them before
  // it can answer (the connection's stats record whether it could).
  refuseFds(socket);
  await socket.send(encodeJson(FrameType.HELLO, 0, hello));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new TimeoutError(`connect: ${describePeer()} did not answer within ${timeoutMs} ms (options.timeoutMs)`)),
      timeoutMs,
    );
  });
  try {
    const m = await Promise.race([
      socket.receive().catch((err: unknown) => {
        // An oversized answer or one with fds that did not fit: the native
        // layer closed them; for the protocol it is a malformed answer.
        if (err instanceof TruncatedError) {
          throw new ProtocolError(`connect: ${describePeer()} answered HELLO with a truncated message`, { cause: err });
        }
        throw err;
      }),
      timeout,
    ]);
    if (m.fds.length > 0) {
      // Whatever frame it is (even a well-formed DUP), fds never come this way.
      const n = closeFds(m.fds);
      throw new ProtocolError(`connect: ${describePeer()} answered HELLO with ${n} fd(s) attached; the command's side never sends fds`);
    }
    const frame: Frame = decodeFrame(m.data, m.fds);
    switch (frame.type) {
      case FrameType.READY:
        return frame.ready;
      case FrameType.REFUSED:
        throw new PeerRefusedError(`connect: ${describePeer()} refused this client: ${frame.message}`);
      case FrameType.ERROR:
        if (frame.error.code === 'ERR_FDBRIDGE_UNSUPPORTED') throw new UnsupportedError(frame.error.message);
        if (frame.error.code === 'ERR_FDBRIDGE_UNKNOWN_COMMAND') throw new UnknownCommandError(`connect: ${describePeer()}: ${frame.error.message}`);
        throw new RemoteError('constructor', frame.error);
      default:
        throw new ProtocolError(`connect: ${describePeer()} answered HELLO with a frame of type ${frame.type}`);
    }
  } finally {
    clearTimeout(timer);
  }
}

export class SocketConnection extends BaseConnection {
  readonly transport: 'child' | 'helper' | 'pidfd';
  readonly location: CommandLocation;
  #socket: UnixSocket;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Set once the connection can no longer be used: every new request rejects with it. */
  #dead: Error | undefined;
  /** The peer is gone and #peerGone is finding out how it ended: requests made meanwhile wait for that. */
  #probing = false;
  #probe: PeerExitProbe;
  #closedByPeer: Promise<void>;
  #onPeerClosed!: () => void;
  #closing = false;
  /** pidfd transport: fds are pulled by number instead of sent. */
  #pull: boolean;
  /** The header of every DUP request (the id is written in just before each send). */
  #dupHeader = encodeDup(0);
  /** Pinned fds and their callers, folded into one frame at the end of this tick; null when none. */
  #folding: number[] | null = null;
  #foldWaiters: Waiter[] | null = null;
  /** pidfd: pins the far side may still pull (see #linger). */
  #lingering: number[] = [];

  #onCommandClosed: ConnectOptions['onCommandClosed'];
  readonly #stats: SocketConnectionStats;

  constructor(
    socket: UnixSocket,
    transport: 'child' | 'helper' | 'pidfd',
    ready: ReadyPayload,
    probe: PeerExitProbe,
    onCommandClosed?: ConnectOptions['onCommandClosed'],
  ) {
    super();
    this.#pull = transport === 'pidfd';
    this.#onCommandClosed = onCommandClosed;
    this.#socket = socket;
    this.transport = transport;
    this.location = { transport, pid: ready.pid, threadId: ready.threadId };
    this.#probe = probe;
    this.#closedByPeer = new Promise((resolve) => (this.#onPeerClosed = resolve));
    // handshake() did this already; doing it again (idempotent) records the
    // outcome, and covers a socket that did not come through handshake().
    this.#stats = { unexpectedFds: 0, protocolErrors: 0, refusesFds: refuseFds(socket) };
    socket.setMessageHandler((err, data, fds) => this.#onMessage(err, data, fds));
  }

  /**
   * What this connection turned away from the command's side (a snapshot).
   * Not part of the Connection interface: only socket transports (child,
   * helper, pidfd) receive anything from another process.
   */
  get stats(): SocketConnectionStats {
    return { ...this.#stats };
  }

  protected override brokenError(): Error | undefined {
    return this.#dead;
  }

  /**
   * One duplication. With nothing in flight it goes out at once, alone, and
   * through C++ end to end (requestDup: the reply resolves the promise
   * without a JS callback). Calls made while others are in flight or
   * queued (e.g. `Promise.all(fds.map(dup))`) are folded into one DUP frame
   * sent from a microtask: one message and one reply for up to MAX_FDS_PER_FRAME of them.
   * Each folded fd is pinned (dup'd) when the call is made, because the
   * caller may close or reuse its number before the frame leaves.
   */
  protected dupOne(fd: number): Promise<number> {
    if (this.#dead) return Promise.reject(this.#dead);
    if (this.#folding === null && !this.#pull && this.#socket.pendingDups === 0) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) >>> 0 || 1;
      try {
        return this.#socket.requestDup(id, fd);
      } catch {
        // Nothing was sent (EBADF, EPIPE...): the general path sends nothing
        // either, and reports it the way every request does.
        return this.#send(this.#dupHeader, [fd], DUP_ONE, 1, 'dupFileDescriptor', null, null) as Promise<number>;
      }
    }
    let pin: number;
    try {
      // Above the floor: a pin that took the lowest free number could take
      // one the caller has just closed, and a later dup of that number
      // would pin this pin (someone else's file) instead of failing.
      pin = native.dupHigh(fd);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#folding === null) {
      this.#folding = [];
      this.#foldWaiters = [];
      queueMicrotask(this.#flushFolded);
    }
    return new Promise<number>((resolve, reject) => {
      (this.#folding as number[]).push(pin);
      (this.#foldWaiters as Waiter[]).push({ resolve, reject });
    });
  }

  /**
   * One duplication, blocking: the DUP frame goes out (behind whatever is
   * queued) and this thread waits in poll(2) on the socket for its reply
   * (UnixSocket::DupSync). Replies to other requests that arrive meanwhile
   * reach #onMessage, in order, before this returns, exactly as the event
   * loop would have delivered them. On a timeout the request stays pending
   * here: a late DUP_OK releases the duplicate it names, so nothing is left
   * behind on the far side.
   */
  protected dupOneSync(fd: number, timeoutMs: number): number {
    if (this.#dead) throw this.#dead;
    if (this.#pull) {
      throw new UnsupportedError(
        'dupFileDescriptorSync is not available on the pidfd transport: the far side pulls the fd while this side waits in its event loop; use dupFileDescriptor',
      );
    }
    this.#flushFolded(); // requests leave in the order they were made
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    let r: ReturnType<UnixSocket['dupSync']>;
    try {
      r = this.#socket.dupSync(id, fd, timeoutMs);
    } catch (err) {
      // Nothing was sent.
      if (err instanceof QueueFullError) throw this.#queueFull('dupFileDescriptorSync', err);
      if (isPeerGone(err)) {
        void this.#peerGone(err as Error);
        throw new PeerExitedError('dupFileDescriptorSync', { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null });
      }
      throw err;
    }
    if (typeof r === 'number') return r;
    const peer = `the ${this.transport} (pid ${this.location.pid})`;
    switch (r.status) {
      case 'timeout': {
        const release = (far: number): void => void this.release([far]).catch(() => undefined);
        this.#pending.set(id, new Pending(DUP_ONE, 1, 'dupFileDescriptorSync', release as (v: never) => void, () => undefined, null, null));
        throw new TimeoutError(
          `dupFileDescriptorSync(${fd}) failed: ${peer} did not answer within ${timeoutMs} ms; ` +
            'a duplicate it makes later is released when its reply comes',
        );
      }
      case 'gone':
        // The held end of file or error has reached #onMessage already: the
        // connection is failing, and its pending requests with it.
        throw this.brokenError() ?? new PeerExitedError('dupFileDescriptorSync', { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null });
      case 'reply': {
        if (r.fdsClosed > 0) {
          this.#stats.unexpectedFds += r.fdsClosed;
          const err = new ProtocolError(`the ${this.transport} sent ${r.fdsClosed} fd(s) with a reply; its side never sends fds`);
          this.#violation(err);
          throw err;
        }
        let frame: Frame;
        try {
          frame = decodeFrame(r.reply, []);
        } catch (err) {
          this.#violation(err as Error);
          throw err;
        }
        if (frame.type === FrameType.ERROR) throw remoteFailure('dupFileDescriptorSync', frame.error, true);
        const err = new ProtocolError('dupFileDescriptorSync: the reply does not list 1 fd');
        this.#violation(new ProtocolError(`the ${this.transport} answered a duplication with a wrong reply`));
        throw err;
      }
    }
  }

  /** Sends the calls folded in this tick, MAX_FDS_PER_FRAME per frame. */
  readonly #flushFolded = (): void => {
    // Already flushed by a later request that had to go out after these.
    if (this.#folding === null) return;
    const pins = this.#folding;
    const waiters = this.#foldWaiters as Waiter[];
    this.#folding = null;
    this.#foldWaiters = null;
    for (let i = 0; i < pins.length; i += MAX_FDS_PER_FRAME) {
      const chunk = pins.slice(i, i + MAX_FDS_PER_FRAME);
      const callers = waiters.slice(i, i + MAX_FDS_PER_FRAME);
      const sent = this.#send(
        this.#pull ? null : this.#dupHeader,
        chunk,
        DUP_COALESCED,
        chunk.length,
        'dupFileDescriptor',
        callers,
        this.#pull ? chunk : null,
        OWN_FDS,
      );
      // The kernel holds its own references once the frame is queued; the
      // pidfd transport keeps its pins until the far side has pulled them.
      if (!this.#pull) closeFds(chunk);
      sent.catch(() => undefined); // the callers were told through their waiters
    }
  };

  protected dupMany(fds: number[], above: number): Promise<number[]> {
    this.#flushFolded(); // requests leave in the order they were made
    // A dead connection fails the request as such, before any fd is
    // touched (pinning a closed fd would fail with EBADF first).
    if (this.#dead) return this.#send(this.#dupHeader, [], DUP_MANY, fds.length, 'dupFileDescriptors', null, null) as Promise<number[]>;
    if (!this.#pull) return this.#send(this.#dupHeader, fds, DUP_MANY, fds.length, 'dupFileDescriptors', null, null) as Promise<number[]>;
    let pins: number[];
    try {
      pins = dupAll(fds, above);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#send(null, pins, DUP_MANY, fds.length, 'dupFileDescriptors', null, pins) as Promise<number[]>;
  }

  protected async release(fds: number[]): Promise<void> {
    this.#flushFolded();
    if (this.#dead || fds.length === 0) return;
    for (let i = 0; i < fds.length; i += MAX_FDS_PER_FRAME) {
      const chunk = fds.slice(i, i + MAX_FDS_PER_FRAME);
      // Past the queue's limit too: it gives back what accepted requests
      // took (a batch that failed part-way), so it must not fail for the
      // same full queue that failed the batch.
      await this.#send(encodeFdList(FrameType.RELEASE, 0, chunk), undefined, CALL, 0, 'release', null, null, EXEMPT);
    }
  }

  protected callRemote(method: string, args: unknown[]): Promise<unknown> {
    this.#flushFolded(); // a call made after some duplications reaches the command after them
    let frame: Buffer;
    try {
      frame = encodeCall(0, method, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#send(frame, undefined, CALL, 0, `${method}()`, null, null);
  }

  /**
   * Sends one request frame and registers what its reply settles. `frame`
   * gets the request's id written in; null means a GETFD frame (pidfd) built
   * here from `pins`. `fds` travel as SCM_RIGHTS.
   */
  #send(
    frame: Buffer | null,
    fds: readonly number[] | undefined,
    kind: number,
    count: number,
    operation: string,
    waiters: Waiter[] | null,
    pins: number[] | null,
    options?: { exemptFromLimit?: boolean; ownFds?: boolean },
  ): Promise<unknown> {
    if (this.#dead && this.#probing) {
      // Fail it with the peer's exit status, like the requests already pending.
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) >>> 0 || 1;
      return new Promise((resolve, reject) => {
        this.#pending.set(id, new Pending(kind, count, operation, resolve, reject, waiters, pins));
      });
    }
    if (this.#dead) {
      const dead = this.#dead;
      if (pins) closeFds(pins);
      if (waiters) for (const w of waiters) w.reject(dead);
      return Promise.reject(dead);
    }
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    return new Promise((resolve, reject) => {
      const entry = new Pending(kind, count, operation, resolve, reject, waiters, pins);
      const data = frame ?? encodeFdList(FrameType.GETFD, id, pins as number[]);
      data.writeUInt32LE(id, 4);
      this.#pending.set(id, entry);
      try {
        // The data is copied before write returns, so #dupHeader can be reused.
        this.#socket.write(data, this.#pull ? undefined : fds, this.#onSendFailed, id, options);
      } catch (err) {
        // Nothing was queued (EBADF, EPIPE...): the fds were not sent. A peer
        // that is gone fails this request like every other pending one.
        if (isPeerGone(err)) {
          void this.#peerGone(err as Error);
          return;
        }
        this.#pending.delete(id);
        if (pins) closeFds(pins);
        entry.fail(err instanceof QueueFullError ? this.#queueFull(operation, err) : (err as Error));
      }
    });
  }

  /** The request `operation` met a full send queue: say so in the caller's terms. */
  #queueFull(operation: string, err: QueueFullError): QueueFullError {
    return queueFullError(operation, `the ${this.transport} (pid ${this.location.pid})`, err, err);
  }

  /**
   * pidfd: pins of requests the far side may still read (it reads what it
   * was sent even after this side gave up on the replies). They stay open
   * until it can no longer pull: a number closed here too soon could name
   * another file by the time it is pulled.
   */
  #linger(pins: number[]): void {
    if (this.#lingering.length === 0) {
      void this.peerCannotPull().then(() => closeFds(this.#lingering.splice(0)));
    }
    this.#lingering.push(...pins);
  }

  /**
   * Resolves once the far side can no longer pull fds from this process
   * (pidfd): by default once it said CLOSED or hung up; a transport that
   * knows when the far side's process has exited waits for that instead.
   */
  protected peerCannotPull(): Promise<void> {
    return this.#closedByPeer;
  }

  /** A queued send that failed later (the socket broke before it left). */
  readonly #onSendFailed = (err: Error | null, id: number): void => {
    const entry = err ? this.#pending.get(id) : undefined;
    if (!entry) return;
    if (isPeerGone(err)) {
      void this.#peerGone(err as Error);
      return;
    }
    this.#pending.delete(id);
    if (entry.pins) closeFds(entry.pins);
    entry.fail(err as Error);
  };

  /** Settles the request a DUP_OK answers with the fd numbers in `data`. */
  #settleDup(entry: Pending, data: Buffer): void {
    if (entry.pins) closeFds(entry.pins);
    if (entry.kind === DUP_ONE) {
      (entry.resolve as (fd: number) => void)(data.readInt32LE(8));
    } else if (entry.kind === DUP_COALESCED) {
      const waiters = entry.waiters as Waiter[];
      for (let i = 0; i < waiters.length; i++) (waiters[i] as Waiter).resolve(data.readInt32LE(8 + 4 * i));
    } else {
      const out = new Array<number>(entry.count);
      for (let i = 0; i < entry.count; i++) out[i] = data.readInt32LE(8 + 4 * i);
      (entry.resolve as (fds: number[]) => void)(out);
    }
  }

  #onMessage(err: Error | null, data?: Buffer, fds?: number[]): void {
    if (this.#closing) {
      // Replies to requests that close() already rejected are dropped (the
      // command's host sweeps whatever fds they concerned); CLOSED or EOF
      // ends the wait.
      this.#stats.unexpectedFds += closeFds(fds);
      if (err ? err.name !== 'TruncatedError' : data && data.length >= 1 && data[0] === FrameType.CLOSED) {
        this.#onPeerClosed();
      }
      return;
    }
    if (err) {
      if (err instanceof TruncatedError) {
        // Oversized (MSG_TRUNC), or fds that did not fit (MSG_CTRUNC): the
        // native layer closed what arrived; none was expected anyway.
        this.#stats.unexpectedFds += err.fdsClosed;
        this.#violation(new ProtocolError(`the ${this.transport} sent a message that arrived truncated (${err.message})`, { cause: err }));
      } else {
        void this.#peerGone(err);
      }
      return;
    }
    const buf = data as Buffer;
    if ((fds as number[]).length > 0) {
      // The command's side never sends fds, whatever the frame (even a
      // well-formed DUP): close them and end the connection.
      const n = closeFds(fds);
      this.#stats.unexpectedFds += n;
      this.#violation(
        new ProtocolError(`the ${this.transport} sent ${n} fd(s) with a frame of type ${buf.length > 0 ? buf[0] : 'none'}; its side never sends fds`),
      );
      return;
    }
    // The common reply, checked without building a Frame: a well-formed
    // DUP_OK (zero flags) answering a duplication of the same count.
    if (buf.length >= 12 && buf[0] === FrameType.DUP_OK && buf.readUInt8(1) === 0 && buf.readUInt16LE(2) === 0) {
      const entry = this.#pending.get(buf.readUInt32LE(4));
      if (entry && entry.kind !== CALL && buf.length === 8 + 4 * entry.count && allNonNegative(buf)) {
        this.#pending.delete(buf.readUInt32LE(4));
        this.#settleDup(entry, buf);
        return;
      }
    }
    let frame: Frame;
    try {
      frame = decodeFrame(buf, fds as number[]);
    } catch (e) {
      this.#violation(e as Error);
      return;
    }
    const pending = this.#pending.get(frame.id);
    if (!pending && (frame.type === FrameType.ERROR || frame.type === FrameType.DUP_OK || frame.type === FrameType.RESULT)) {
      // A reply to a lone duplication sent through C++ (requestDup) that the
      // C++ side passed on: the command's side refused it (ERROR), or the
      // reply is wrong (a DUP_OK listing other than one fd, a RESULT).
      if (frame.type === FrameType.ERROR) {
        if (this.#socket.rejectDup(frame.id, remoteFailure('dupFileDescriptor', frame.error, true))) return;
      } else {
        const err = new ProtocolError('dupFileDescriptor: the reply does not list 1 fd');
        if (this.#socket.rejectDup(frame.id, err)) {
          this.#violation(new ProtocolError(`the ${this.transport} answered a duplication with a wrong reply`));
          return;
        }
      }
    }
    if (!pending || (frame.type !== FrameType.DUP_OK && frame.type !== FrameType.RESULT && frame.type !== FrameType.ERROR)) {
      this.#violation(new ProtocolError(`the ${this.transport} sent a reply (type ${frame.type}, id ${frame.id}) to no request`));
      return;
    }
    this.#pending.delete(frame.id);
    if (pending.kind !== CALL && pending.pins) closeFds(pending.pins);
    if (frame.type === FrameType.ERROR) {
      pending.fail(remoteFailure(pending.operation.replace(/\(\)$/, ''), frame.error, pending.kind !== CALL));
    } else if (pending.kind !== CALL) {
      // A DUP_OK that the fast path did not take lists the wrong count.
      pending.fail(new ProtocolError(`${pending.operation}: the reply does not list ${pending.count} fd(s)`));
      this.#violation(new ProtocolError(`the ${this.transport} answered a duplication with a wrong reply`));
    } else if (frame.type === FrameType.RESULT) {
      (pending.resolve as (v: unknown) => void)(frame.value);
    } else {
      // DUP_OK to a call: the two sides disagree about what was asked, so
      // nothing later on this connection can be trusted either.
      pending.fail(new ProtocolError(`${pending.operation}: the reply carries fd numbers`));
      this.#violation(new ProtocolError(`the ${this.transport} answered a call with fd numbers`));
    }
  }

  /** The command's side broke the protocol: count it and fail the connection. */
  #violation(err: Error): void {
    this.#stats.protocolErrors++;
    this.#fail(err);
  }

  /** The peer closed the socket or the socket failed: find out how the peer ended, then fail everything. */
  async #peerGone(cause: Error): Promise<void> {
    this.#onPeerClosed();
    if (this.#dead) return;
    if (this.#closing) {
      this.#fail(this.closedError('the request'));
      return;
    }
    // Mark dead at once so no new request is sent into a dead socket.
    this.#dead = new PeerExitedError('request', { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null });
    let exit: PeerExit;
    this.#probing = true;
    try {
      exit = await this.#probe();
    } catch {
      exit = { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null };
    } finally {
      this.#probing = false;
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    // EOF, or ECONNRESET when it died with our requests unread: both mean the
    // peer is gone. Anything else is worth naming.
    const gone = cause.name === 'EofError' || isPeerGone(cause);
    if (!gone && exit.exitCode === null && exit.signal === null) {
      exit = { ...exit, detail: `broke the connection (${cause.message})` };
    }
    this.#dead = new PeerExitedError('request', exit);
    for (const p of pending) {
      if (p.pins) closeFds(p.pins);
      p.fail((operation) => new PeerExitedError(operation, exit));
    }
    this.#socket.rejectDups(new PeerExitedError('dupFileDescriptor', exit));
    this.#socket.close();
  }

  /** Fails the connection: every pending and later request rejects with `err`. */
  #fail(err: Error): void {
    if (!this.#dead) this.#dead = err;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.pins) this.#linger(p.pins);
      p.fail(err);
    }
    this.#socket.rejectDups(err);
    this.#socket.close();
    this.#onPeerClosed();
  }

  /**
   * Graceful close: CLOSE asks the command's side to run the command's
   * close() and close the fds it did not adopt; it answers CLOSED (we wait
   * at most `graceMs`, or until the peer is gone). The onCommandClosed hook
   * runs then, while the far side still waits for us to hang up.
   */
  protected async closeTransport(graceMs = 5000): Promise<void> {
    this.#closing = true;
    const err = this.closedError('the request');
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.pins) this.#linger(p.pins);
      p.fail((operation) => new ClosedError(`${operation} failed: the ${this.transport} connection was closed`));
    }
    this.#socket.rejectDups(new ClosedError(`dupFileDescriptor failed: the ${this.transport} connection was closed`));
    if (!this.#dead) {
      this.#dead = err;
      try {
        // CLOSE goes out behind whatever is queued, even past the queue's
        // limit: one more small message, and the only way to close politely.
        this.#socket.write(encodeEmpty(FrameType.CLOSE, 0), undefined, undefined, undefined, EXEMPT);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.#closedByPeer, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
        await this.#onCommandClosed?.(this.location);
      } catch {
        // the socket is already broken: nothing to wait for
      }
    }
    this.#socket.close();
  }
}
