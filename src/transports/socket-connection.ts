/**
 * The client side of a connection to a command in another process (child and
 * helper transports): frames over one SEQPACKET socket, one round trip per
 * duplication, requests pipelined and paired with replies by id.
 */
import { BaseConnection, queueFullError, type CommandLocation, type ConnectOptions } from '../connection';
import {
  ClosedError,
  closedBehindBackError,
  EofError,
  farSystemError,
  FdBridgeError,
  TimeoutError,
  PeerExitedError,
  PeerRefusedError,
  ProtocolError,
  QueueFullError,
  QuotaExceededError,
  quotaOf,
  RemoteError,
  SystemError,
  TruncatedError,
  UnknownCommandError,
  UnsupportedError,
  type PeerExit,
  type RemoteErrorInfo,
} from '../errors';
import { closeOwnFds, HeldCopies } from '../fd';
import { openFrameChannel, type FrameChannel } from '../frame-channel';
import { fdList, native, type FdList } from '../native';
import {
  decodeFrame,
  encodeEmpty,
  encodeFdList,
  encodeJson,
  encodeJsonText,
  FrameType,
  MAX_FDS_PER_FRAME,
  PROTOCOL_VERSION,
  type Frame,
  type HelloPayload,
  type ReadyPayload,
} from '../protocol';
import type { CommandSpec } from '../command';
import { UnixSocket } from '../socket';
import { dupAll } from './dup-above-floor';
import { refuseFds } from './refuse-fds';

/** What the channel calls a request of each kind (its tag, see NativeFrameChannel.dup). */
const DUP_ONE = 0; // one fd: resolves with its number
const DUP_MANY = 1; // dupFileDescriptors: resolves with the list
const DUP_FOLDED = 2; // several dupFileDescriptor calls in one frame: each waiter gets its number

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

/** The fds beside a frame that carried none. */
const NO_FDS: readonly number[] = Object.freeze([]);

/**
 * A send or receive error that means the peer has closed its end: EPIPE on
 * a send, ECONNRESET when it died with our requests unread. Requests that
 * meet it fail with PeerExitedError, like those still waiting for a reply.
 */
function isPeerGone(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EPIPE' || code === 'ECONNRESET';
}

/** dupFileDescriptorSync(fd)'s error when worker.terminate() of this thread ended its wait before `peer` answered. */
function terminatedSyncDup(fd: number, peer: string): ClosedError {
  return new ClosedError(
    `dupFileDescriptorSync(${fd}) failed: this worker thread is being terminated (worker.terminate()) ` +
      `before ${peer} answered; the connection closes with the thread`,
  );
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

/** What a HELLO asks for beyond the command: how the fds of duplications are to travel (none: with the frames). */
export type HelloRequest = Omit<HelloPayload, 'version' | 'command'>;

/**
 * How the fds of a duplication reach the command's side, for one
 * connection: the strategy its transport picks (the serving side's
 * counterpart is serve.ts's FdIntake). WITH_FRAMES, the default, sends them
 * with the DUP frame.
 */
export interface FdDelivery {
  /**
   * False: the fds travel with the DUP frame (SCM_RIGHTS) and are only
   * borrowed, since the kernel (or the send queue) holds its own references
   * once the frame is sent or queued. True: a GETFD frame names them by
   * number and the far side takes them out of this process while the
   * request is pending, so a request names pins of its fds (dups above the
   * floor, given to the connection's HeldCopies with their files) and holds
   * them until its reply: closed once the far side has taken them, else
   * given to `unsettled`. Each pin is closed only while its number still
   * holds it (HeldCopies.closeGiven): one the program closed
   * behind fdbridge's back, whose number may hold a file of its own by
   * then, is let go of unclosed.
   */
  readonly byNumber: boolean;
  /** Why dupFileDescriptorSync cannot be served this way; undefined when it can. */
  readonly syncUnsupported: string | undefined;
  /**
   * The pins of a by-number request that failed, now the strategy's.
   * `answered`: the far side said the request failed (an ERROR reply, sent
   * once its pull had failed and nothing of it was kept), so it will never
   * take them: `held` may close them at once. Otherwise the far side may
   * still read the request and take them, so they must stay open until it
   * no longer can (a number closed too soon could name another file by
   * then); then `held` closes them.
   */
  unsettled(pins: number[], held: HeldCopies, answered: boolean): void;
  /** The peer has ended (how is known): it can take no fd any more. */
  peerEnded(): void;
  /**
   * Resolves once every pin given to `unsettled` so far is handed to its
   * closer; called after the command's process was waited for (or killed).
   */
  released(): Promise<void>;
}

/** The fds travel with the DUP frames over SCM_RIGHTS: nothing is held for the far side. */
export const WITH_FRAMES: FdDelivery = Object.freeze({
  byNumber: false,
  syncUnsupported: undefined,
  // Stryker disable next-line ArrowFunction: never called: with byNumber false, #request closes its pins itself once the frame is sent or queued and hands none to the strategy
  unsettled: (pins: number[], held: HeldCopies) => held.close(pins),
  peerEnded: () => undefined,
  released: () => Promise.resolve(),
});

/**
 * Sends HELLO and waits for READY (or REFUSED / ERROR / death) on a fresh
 * socket. `request` asks for another way for fds to travel than with the
 * frames (the far side may refuse it: UnsupportedError). It waits
 * `waitMs`, by default `timeoutMs`, the caller's option its TimeoutError
 * names (less when connecting took part of it).
 */
export async function handshake(
  socket: UnixSocket,
  command: CommandSpec,
  timeoutMs: number,
  describePeer: () => string,
  request: HelloRequest = {},
  waitMs = timeoutMs,
): Promise<ReadyPayload> {
  const hello: HelloPayload = { version: PROTOCOL_VERSION, command, ...request };
  // The command's side never sends fds: have the kernel refuse them before
  // it can answer (the connection's stats record whether it could).
  refuseFds(socket);
  await socket.send(encodeJson(FrameType.HELLO, 0, hello));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new TimeoutError(`connect: ${describePeer()} did not answer within ${timeoutMs} ms (options.timeoutMs)`)),
      waitMs,
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
      // Whatever frame it is (even a well-formed DUP), fds never come this
      // way. A peer's fds: their close may block, so the closer takes them.
      socket.closeInBackground(m.fds);
      throw new ProtocolError(`connect: ${describePeer()} answered HELLO with ${m.fds.length} fd(s) attached; the command's side never sends fds`);
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
  /** The wire protocol: it sends every request, keeps the one pending table and settles each request from its reply. */
  #channel: FrameChannel;
  /** Set once the connection can no longer be used: every new request rejects with it. */
  #dead: Error | undefined;
  /** The peer is gone and #peerGone is finding out how it ended: requests made meanwhile fail with that. */
  #exit: Promise<PeerExit> | undefined;
  /**
   * Requests made while #exit is pending: not in the channel (never sent),
   * so #failAll settles them with the channel's, whichever comes first of
   * how the peer ended and close().
   */
  readonly #awaitingExit: Array<{ operation: string; reject: (err: Error) => void }> = [];
  #probe: PeerExitProbe;
  #closedByPeer: Promise<void>;
  #onPeerClosed!: () => void;
  #closing = false;
  /** closeTransport rejects every pending request, folded duplications included, as it begins (#failAll). */
  protected override readonly closeRejectsPendingDupsAndCalls = true;
  /** How a duplication's fds reach the command's side. */
  readonly #delivery: FdDelivery;
  /** The errors made from the far side's ERROR replies: a request failed by one was answered (FdDelivery.unsettled). */
  readonly #answered = new WeakSet<object>();
  /**
   * What this connection holds of its callers' files and has to close:
   * pins of requests that failed, queued sends' copies (the socket hands
   * them over as this owner's), fds the command's side sent.
   */
  readonly #held = new HeldCopies();
  /** Pinned fds and their callers, folded into one frame at the end of this tick; null when none. */
  #folding: number[] | null = null;
  #foldWaiters: Waiter[] | null = null;
  /** How long close() waits for the command's side to answer CLOSED (ms; closeWithin sets another). */
  #closeGraceMs = 5000;

  readonly #stats: SocketConnectionStats;
  /** The socket's number (for the error that says it was closed behind fdbridge's back). */
  readonly #socketFd: number;

  constructor(
    socket: UnixSocket,
    transport: 'child' | 'helper' | 'pidfd',
    ready: ReadyPayload,
    probe: PeerExitProbe,
    onCommandClosed?: ConnectOptions['onCommandClosed'],
    delivery: FdDelivery = WITH_FRAMES,
  ) {
    super(onCommandClosed);
    this.#delivery = delivery;
    this.#socket = socket;
    // Off as before (the socket and what it receives close at once), but
    // the copies of its queued sends that fail go to the closer as ours.
    socket.useBackgroundCloser(false, this.#held.owner);
    this.transport = transport;
    this.location = { transport, pid: ready.pid, threadId: ready.threadId, ...(ready.constructorFds ? { constructorFds: ready.constructorFds } : {}),
      ...(ready.constructorFdsOmitted ? { constructorFdsOmitted: ready.constructorFdsOmitted } : {}),
    };
    this.#probe = probe;
    this.#closedByPeer = new Promise((resolve) => (this.#onPeerClosed = resolve));
    // handshake() did this already; doing it again (idempotent) records the
    // outcome, and covers a socket that did not come through handshake().
    this.#stats = { unexpectedFds: 0, protocolErrors: 0, refusesFds: refuseFds(socket) };
    this.#socketFd = socket.fd;
    this.#channel = openFrameChannel(socket, {
      replyError: (operation, fds, frame) => this.#replyError(operation, fds, frame),
      // A queued request met a peer that is gone: fail everything with how it ended.
      onBroken: (err) => void this.#peerGone(err),
    });
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
   * One duplication. With no other duplication in flight it goes out at
   * once, alone, and is settled by the channel in C++: no JS of fdbridge's
   * runs for its reply (closeRejectsPendingDupsAndCalls: close() rejects it through
   * #failAll, not BaseConnection's tracking). Calls made while others are
   * in flight or queued (e.g. `Promise.all(fds.map(dup))`) are folded into one DUP frame
   * sent from a microtask: one message and one reply for up to
   * MAX_FDS_PER_FRAME of them. Each folded fd is pinned (dup'd) when the
   * call is made, because the caller may close or reuse its number before
   * the frame leaves.
   */
  protected dupOne(fd: number): Promise<number> {
    if (this.#dead) return this.#deadRequest('dupFileDescriptor');
    // Stryker disable next-line ConditionalExpression: `#folding === null` forced true changes nothing: calls are folded only behind a duplication in flight (pendingDups > 0) or by number, and they are flushed before anything that can settle a reply synchronously (dupOneSync), so the other two terms decide alone (its other mutants on this line hang the tests: requests go unanswered)
    if (this.#folding === null && !this.#delivery.byNumber && this.#channel.pendingDups === 0) {
      try {
        // Stryker disable BlockStatement: the catch below emptied, a send that failed falls through to the folded path, which sends the same request from a microtask and fails the same way, nothing sent (only a closed fd's EBADF then names the pin's dup instead of sendmsg). Here, not above `} catch`: Stryker reads a mark only as a node's leading comment, and a comment there leads none
        return this.#channel.dup(DUP_ONE, fd, false);
      } catch (err) {
        return this.#unsent('dupFileDescriptor', err);
      }
    }
    // Stryker restore BlockStatement
    let pin: number;
    try {
      // Above the floor: a pin that took the lowest free number could take
      // one the caller has just closed, and a later dup of that number
      // would pin this pin (someone else's file) instead of failing.
      pin = this.#delivery.byNumber ? native.dupHigh(fd, this.#held.owner) : native.dupHigh(fd);
    } catch (err) {
      return this.#unsent('dupFileDescriptor', err);
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
   * (FrameChannel::DupSync). Replies to other requests that arrive meanwhile
   * settle them, and anything else reaches #onMessage, in order, before
   * this returns, exactly as the event loop would have delivered them. On a
   * timeout the request stays pending in the channel: a late DUP_OK
   * releases the duplicate it names, so nothing is left behind on the far
   * side.
   */
  protected dupOneSync(fd: number, timeoutMs: number): number {
    if (this.#dead) throw this.#dead;
    const unsupported = this.#delivery.syncUnsupported;
    if (unsupported !== undefined) throw new UnsupportedError(unsupported);
    this.#flushFolded(); // requests leave in the order they were made
    let r: ReturnType<FrameChannel['dupSync']>;
    try {
      r = this.#channel.dupSync(fd, timeoutMs);
    } catch (err) {
      // Nothing was sent: the send failed at once, or, queued behind a full
      // buffer, during the wait (what the wait held has been handed on).
      // The peer's end fails the connection; any other error this call alone.
      if (err instanceof QueueFullError) throw this.#queueFull('dupFileDescriptorSync', err);
      const lost = this.#socketLostBy(err);
      if (lost) throw lost;
      if (isPeerGone(err) || this.#badFdOnDeadSocket(err)) {
        void this.#peerGone(isPeerGone(err) ? (err as Error) : new EofError());
        throw this.#syncDeadError();
      }
      throw err;
    }
    // A message held during the wait and handed on before dupSync returned
    // may have failed the connection (a RESULT or ERROR whose JSON does not
    // decode, which the channel does not read): then the number or reply,
    // read after it, is from a connection that is over.
    if (typeof r === 'number') {
      if (this.#dead) throw this.#syncDeadError();
      return r;
    }
    const peer = `the ${this.transport} (pid ${this.location.pid})`;
    // No outcome at all: the addon could make none, which happens only
    // once this thread's termination has been asked for (worker.terminate():
    // Node-API then refuses to make the outcome, and node-addon-api drops
    // the error it cannot throw), whatever ended the wait: one that ran
    // out, one woken a moment after the termination was asked for, or one
    // never woken (terminate() from a thread that never loaded fdbridge).
    if (r === undefined) throw terminatedSyncDup(fd, peer);
    switch (r.status) {
      case 'timeout':
      case 'woken': {
        // Still pending in the channel: a late DUP_OK names a duplicate nobody
        // will adopt, released at once; a failure needs nothing released.
        r.late?.then(
          (far) => void this.release([far]).catch(() => undefined),
          () => undefined,
        );
        if (r.status === 'woken') {
          // worker.terminate() of this thread (src/terminate-wake.ts): its
          // JavaScript stops at the next call, and its teardown closes the
          // connection, which fails the request.
          throw terminatedSyncDup(fd, peer);
        }
        throw new TimeoutError(
          `dupFileDescriptorSync(${fd}) failed: ${peer} did not answer within ${timeoutMs} ms; ` +
            'a duplicate it makes later is released when its reply comes',
        );
      }
      case 'gone': {
        // What ended the wait (an end of file, a receive error, a message
        // that fails the connection) has reached #onMessage already, which
        // failed the connection and its pending requests. A wait that read
        // none of that (poll(2) failed; the socket was not reading) fails
        // the connection here with its errno.
        if (this.#dead === undefined) void this.#peerGone(r.errno === 0 ? new EofError() : new SystemError(r.errno, 'poll'));
        throw this.#syncDeadError();
      }
      case 'reply': {
        if (this.#dead) {
          this.#stats.unexpectedFds += r.fdsClosed;
          throw this.#syncDeadError();
        }
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

  /**
   * The error dupFileDescriptorSync throws on a connection that failed
   * during its wait. While how the peer ended is being found out (#exit),
   * the connection's error is a placeholder that names no call: this one is
   * named, as when its send meets EPIPE.
   */
  #syncDeadError(): Error {
    if (this.#exit !== undefined) return new PeerExitedError('dupFileDescriptorSync', this.#exitUnknown());
    return this.brokenError() as Error;
  }

  /** Sends the calls folded in this tick, MAX_FDS_PER_FRAME per frame. */
  readonly #flushFolded = (): void => {
    // Already flushed by a later request that had to go out after these.
    if (this.#folding === null) return;
    const pins = this.#folding;
    const waiters = this.#foldWaiters as Waiter[];
    this.#folding = null;
    this.#foldWaiters = null;
    // Stryker disable next-line EqualityOperator: `<=` adds an empty last chunk when the pins are a multiple of MAX_FDS_PER_FRAME, which the channel refuses (RangeError) before anything is sent, with no caller to settle (its `>=` mutant hangs the tests)
    for (let i = 0; i < pins.length; i += MAX_FDS_PER_FRAME) {
      const chunk = pins.slice(i, i + MAX_FDS_PER_FRAME);
      const callers = waiters.slice(i, i + MAX_FDS_PER_FRAME);
      const sent = this.#request('dupFileDescriptor', DUP_FOLDED, chunk, chunk);
      sent.then(
        (numbers) => {
          for (let k = 0; k < callers.length; k++) (callers[k] as Waiter).resolve(numbers[k] as number);
        },
        (err: Error) => {
          for (const w of callers) w.reject(err);
        },
      );
    }
  };

  protected dupMany(fds: FdList, above: number): Promise<number[]> {
    this.#flushFolded(); // requests leave in the order they were made
    // A dead connection fails the request as such, before any fd is
    // touched (pinning a closed fd would fail with EBADF first).
    if (this.#dead || !this.#delivery.byNumber) return this.#request('dupFileDescriptors', DUP_MANY, fds);
    let pins: number[];
    try {
      pins = dupAll(fds, above, this.#held.owner);
    } catch (err) {
      return this.#unsent('dupFileDescriptors', err);
    }
    return this.#request('dupFileDescriptors', DUP_MANY, pins, pins);
  }

  protected async release(fds: number[]): Promise<void> {
    this.#flushFolded();
    if (this.#dead) return;
    for (let i = 0; i < fds.length; i += MAX_FDS_PER_FRAME) {
      const chunk = fds.slice(i, i + MAX_FDS_PER_FRAME);
      // Past the queue's limit too: it gives back what accepted requests
      // took (a batch that failed part-way), so it must not fail for the
      // same full queue that failed the batch.
      await this.#call('release', encodeFdList(FrameType.RELEASE, 0, chunk), true);
    }
  }

  protected callRemote(method: string, callJson: string): Promise<unknown> {
    this.#flushFolded(); // a call made after some duplications reaches the command after them
    // Within MAX_CALL_JSON_BYTES (BaseConnection.call): the frame fits.
    const frame = encodeJsonText(FrameType.CALL, 0, callJson);
    return this.#call(`${method}()`, frame, false).then(this.#resultValue);
  }

  /**
   * A duplication of `fds` through the channel: borrowed, or `pins` (the
   * same list), our pins, which this closes once the far side no longer
   * needs them (see FdDelivery.byNumber).
   */
  #request(operation: string, tag: typeof DUP_MANY | typeof DUP_FOLDED, fds: FdList, pins?: number[]): Promise<number[]> {
    const byNumber = this.#delivery.byNumber;
    // A pin that is not sent may be its file's last reference (the caller
    // may have closed its own): the closer takes it, never this thread.
    if (this.#dead) {
      if (pins) this.#dropPins(pins);
      return this.#deadRequest(operation);
    }
    let sent: Promise<number[]>;
    try {
      sent = this.#channel.dup(tag, fdList(fds), byNumber);
    } catch (err) {
      if (pins) this.#dropPins(pins);
      return this.#unsent(operation, err);
    }
    if (!pins) return sent;
    if (!byNumber) {
      // Sent or queued: the kernel (or the send queue) holds its own references.
      closeOwnFds(pins);
      return sent;
    }
    return sent.then(
      (numbers) => {
        // Pulled: the far side holds its own copies. Each pin is closed on
        // the closer only while its number still holds it (closeGiven): it
        // stays open and registered as ours until then, so no fd of
        // fdbridge's can take its number meanwhile.
        this.#held.closeGiven(pins);
        return numbers;
      },
      (err: unknown) => {
        this.#delivery.unsettled(pins, this.#held, this.#answered.has(err as object));
        throw err;
      },
    );
  }

  /**
   * Pins of a request that was never sent, to the closer: by number, each
   * only while its number still holds it (closeGiven).
   */
  #dropPins(pins: number[]): void {
    // Stryker disable next-line ConditionalExpression: forced false, close() of pins made as given copies checks each against the file recorded as it was made as well (FdCloseInBackground reads a registered copy's recorded file), only without closeGiven's owner check, which no pin of this connection fails
    if (this.#delivery.byNumber) this.#held.closeGiven(pins);
    else this.#held.close(pins);
  }

  /** A CALL or RELEASE frame through the channel: resolves with its RESULT frame. */
  #call(operation: string, frame: Buffer, exempt: boolean): Promise<Buffer> {
    if (this.#dead) return this.#deadRequest(operation);
    try {
      return this.#channel.call(frame, operation, exempt);
    } catch (err) {
      return this.#unsent(operation, err);
    }
  }

  /**
   * A request made once the connection is dead. While the peer's end is
   * being found out it waits to fail with that, or with close(), whichever
   * comes first (#failAll).
   */
  #deadRequest(operation: string): Promise<never> {
    if (!this.#exit) return Promise.reject(this.#dead as Error);
    return new Promise<never>((_, reject) => this.#awaitingExit.push({ operation, reject }));
  }

  /**
   * Settles every request of this connection, sent, folded and not yet
   * sent (never sent then: their pins go to the closer), or waiting for how
   * the peer ended, with `error(operation)`.
   */
  #failAll(error: (operation: string) => Error): void {
    this.#channel.failAll(error);
    if (this.#folding !== null) {
      const waiters = this.#foldWaiters as Waiter[];
      this.#dropPins(this.#folding);
      this.#folding = null;
      this.#foldWaiters = null;
      for (const w of waiters) w.reject(error('dupFileDescriptor'));
    }
    for (const waiter of this.#awaitingExit.splice(0)) waiter.reject(error(waiter.operation));
  }

  /**
   * A request the channel could not send (nothing of it was sent): a peer
   * that is gone fails it like every pending request; a full queue says so
   * in the caller's terms.
   */
  #unsent(operation: string, err: unknown): Promise<never> {
    const lost = this.#socketLostBy(err);
    if (lost) return Promise.reject(lost);
    if (isPeerGone(err) || this.#badFdOnDeadSocket(err)) {
      void this.#peerGone(isPeerGone(err) ? (err as Error) : new EofError());
      return this.#deadRequest(operation);
    }
    return Promise.reject(err instanceof QueueFullError ? this.#queueFull(operation, err) : err);
  }

  /**
   * True for a caller's closed fd (EBADF) on a socket whose peer has hung
   * up, which the event loop has not read yet. The kernel checks the fds of
   * a sendmsg before the peer: the request fails as made on a dead
   * connection, as it would with an open fd (EPIPE), and as every request
   * made after the hangup was read does.
   */
  #badFdOnDeadSocket(err: unknown): boolean {
    return (err as NodeJS.ErrnoException | undefined)?.code === 'EBADF' && (this.#socket.hungUp() || this.commandProcessExited());
  }

  /**
   * True when `err` (EBADF or ENOTSOCK from the socket) is this
   * connection's socket found closed by someone other than fdbridge (the
   * program closed a number it does not own), as the socket says
   * (lost(): it found the number closed, holding another file, or taken
   * by a new fd of ours, and has let go of it without closing it). The
   * connection fails then, its pending and later requests with a
   * ClosedError that says so, which this returns (the error it failed with
   * already, if it was failing).
   */
  #socketLostBy(err: unknown): Error | undefined {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (code !== 'EBADF' && code !== 'ENOTSOCK') return undefined;
    if (!this.#socket.lost()) return undefined;
    return this.#failLost();
  }

  /**
   * The command's process has exited (a transport that spawned it saw its
   * exit status): it does so once its end of the socket reads end of file,
   * which is also what a close of our socket behind our back gives it. Our
   * socket's end of file never comes then (its file, and its epoll entry,
   * went with that close), so the socket is asked here (lost(), an
   * fstat): one that is no longer ours fails the connection, its requests
   * still waiting for replies included.
   */
  protected commandProcessEnded(): void {
    if (this.#dead || this.#closing || !this.#socket.lost()) return;
    this.#failLost();
  }

  /** Fails the connection for its socket, closed behind fdbridge's back; returns the error it fails with. */
  #failLost(): Error | undefined {
    const who = this.transport === 'helper' ? 'helper daemon' : `${this.transport} process`;
    this.#fail(closedBehindBackError(this.transport, 'its socket', this.#socketFd, `nothing more reaches the ${who} (pid ${this.location.pid})`));
    return this.#dead;
  }

  /**
   * True once the command's process is known to have exited (a transport
   * that spawned it saw its exit status), which may come before its end of
   * the socket shows as hung up here.
   */
  protected commandProcessExited(): boolean {
    return false;
  }

  /** The value of a call's RESULT frame; a malformed one breaks the connection. */
  readonly #resultValue = (frame: Buffer): unknown => {
    let decoded: Frame;
    try {
      decoded = decodeFrame(frame, NO_FDS);
    } catch (err) {
      this.#violation(err as Error);
      throw err;
    }
    return (decoded as { value: unknown }).value;
  };

  /**
   * The error that settles a request its reply fails: the command's ERROR,
   * or a reply of the wrong kind or count, after which nothing on this
   * connection can be trusted.
   */
  #replyError(operation: string, fds: number, data: Buffer): Error {
    let frame: Frame;
    try {
      frame = decodeFrame(data, NO_FDS);
    } catch (err) {
      this.#violation(err as Error);
      return err as Error;
    }
    if (frame.type === FrameType.ERROR) {
      const err = remoteFailure(operation.replace(/\(\)$/, ''), frame.error, fds > 0);
      this.#answered.add(err);
      return err;
    }
    if (fds > 0) {
      this.#violation(new ProtocolError(`the ${this.transport} answered a duplication with a wrong reply`));
      return new ProtocolError(`${operation}: the reply does not list ${fds} fd(s)`);
    }
    // DUP_OK to a call: the two sides disagree about what was asked.
    this.#violation(new ProtocolError(`the ${this.transport} answered a call with fd numbers`));
    return new ProtocolError(`${operation}: the reply carries fd numbers`);
  }

  /** The request `operation` met a full send queue: say so in the caller's terms. */
  #queueFull(operation: string, err: QueueFullError): QueueFullError {
    return queueFullError(operation, `the ${this.transport} (pid ${this.location.pid})`, err, err);
  }

  /** Everything the channel did not take: no reply to a pending request comes this way. */
  #onMessage(err: Error | null, data?: Buffer, fds?: number[]): void {
    if (this.#closing) {
      // Replies to requests that close() already rejected are dropped (the
      // command's host sweeps whatever fds they concerned); CLOSED or EOF
      // ends the wait.
      this.#stats.unexpectedFds += this.#closeReceived(fds);
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
      } else if (this.#socketLostBy(err) === undefined) {
        void this.#peerGone(err);
      }
      return;
    }
    const buf = data as Buffer;
    if ((fds as number[]).length > 0) {
      // The command's side never sends fds, whatever the frame (even a
      // well-formed DUP): close them and end the connection.
      const n = this.#closeReceived(fds);
      this.#stats.unexpectedFds += n;
      this.#violation(
        new ProtocolError(`the ${this.transport} sent ${n} fd(s) with a frame of type ${buf.length > 0 ? buf[0] : 'none'}; its side never sends fds`),
      );
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(buf, NO_FDS);
    } catch (e) {
      this.#violation(e as Error);
      return;
    }
    const quota = frame.type === FrameType.REFUSED ? quotaOf(frame.message) : undefined;
    if (quota !== undefined) {
      // The daemon ends this connection for one of its limits (idle too
      // long): every request, pending or made later, fails with that quota.
      // A REFUSED naming none is not something a daemon sends after READY.
      const said = `${(frame as { message: string }).message} (the ${this.transport === 'helper' ? 'helper daemon' : `${this.transport} process`} (pid ${this.location.pid}) ended this connection)`;
      const refusal = new QuotaExceededError(quota, said);
      // It says why the connection ends, over a peer's end still being
      // found out (#peerGone: a request sent after the daemon stopped
      // reading met EPIPE before its REFUSED was read): the requests waiting
      // for that, and those made later, fail with the quota too.
      if (this.#exit !== undefined) this.#dead = refusal;
      this.#fail(refusal);
      return;
    }
    this.#violation(new ProtocolError(`the ${this.transport} sent a reply (type ${frame.type}, id ${frame.id}) to no request`));
  }

  /**
   * fds the command's side sent (it never should): they are another
   * process's files, whose last close can block, so the closer takes them.
   * Returns how many.
   */
  #closeReceived(fds: number[] | undefined): number {
    if (fds === undefined) return 0;
    this.#held.close(fds);
    return fds.length;
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
    // Stryker disable next-line ConditionalExpression,BlockStatement: while closing, close() has failed every request with ClosedError and BaseConnection refuses new ones; probing how the peer ended (it waits for the exit, as the pins of a failed pidfd request do) changes no outcome
    if (this.#closing) {
      // Stryker disable next-line StringLiteral: the same; this error settles nothing (close() settled every request already)
      this.#fail(this.closedError('the request'));
      return;
    }
    // Mark dead at once so no new request is sent into a dead socket.
    const probing = new PeerExitedError('request', this.#exitUnknown());
    this.#dead = probing;
    this.#exit = this.#howPeerEnded(cause);
    const exit = await this.#exit;
    this.#exit = undefined;
    this.#delivery.peerEnded();
    if (this.#dead === probing) {
      this.#dead = new PeerExitedError('request', exit);
      this.#failAll((operation) => new PeerExitedError(operation, exit));
    } else {
      // A REFUSED read meanwhile said why (see #onMessage): that stands.
      const said = this.#dead;
      this.#failAll(() => said);
    }
    this.#socket.close();
  }

  /** The peer's end while nothing is known of it (not yet, or the probe failed): no exit code, no signal. */
  #exitUnknown(): PeerExit {
    return { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null };
  }

  /** How the peer ended, as far as the transport's probe can tell. */
  async #howPeerEnded(cause: Error): Promise<PeerExit> {
    let exit: PeerExit;
    try {
      exit = await this.#probe();
    } catch {
      exit = this.#exitUnknown();
    }
    // EOF, or ECONNRESET when it died with our requests unread: both mean the
    // peer is gone. Anything else is worth naming.
    // Not equivalent, but no test can make a socket fail otherwise than with
    // end of file, EPIPE or ECONNRESET: the detail of a peer that broke the
    // connection some other way is not measured.
    // Stryker disable next-line ConditionalExpression: see above
    const gone = cause.name === 'EofError' || isPeerGone(cause);
    // Stryker disable next-line ConditionalExpression,EqualityOperator,LogicalOperator,BlockStatement: see above (a detail beside an exit code or a signal is never shown)
    if (!gone && exit.exitCode === null && exit.signal === null) {
      // Stryker disable next-line ObjectLiteral,StringLiteral: see above
      exit = { ...exit, detail: `broke the connection (${cause.message})` };
    }
    return exit;
  }

  /** Fails the connection: every pending and later request rejects with `err`. */
  #fail(err: Error): void {
    if (!this.#dead) this.#dead = err;
    this.#failAll(() => err);
    this.#socket.close();
    this.#onPeerClosed();
  }

  /**
   * close(), waiting at most `graceMs` (instead of 5 s) for the command's
   * side to answer CLOSED before this side hangs up: for a caller with a
   * deadline of its own (helperStatus). A close under way already goes on
   * as it is.
   */
  closeWithin(graceMs: number): Promise<void> {
    if (!this.closed) this.#closeGraceMs = graceMs;
    return this.close();
  }

  /**
   * Graceful close: CLOSE asks the command's side to run the command's
   * close() and close the fds it did not adopt; it answers CLOSED (we wait
   * at most #closeGraceMs, or until the peer is gone). The onCommandClosed
   * hook runs then, while the far side still waits for us to hang up.
   */
  protected async closeTransport(): Promise<void> {
    const graceMs = this.#closeGraceMs;
    this.#closing = true;
    const err = this.closedError('the request');
    this.#failAll((operation) => this.closeRejectedError(operation));
    // Stryker disable next-line ConditionalExpression: a dead connection's socket is closed or its peer gone, so writing CLOSE throws (EBADF, EPIPE) into the catch below, which skips the wait and the hook just as this does
    if (!this.#dead) {
      this.#dead = err;
      try {
        // CLOSE goes out behind whatever is queued, even past the queue's
        // limit: one more small message, and the only way to close politely.
        this.#socket.write(encodeEmpty(FrameType.CLOSE, 0), undefined, undefined, undefined, EXEMPT);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.#closedByPeer, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
        await this.commandClosed();
      } catch {
        // the socket is already broken: nothing to wait for
      }
    }
    this.#socket.close();
    await this.peerReleased();
    // What this connection held of its callers' files is closed, or its
    // close is underway (closesSettled), before close() resolves: a leak
    // check made then sees a clean table.
    this.#held.remember(...this.#socket.backgroundCloseTickets());
    await this.#delivery.released();
    await this.#held.settled();
  }

  /**
   * Waits for the command's side to let go of this process (a transport
   * that spawned it waits for its exit), once the socket is closed.
   */
  protected async peerReleased(): Promise<void> {}
}
