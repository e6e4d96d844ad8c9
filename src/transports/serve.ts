/**
 * The command's side of a socket connection (child, pidfd and helper
 * transports): reads frames, hosts one command, answers each request. Runs
 * until the client closes its end (or breaks the protocol); then the
 * command's close() runs and every fd it was given and did not adopt is
 * closed.
 *
 * One ServedSession per connection: `#dispatch` routes each decoded frame to
 * a handler (`#hello` for the handshake, then `#duplicate`, `#release`,
 * `#call`, `#closeCommand`); `#truncated` answers a request whose fds did not
 * fit. How a duplication's fds get into this process is the connection's
 * FdIntake, which the HELLO picks: received with a DUP frame over SCM_RIGHTS
 * (socketIntake, below; the native layer answers most DUPs without calling
 * JS), or pulled by number with pidfd_getfd(2) (pidfd-intake.ts).
 */
import { types } from 'node:util';

import { CommandHost, type CommandSpec } from '../command';
import { builtinCommand } from '../commands/registry';
import { describeError, FdBridgeError, isError, ProtocolError, QueueFullError, QuotaExceededError, shown, TruncatedError, UnknownCommandError, type QuotaName } from '../errors';
import { failpointFromEnv, type Failpoint } from '../failpoint';
import { ChannelLedger, openFrameChannel, type FrameChannel } from '../frame-channel';
import { closeOwnFds } from '../fd';
import { resultToJson } from '../json-value';
import { native, type NativeFdBudget } from '../native';
import {
  decodeFrame,
  encodeEmpty,
  encodeError,
  encodeFdList,
  encodeJsonText,
  encodeReady,
  encodeRefused,
  encodeResult,
  FrameType,
  PROTOCOL_VERSION,
  type Frame,
  type HelloPayload,
} from '../protocol';
import { fdsOpenedBy, type ConstructorFd } from '../runtime-fds';
import type { UnixSocket } from '../socket';
import type { TransportName } from './index';
import { openPidfdIntake } from './pidfd-intake';
import { acceptFds } from './refuse-fds';

/**
 * The reason a connection ends for `err`, which setting up its command
 * threw: `err` itself when it is an Error and no Proxy, else an Error
 * saying what it was (shown). A thrown null would read as a normal end,
 * and a Proxy's traps would run (and may throw) wherever the reason is
 * looked at.
 */
function endReason(err: unknown): Error {
  return isError(err) && !types.isProxy(err) ? err : new Error(`the command's setup threw ${shown(err)}`);
}

export interface ServeStats {
  /** fds that arrived where none belonged (closed at once). */
  unexpectedFds: number;
  /** Frames rejected as malformed or out of place (each ends the connection). */
  protocolErrors: number;
  /**
   * True once the socket refuses fds in the kernel (SO_PASSRIGHTS=0, Linux
   * 6.16+), which a connection whose fds never come over the socket (pidfd
   * pulls) asks for; false before that, otherwise, or on older kernels (then
   * an fd that arrives anyway is closed and counted in unexpectedFds).
   */
  refusesFds: boolean;
}

/**
 * Bytes of replies queued (beyond what the kernel holds) at which the
 * command's side stops reading requests until the client catches up: about
 * 200 small replies, or one large one.
 */
export const SERVE_PAUSE_READING_AT = 64 * 1024;

/**
 * Calls a connection may have running in the command at once; further
 * requests wait in the kernel (then in the client's bounded queue) until one
 * settles. It bounds the replies that can fall due together: 128 of the
 * largest frame (MAX_FRAME_BYTES) are 24 MiB, so with the reading pause
 * (SERVE_PAUSE_READING_AT plus the one reply that crosses it) the reply
 * queue stays below the default send queue limit (32 MiB): under default
 * limits a client is never cut off, however slowly it reads, and a smaller
 * limit cuts off only a client that lets replies pile past it.
 */
export const MAX_CALLS_IN_FLIGHT = 128;

/** A reclaim scan that refunded nothing and took this long (ms) or more holds back the next one of its scope (ReclaimPacing). */
export const RECLAIM_PACED_FROM_MS = 1;
/** ...for this many times its duration after it ended. */
export const RECLAIM_PACE = 10;

/**
 * Paces the reclaim scans of one scope: a connection's adopted fds (its
 * 'fds' limit), a uid's connections' ('uidFds') or every connection's
 * ('totalFds'). A scan is one statx per adopted fd in the scope, run
 * before that limit refuses a DUP. After one that refunded nothing and
 * took RECLAIM_PACED_FROM_MS or more, the scope's next scan waits until
 * RECLAIM_PACE times that duration has passed since it ended, the
 * refusals meanwhile standing as they are: however many DUPs are refused,
 * scans take about a tenth of the event loop at most. Scans of a few
 * hundred fds take less, and always run.
 */
export class ReclaimPacing {
  /** performance.now() before which no scan runs. */
  #heldUntil = 0;

  /** Runs `scan` (which refunds the scope's adopted fds closed another way, returning how many) unless held back; returns what it refunded (0 when held back). */
  run(scan: () => number): number {
    const start = performance.now();
    if (start < this.#heldUntil) return 0;
    const refunded = scan();
    const end = performance.now();
    const took = end - start;
    this.#heldUntil = refunded === 0 && took >= RECLAIM_PACED_FROM_MS ? end + RECLAIM_PACE * took : 0;
    return refunded;
  }
}

/** Per-client limits on what one connection may hold in this process (a helper daemon's quotas). */
export interface ServeLimits {
  /**
   * fds given to the command, adopted or not, and not yet closed through
   * closeClientFds, at most. A DUP past it is refused (QuotaExceededError 'fds'),
   * after the connection's adopted fds closed another way are refunded
   * (reclaimClosedAdopted, paced by ReclaimPacing: a refusal right after a
   * long scan that found nothing may stand for up to 10× that scan's time).
   */
  maxFds: number;
  /** Calls being served at once, at most; more are refused ('calls'). */
  maxCallsInFlight: number;
  /**
   * Reply bytes waiting for the client to read them (the send queue's
   * limit): a reply that does not fit disconnects the client ('queuedBytes').
   */
  maxQueuedBytes: number;
  /**
   * fds held across connections (a daemon's per-uid and total limits): the
   * ledger of the command's fds, and those it adopted until it closes them
   * (as maxFds counts them), is charged to `budget`, and `refusal(n)` names
   * the quota that `n` more fds would break, if any.
   */
  shared?: {
    budget: NativeFdBudget;
    refusal(n: number): QuotaExceededError | undefined;
    /**
     * Before `quota` ('uidFds' or 'totalFds') refuses a DUP: refunds the
     * fds that the commands of the connections it counts adopted and then
     * closed another way than closeClientFds (ServedConnection.reclaimClosedAdopted);
     * returns how many. Paced per scope (the uid, the daemon) by a
     * ReclaimPacing: it may refund nothing without looking.
     */
    reclaim?(quota: QuotaName): number;
  };
  /**
   * Counts bytes of log lines the command keeps until they are written
   * against a daemon's budget for the client's uid (CommandContext.holdLogBytes):
   * throws QuotaExceededError past it; returns the function that gives them back.
   */
  holdLogBytes?: (bytes: number) => () => void;
}

export interface ServeOptions {
  transport: TransportName;
  /** Quotas; none by default (a child serves the one parent that started it). */
  limits?: ServeLimits;
  /** Called for each request or connection a limit turned away. */
  onQuota?: (quota: QuotaName) => void;
  /**
   * Close the fds the client sent on a background thread (they come from
   * another process, and a close can block: a TCP socket with SO_LINGER and
   * unsent data). A daemon serving many clients sets it.
   */
  closeInBackground?: boolean;
  /**
   * With closeInBackground: whose closes they are for the background closer
   * (native.closeInBackground's owner): one owner's closes that block hold
   * back only that owner's. A daemon names the client's uid plus one.
   */
  closeOwner?: number;
  /**
   * The code to run for the command a HELLO asks for; throws to refuse it.
   * Without it the HELLO's module is loaded as given, or a built-in command
   * by name (a child serves the parent that started it, whose code it is
   * anyway); a helper daemon resolves names against the commands it was
   * started with.
   */
  resolveCommand?: (requested: CommandSpec) => CommandSpec;
  /**
   * Why an fd a client sends must not be kept (undefined: kept). When given,
   * every DUP is served in JS so that each fd is looked at; a DUP carrying
   * one refused fd is refused whole (ERR_FDBRIDGE_FD_REFUSED), its fds closed.
   */
  refuseFd?: (fd: number) => string | undefined;
  /**
   * A process that serves this one command (child, pidfd): its READY names
   * the fds the command's construction (its module's load included) opened
   * and left open (fdsOpenedBy), so that the client's leak check, whose
   * baseline of this process is read once the connection is up, charges
   * them to the constructor. A shared daemon never sets it: its other
   * clients' commands run beside the constructor, and the names of the
   * files it holds are not the client's to read.
   */
  reportConstructorFds?: boolean;
  /**
   * A shared daemon's: its ERROR replies say what failed (the error's name,
   * code, syscall and message), never where (a stack names the daemon's
   * install paths and internals, and the client may be another user). Each
   * error the daemon's own code or its command threw goes here instead,
   * stack and all (the daemon's log), with what failed (`HELLO`,
   * `call echo()`). Without it (a child or pidfd process, which serves the
   * one client that started it) the stack goes with the reply.
   */
  reportError?: (what: string, err: unknown) => void;
  /**
   * With closeInBackground: fds the client sent that no quota counted went
   * to the background closer, as the batches `tickets` (a refused DUP's,
   * discarded ones, those of a truncated message). They hold slots of this
   * process's fd table until closed, which may be long (a close that
   * blocks): a daemon counts them against the client's uid and stops
   * reading its connections while they put it past its limits
   * (ServedConnection.holdReading).
   */
  onUnownedCloses?: (tickets: readonly number[]) => void;
  /** Called once, after the command is closed and the socket with it. */
  onEnd?: (reason: Error | null, stats: ServeStats) => void;
}

/**
 * FDBRIDGE_FAILPOINT (src/failpoint.ts), read once here: a testing aid that
 * SIGKILLs this process at a chosen step. The after-receive point is a hook
 * inside the frame channel, so that a fault test runs the path users run;
 * unset, the channel has no hook and the JS paths check
 * `failpoint !== undefined` once per request.
 */
const failpointOrError = failpointFromEnv();
const failpoint: Failpoint | undefined = failpointOrError instanceof Error ? undefined : failpointOrError;

/**
 * Throws if FDBRIDGE_FAILPOINT is set to something that does not parse: a
 * process about to serve must not run a fault test without its fault.
 */
export function checkFailpoint(): void {
  if (failpointOrError instanceof Error) throw failpointOrError;
}

/**
 * How the fds of a duplication request get into the command's process, for
 * one connection: the strategy its HELLO picks.
 */
export interface FdIntake {
  /** The transport the command is told it runs on (CommandContext.transport). */
  readonly transport: TransportName;
  /** The request frame that hands fds over; the other kind ends the connection. */
  readonly requestType: typeof FrameType.DUP | typeof FrameType.GETFD;
  /** Why a request of the other kind ends the connection. */
  readonly wrongRequest: string;
  /** What a quota refusal adds about the request's fds (closed here, or never taken). */
  readonly refusalNote: string;
  /**
   * True when the kernel refuses fds sent to the socket (SO_PASSRIGHTS=0,
   * Linux 6.16+), which an intake that never takes fds from the socket asks for.
   */
  readonly refusesFds: boolean;
  /**
   * The fds of one request, now owned here (the caller puts them in the
   * command's ledger): the ones that arrived with a DUP frame, or those the
   * client's numbers in a GETFD frame name, pulled, each checked to be the
   * file the frame names beside it. Throws, having taken nothing, when they
   * cannot be had; the request then fails alone.
   */
  take(frame: DuplicationFrame): number[];
  /** The command is ready: requests may be served. */
  start(channel: FrameChannel, maxFds: number | undefined): void;
  /** The connection has ended: releases what the strategy holds. Idempotent. */
  close(): void;
}

/**
 * The fds arrive with the DUP frame itself (SCM_RIGHTS, received
 * close-on-exec). Once the command is ready the frame channel answers DUPs
 * in C++ (serve), so a round trip never enters JS on this side.
 */
function socketIntake(transport: TransportName, inspected: boolean): FdIntake {
  return {
    transport,
    requestType: FrameType.DUP,
    wrongRequest: 'GETFD on a connection that did not ask for pidfd pulls',
    refusalNote: 'release some first',
    refusesFds: false,
    take: (frame) => [...frame.fds],
    start: (channel, maxFds) => {
      // Not when each fd is to be looked at first (ServeOptions.refuseFd).
      if (!inspected) channel.serve(true, maxFds);
    },
    close: () => undefined,
  };
}

/** A HELLO's module as given, or a built-in command by name. */
function moduleOrBuiltin(requested: CommandSpec): CommandSpec {
  if (requested.module !== undefined) return requested;
  const builtin = requested.name !== undefined ? builtinCommand(requested.name) : undefined;
  if (builtin === undefined) throw new UnknownCommandError(`no command module given, and ${JSON.stringify(requested.name)} is not a built-in command`);
  return requested.args !== undefined ? { ...builtin, args: requested.args } : builtin;
}

/** A connection being served. */
export interface ServedConnection {
  /**
   * Ends it as if the client had closed (or with `reason`): the command is
   * closed, then the socket. A QuotaExceededError `reason` is said to the
   * client as a REFUSED after the replies queued before it; while that
   * waits for the client to read them, the socket stays open (and
   * activity() counts its bytes). Called again then (a supervisor that saw
   * the client stop reading), it waits no more: what is unsent is dropped.
   */
  end(reason?: Error): void;
  /** What a supervisor needs to time it out (see HelperDaemon). */
  activity(): ServedActivity;
  /**
   * While on, none of the client's requests are read once its HELLO is
   * answered: they wait in the kernel, the fds in them charged to the
   * sender (a daemon holding back a uid whose fds put it past its limits).
   * A client that hangs up is still seen and ended.
   */
  holdReading(on: boolean): void;
  /**
   * Refunds the fds its command adopted and closed another way than
   * closeClientFds (fs.closeSync, say): the daemon is not told of such a
   * close, and the number goes back to the kernel, where another
   * connection's fds (or any file the process opens) usually take it. Found
   * by file identity (their numbers free, or another file's); returns how
   * many. One statx per adopted fd still charged: for a quota about to
   * refuse a DUP.
   */
  reclaimClosedAdopted(): number;
}

export interface ServedActivity {
  /** The HELLO was answered (the command is set up). */
  ready: boolean;
  /** It is ending: end() was called, and its command may still be closing. */
  ended: boolean;
  /**
   * Date.now() of the last request that reached JS, or of the last call that
   * settled (its reply went out then: a client whose only call ran long has
   * just been answered, not idle all that time).
   */
  lastActiveAt: number;
  /** DUP requests answered in C++ so far (they never reach JS). */
  servedDuplications: number;
  /** Requests being served. */
  inFlight: number;
  /** fds given to the command, and with limits those it adopted and has not closed through closeClientFds. */
  fdsHeld: number;
  /** Reply bytes waiting for the client to read them. */
  queuedBytes: number;
  /** Replies that waited in the send queue and have since left it for the client: it moves while the client reads. */
  sentFromQueue: number;
}

/**
 * Runs `then` once the background closer has closed every fd of the batches
 * `tickets` (closeInBackground tickets): at once when it has, else when a
 * closer thread signals the event loop. A close that blocks (a TCP socket
 * lingering) delays only the `then` that waits for it, never the event loop.
 * The wait does not keep the loop alive: what waits is a reply, or the end
 * of a connection, and the connection's socket keeps the loop alive while
 * there is anyone to answer; once it is closed (a daemon stopped, SIGTERM),
 * a close blocked for the linger time a client chose must not keep the
 * process alive for it (its exit ends such a close at once: the kernel does
 * not linger for an exiting process).
 */
function afterBackgroundCloses(tickets: readonly number[], then: () => void): void {
  if (tickets.every((t) => native.backgroundCloseDone(t))) then();
  else native.afterBackgroundCloses(tickets, then, false);
}

/** Serves one client on `socket` (which it owns and closes). */
export function serveConnection(socket: UnixSocket, options: ServeOptions): ServedConnection {
  checkFailpoint();
  return new ServedSession(socket, options);
}

export type DuplicationFrame = Extract<Frame, { type: typeof FrameType.DUP | typeof FrameType.GETFD }>;

class ServedSession implements ServedConnection {
  readonly #socket: UnixSocket;
  /**
   * The wire protocol's fast path: DUP requests answered in C++ into the
   * ledger of the command's fds (closed with the socket).
   */
  readonly #channel: FrameChannel;
  /** The channel's ledger: the fds given to the command, as its CommandHost and a RELEASE see them. */
  readonly #ledger: ChannelLedger;
  readonly #options: ServeOptions;
  readonly #limits: ServeLimits | undefined;
  readonly #stats: ServeStats = { unexpectedFds: 0, protocolErrors: 0, refusesFds: false };
  /** Set by the HELLO; until then only a HELLO is accepted. */
  #host: CommandHost | undefined;
  #intake: FdIntake | undefined;
  #ended = false;
  /** The client's CLOSE arrived: nothing more is served. */
  #closing = false;
  #lastActiveAt = Date.now();
  /**
   * Calls the command has not answered yet. Their replies come later, all
   * at once maybe, whatever the reply queue holds: at MAX_CALLS_IN_FLIGHT no
   * request is read until one settles, so that such a burst stays bounded.
   */
  #callsInFlight = 0;
  /** holdReading's: no request is read once the HELLO is answered. */
  #held = false;
  /**
   * Set while the end's REFUSED waits in the send queue behind replies the
   * client has not read yet: called once it has left (or failed, or end()
   * was called again); the socket is closed after that.
   */
  #refusedLeft: (() => void) | undefined;
  /** The scans of this connection's adopted fds before its 'fds' limit refuses a DUP. */
  readonly #reclaimPacing = new ReclaimPacing();

  constructor(socket: UnixSocket, options: ServeOptions) {
    this.#socket = socket;
    this.#options = options;
    this.#limits = options.limits;
    const limits = this.#limits;
    this.#channel = openFrameChannel(socket, failpoint !== undefined ? { afterReceive: () => failpoint.pass('after-receive') } : {});
    this.#ledger = new ChannelLedger(this.#channel);
    if (options.closeInBackground) {
      // The command's fds come from another process, and so may what is
      // still unread in the socket when it closes: either close may block.
      socket.useBackgroundCloser(true, options.closeOwner);
      this.#channel.closeGivenInBackground(true);
    }
    if (limits?.shared) this.#channel.chargeTo(limits.shared.budget);
    // An fd the command adopts is still in this process, held for the
    // client, until the command closes it (closeClientFds; what it keeps
    // past its close() is its own): it counts against the limits until
    // then, so that a client cannot have the command adopt fd after fd past
    // them, to this process's RLIMIT_NOFILE.
    if (limits) this.#channel.keepAdoptedCharged(true);
    // Every request read makes a reply: while replies back up (the client
    // reads slowly), stop reading requests, so that they wait in the kernel
    // and then in the client's own bounded queue instead of here.
    socket.setSendQueueLimits(
      limits ? { pauseReadingAt: Math.min(SERVE_PAUSE_READING_AT, limits.maxQueuedBytes), limit: limits.maxQueuedBytes } : { pauseReadingAt: SERVE_PAUSE_READING_AT },
    );
    // Paused (replies backed up, or MAX_CALLS_IN_FLIGHT), it still learns at
    // once of a client that hangs up, and ends: nobody is left to answer.
    socket.watchHangup(true);
    socket.setMessageHandler(this.#onMessage);
  }

  end(reason?: Error): void {
    if (this.#ended) this.#refusedDone('both');
    else this.#end(reason ?? null);
  }

  holdReading(on: boolean): void {
    this.#held = on;
    this.#updateReading();
  }

  /**
   * Reads requests unless it has ended, is held (once READY: the HELLO is
   * always read, and brings no fds), or has MAX_CALLS_IN_FLIGHT calls
   * running. The socket stops at once: not one more message of this
   * client's is read in the same turn.
   */
  #updateReading(): void {
    if (this.#ended || (this.#held && this.#host !== undefined) || this.#callsInFlight >= MAX_CALLS_IN_FLIGHT) this.#socket.pause();
    else this.#socket.resume();
  }

  reclaimClosedAdopted(): number {
    return this.#channel.reclaimClosedAdopted();
  }

  activity(): ServedActivity {
    return {
      ready: this.#host !== undefined,
      ended: this.#ended,
      lastActiveAt: this.#lastActiveAt,
      servedDuplications: this.#channel.served,
      inFlight: this.#callsInFlight,
      fdsHeld: this.#host ? this.#channel.heldCount : 0,
      queuedBytes: this.#socket.queuedSendBytes,
      sentFromQueue: this.#socket.sentFromQueue,
    };
  }

  /** Every message the socket reads (or its error) comes here first. */
  readonly #onMessage = (err: Error | null, data?: Buffer, fds?: number[]): void => {
    if (this.#ended) {
      this.#stats.unexpectedFds += this.#discard(fds);
      return;
    }
    this.#lastActiveAt = Date.now();
    if (err) {
      if (err instanceof TruncatedError) this.#truncated(err);
      // EOF is the normal end; so is ECONNRESET after CLOSE (the client hung up with replies unread).
      else this.#end(err.name === 'EofError' || this.#clientHungUpAfterClose(err) ? null : err);
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(data as Buffer, fds as number[]);
    } catch (e) {
      this.#violation(e as Error, fds);
      return;
    }
    this.#dispatch(frame, fds as number[]);
  };

  /**
   * Routes one decoded frame to its handler. `fds` are the ones that arrived
   * with it (only a DUP frame decodes with fds); every violation closes
   * them, since nothing else will.
   */
  #dispatch(frame: Frame, fds: readonly number[]): void {
    if (!this.#host) {
      if (frame.type === FrameType.HELLO) this.#hello(frame.id, frame.hello);
      else this.#violation(new ProtocolError(`expected HELLO, got a frame of type ${frame.type}`), fds);
      return;
    }
    if (this.#closing) {
      // Nothing is served after CLOSE; whatever fds came with it are closed.
      if (frame.type === FrameType.DUP) this.#stats.unexpectedFds += this.#discard(frame.fds);
      return;
    }
    switch (frame.type) {
      case FrameType.CLOSE:
        this.#closeCommand(frame.id);
        return;
      case FrameType.DUP:
      case FrameType.GETFD:
        this.#duplicate(frame, fds);
        return;
      case FrameType.HELLO:
        this.#violation(new ProtocolError('a second HELLO on a connection that is already set up'), fds);
        return;
      case FrameType.RELEASE:
        this.#release(frame.id, frame.fds);
        return;
      case FrameType.CALL:
        this.#call(frame.id, frame.method, frame.args);
        return;
      default:
        this.#violation(new ProtocolError(`a client sent a frame of type ${frame.type}, which only a command sends`), fds);
    }
  }

  /** HELLO: picks the fd intake, sets up the command, answers READY (or ERROR and ends). */
  #hello(id: number, hello: HelloPayload): void {
    if (hello.version !== PROTOCOL_VERSION) {
      this.#send(encodeError(id, { name: 'ProtocolError', message: `protocol version ${hello.version} is not ${PROTOCOL_VERSION}` }));
      this.#stats.protocolErrors++;
      this.#end(new ProtocolError('protocol version mismatch'));
      return;
    }
    let host: CommandHost;
    let constructorFds: ConstructorFd[] | undefined;
    try {
      const intake = this.#openIntake(hello);
      this.#intake = intake;
      this.#stats.refusesFds = intake.refusesFds;
      // The command's fds live in the channel's ledger, which the channel
      // answers DUP requests into without calling JS (and closes with the socket).
      const construct = (): CommandHost => new CommandHost(
        (this.#options.resolveCommand ?? moduleOrBuiltin)(hello.command),
        intake.transport,
        this.#ledger,
        this.#socket.peerCredentials(),
        // The command closes the client's fds as the channel does: on the
        // background closer, as the client's, where a close may block.
        this.#options.closeInBackground
          ? (fds, installs) => {
              // Outside the promise: a list the closer refuses throws at once, nothing closed (CommandHost then keeps them counted).
              const ticket = this.#channel.closeClientFds(fds, installs);
              return new Promise<void>((resolve) => afterBackgroundCloses([ticket], resolve));
            }
          : undefined,
        this.#options.limits?.holdLogBytes,
      );
      if (this.#options.reportConstructorFds) ({ value: host, opened: constructorFds } = fdsOpenedBy(construct));
      else host = construct();
    } catch (err) {
      this.#send(this.#errorReply(id, err, 'HELLO'));
      this.#end(endReason(err));
      return;
    }
    this.#host = host;
    // A helper daemon's connection takes no fds until it is READY (the
    // kernel refuses them: see HelperDaemon); from now on its DUPs bring them.
    if (!this.#intake.refusesFds) acceptFds(this.#socket);
    this.#send(encodeReady(id, { pid: process.pid, threadId: host.context.threadId, ...(constructorFds ? { constructorFds } : {}) }));
    this.#intake.start(this.#channel, this.#limits?.maxFds);
    this.#updateReading();
  }

  /** The fd intake a HELLO asks for: pulls by number (pidfd-intake.ts), or the fds that come with DUP frames. */
  #openIntake(hello: HelloPayload): FdIntake {
    if (hello.pull !== undefined) return openPidfdIntake(this.#socket, hello.probeFd as number, this.#options.transport);
    return socketIntake(this.#options.transport, this.#options.refuseFd !== undefined);
  }

  /**
   * DUP or GETFD: the request's fds into the command's ledger, then the
   * DUP_OK naming them. The frame channel answers DUPs in C++ (serve);
   * this runs for GETFD, and for a DUP the channel left to us (over a
   * quota, or replies backed up).
   */
  #duplicate(frame: DuplicationFrame, fds: readonly number[]): void {
    const intake = this.#intake as FdIntake;
    const ledger = (this.#host as CommandHost).ledger;
    if (frame.type !== intake.requestType) {
      // A DUP here is only reachable where the kernel lacks SO_PASSRIGHTS.
      this.#violation(new ProtocolError(intake.wrongRequest), fds);
      return;
    }
    const refusal = this.#reclaimingRefusal(frame, intake);
    if (refusal) {
      if (refusal instanceof QuotaExceededError) this.#options.onQuota?.(refusal.quota);
      this.#refuseDuplication(frame, refusal);
      return;
    }
    let taken: number[];
    try {
      taken = intake.take(frame);
    } catch (err) {
      this.#send(this.#errorReply(frame.id, err, 'a duplication'));
      return;
    }
    for (const fd of taken) ledger.add(fd);
    // The fds are ours (in the ledger) and the client has no answer yet.
    if (failpoint !== undefined) failpoint.pass('after-receive');
    this.#send(encodeFdList(FrameType.DUP_OK, frame.id, taken));
  }

  /**
   * #duplicationRefusal, after the fds that the quota it names counts and
   * that commands closed another way than closeClientFds are refunded
   * (reclaimClosedAdopted): this connection's for 'fds', the shared
   * budget's connections' for the others, each scope's scans paced
   * (ReclaimPacing). Each quota is looked at once.
   */
  #reclaimingRefusal(frame: DuplicationFrame, intake: FdIntake): FdBridgeError | undefined {
    const reclaimed = new Set<QuotaName>();
    let refusal = this.#duplicationRefusal(frame, intake, this.#channel.heldCount);
    while (refusal instanceof QuotaExceededError && !reclaimed.has(refusal.quota)) {
      reclaimed.add(refusal.quota);
      const refunded = refusal.quota === 'fds' ? this.#reclaimPacing.run(() => this.#channel.reclaimClosedAdopted()) : (this.#limits?.shared?.reclaim?.(refusal.quota) ?? 0);
      if (refunded === 0) break;
      refusal = this.#duplicationRefusal(frame, intake, this.#channel.heldCount);
    }
    return refusal;
  }

  /**
   * Why the duplication `frame` is refused whole, if it is: a quota it would
   * break (this connection's, with `held` fds held, or one shared across
   * connections), or one of its fds that ServeOptions.refuseFd turns away.
   */
  #duplicationRefusal(frame: DuplicationFrame, intake: FdIntake, held: number): FdBridgeError | undefined {
    const limits = this.#limits;
    const count = frame.fds.length;
    if (limits && held + count > limits.maxFds) {
      return new QuotaExceededError('fds', `${count} more fd(s) would make ${held + count} held for this client (at most ${limits.maxFds}); ${intake.refusalNote}`);
    }
    const shared = limits?.shared?.refusal(count);
    if (shared) return shared;
    const refuseFd = this.#options.refuseFd;
    const why = refuseFd && frame.type === FrameType.DUP ? frame.fds.map(refuseFd).find((r) => r !== undefined) : undefined;
    return why === undefined ? undefined : new FdBridgeError('ERR_FDBRIDGE_FD_REFUSED', `dupFileDescriptors: ${why}; nothing was kept`);
  }

  /**
   * RELEASE: closes the listed fds the command holds for the client (given
   * on this connection, not adopted), then answers: RESULT when that was
   * every one named, else the ERROR releaseFrom makes, naming the others.
   */
  #release(id: number, fds: readonly number[]): void {
    const { close, refusal } = this.#ledger.release(fds);
    this.#closeThen(close, () => this.#send(refusal ? this.#errorReply(id, refusal) : encodeResult(id, undefined)));
  }

  /**
   * Refuses a DUP or GETFD whole with `err`. A DUP's fds arrived and are
   * nobody's (the client still has its own): the answer goes once they are
   * closed, so that it means none of them is held any more. A helper daemon
   * counts the fds a client gave that wait for the closer against its fd
   * limits (they hold slots of its fd table until closed): a client that
   * makes room and asks again after its refusal never meets its own
   * refused fds there.
   */
  #refuseDuplication(frame: DuplicationFrame, err: Error): void {
    const arrived = frame.type === FrameType.DUP ? frame.fds : [];
    const ticket = this.#closeThen(arrived, () => this.#send(this.#errorReply(frame.id, err)));
    if (ticket !== undefined) this.#options.onUnownedCloses?.([ticket]);
  }

  /**
   * Closes `fds` (the client's, now nobody's), then runs `then`, the reply
   * that says they are closed. In background, a close that blocks delays
   * that reply only, never the event loop or another client's.
   */
  #closeThen(fds: readonly number[], then: () => void): number | undefined {
    if (!this.#options.closeInBackground) {
      closeOwnFds(fds);
      then();
      return undefined;
    }
    const ticket = this.#socket.closeInBackground(fds);
    afterBackgroundCloses([ticket], then);
    return ticket;
  }

  /**
   * CALL: runs the method; its RESULT or ERROR goes back whenever it
   * settles: at once for a method that returned a value or threw, from a
   * promise job for one that returned a promise or another thenable.
   */
  #call(id: number, method: string, args: unknown[]): void {
    const limits = this.#limits;
    // A quota below MAX_CALLS_IN_FLIGHT refuses, with a typed error, what
    // would otherwise wait for a running call to settle.
    if (limits && this.#callsInFlight >= limits.maxCallsInFlight) {
      this.#refuseQuota(id, 'calls', `${this.#callsInFlight} calls are already being served for this client (at most ${limits.maxCallsInFlight}); wait for their replies`);
      return;
    }
    let value: unknown;
    let then: unknown;
    try {
      value = (this.#host as CommandHost).invoke(method, args);
      // Read once, as resolving a promise with it would.
      if ((typeof value === 'object' && value !== null) || typeof value === 'function') then = (value as { then?: unknown }).then;
    } catch (err) {
      this.#lastActiveAt = Date.now();
      this.#send(this.#errorReply(id, err, `call ${method}()`));
      return;
    }
    if (typeof then !== 'function') {
      // Settled now: the client is not idle while a synchronous method ran.
      this.#lastActiveAt = Date.now();
      this.#send(this.#resultReply(id, method, value));
      return;
    }
    if (++this.#callsInFlight === MAX_CALLS_IN_FLIGHT) this.#updateReading();
    // What resolving a promise with a thenable does: its then, called from a job.
    new Promise<unknown>((resolve, reject) => {
      queueMicrotask(() => {
        try {
          (then as (onFulfilled: (v: unknown) => void, onRejected: (e: unknown) => void) => unknown).call(value, resolve, reject);
        } catch (err) {
          reject(err);
        }
      });
    }).then(
      (result) => {
        const reply = this.#resultReply(id, method, result);
        this.#callSettled();
        this.#send(reply);
      },
      (err: unknown) => {
        this.#callSettled();
        this.#send(this.#errorReply(id, err, `call ${method}()`));
      },
    );
  }

  /** The RESULT reply to call `id`, or its ERROR when the value cannot be sent. */
  #resultReply(id: number, method: string, value: unknown): Buffer {
    try {
      return encodeJsonText(FrameType.RESULT, id, resultToJson(value));
    } catch (err) {
      return this.#errorReply(id, err, `the result of ${method}()`);
    }
  }

  #callSettled(): void {
    this.#lastActiveAt = Date.now();
    if (this.#callsInFlight-- === MAX_CALLS_IN_FLIGHT) this.#updateReading();
  }

  /**
   * The client's CLOSE: close the command, say so, and wait for the client
   * to hang up (it may inspect this process in between); EOF then ends us.
   */
  #closeCommand(id: number): void {
    if (this.#closing) return;
    this.#closing = true;
    // A DUP behind the CLOSE must not be answered any more (its fds are closed below).
    this.#channel.serve(false);
    if (failpoint !== undefined) failpoint.pass('on-close');
    const sendClosed = (): void => this.#send(encodeEmpty(FrameType.CLOSED, id));
    // CLOSED tells the client that the command's unadopted fds are closed
    // (its onCommandClosed inspects this process then): when they went to
    // the background closer with the command's sweep, wait until it has
    // closed them, and every other fd of this connection's it was given
    // (released, refused, truncated), but nobody else's.
    const reply = (): void =>
      this.#options.closeInBackground ? afterBackgroundCloses(this.#socket.backgroundCloseTickets(), sendClosed) : sendClosed();
    if (this.#host) this.#host.close().catch(() => undefined).finally(reply);
    else reply();
  }

  /**
   * A request whose fds did not all fit here (MSG_CTRUNC: this process is at
   * its fd limit). The native layer closed the ones that arrived; when the
   * header of a DUP still arrived whole, that request fails and the
   * connection lives on.
   */
  #truncated(err: TruncatedError): void {
    let frame: Frame | undefined;
    try {
      frame = err.what === 'control' && err.data.length > 0 ? decodeFrame(err.data, [-1]) : undefined;
    } catch {
      frame = undefined;
    }
    // The native layer handed what arrived to the closer, as this socket's.
    if (err.fdsClosed > 0 && this.#options.closeInBackground) this.#options.onUnownedCloses?.(this.#socket.backgroundCloseTickets());
    if (!this.#host || this.#intake?.requestType !== FrameType.DUP || frame?.type !== FrameType.DUP) {
      // An oversized frame (MSG_TRUNC) or fds where none belong: the native
      // layer closed the fds that arrived; count them as unexpected.
      this.#stats.unexpectedFds += err.fdsClosed;
      this.#violation(new ProtocolError(`a request arrived truncated (${err.message})`, { cause: err }), undefined);
      return;
    }
    // The same failure as pidfd_getfd's or dup's EMFILE on the other
    // transports, and reported as such: a SystemError, not the command's.
    // The reply says the fds that arrived are closed: in background, the
    // native layer has only queued them (their ticket is among the socket's),
    // so it waits until the closer has closed them, as #closeThen does.
    const reply = (): void =>
      this.#send(
        encodeError(frame.id, {
          name: 'SystemError',
          code: 'EMFILE',
          syscall: 'recvmsg',
          message: `recvmsg: EMFILE: the process is at its fd limit (RLIMIT_NOFILE): not every fd could be installed (MSG_CTRUNC); the ${err.fdsClosed} that were were closed`,
        }),
      );
    if (this.#options.closeInBackground) afterBackgroundCloses(this.#socket.backgroundCloseTickets(), reply);
    else reply();
  }

  /** Sends a reply; a send that fails ends the connection. */
  #send(frame: Buffer): void {
    if (this.#ended) return;
    try {
      this.#socket.write(frame, undefined, this.#onSent);
    } catch (err) {
      // EPIPE: the client is gone; EOF will follow. A full queue: the
      // client has stopped reading its replies (reading requests pauses
      // long before, see the constructor, so only replies to requests read
      // earlier get here): it is cut off, not buffered for.
      if (err instanceof QueueFullError) this.#options.onQuota?.('queuedBytes');
      this.#end(
        this.#clientHungUpAfterClose(err)
          ? null
          : err instanceof QueueFullError
          ? new QueueFullError(
              `the client stopped reading its replies: ${err.queuedMessages} (${err.queuedBytes} bytes) wait to be sent, ` +
                `the limit; the connection is cut off`,
              err,
              { cause: err },
            )
          : (err as Error),
      );
    }
  }

  readonly #onSent = (err: Error | null): void => {
    if (err) this.#end(this.#clientHungUpAfterClose(err) ? null : err);
  };

  /**
   * Whether a failed send (EPIPE) or read (ECONNRESET: it closed with
   * replies unread) is the client hanging up after its CLOSE: a reply to a
   * call still in flight then (a command's close() ends its calls, e.g. a
   * log line waiting for a pipe) finds the client gone, whose close()
   * failed those calls already. The normal end, as its EOF.
   */
  #clientHungUpAfterClose(err: unknown): boolean {
    const code = (err as { code?: unknown } | null)?.code;
    return this.#closing && (code === 'EPIPE' || code === 'ECONNRESET');
  }

  #refuseQuota(id: number, quota: QuotaName, message: string): void {
    this.#options.onQuota?.(quota);
    this.#send(this.#errorReply(id, new QuotaExceededError(quota, message)));
  }

  /**
   * The ERROR reply to request `id` for `err`. With reportError (a shared
   * daemon) the stack stays here: an error thrown in the daemon (`what`
   * failed) goes to reportError, stack and all; a refusal the daemon made by
   * its rules (no `what`) needs no stack anywhere.
   */
  #errorReply(id: number, err: unknown, what?: string): Buffer {
    const report = this.#options.reportError;
    if (report === undefined) return encodeError(id, describeError(err));
    if (what !== undefined) report(what, err);
    return encodeError(id, describeError(err, { stack: false }));
  }

  /** Closes fds the client sent that nobody will own; returns how many. */
  #discard(fds: readonly number[] | undefined): number {
    if (!fds || fds.length === 0) return 0;
    if (!this.#options.closeInBackground) return closeOwnFds(fds);
    this.#options.onUnownedCloses?.([this.#socket.closeInBackground(fds)]);
    return fds.length;
  }

  /** The client broke the protocol: count it, close what came with it, end. */
  #violation(err: Error, fds: readonly number[] | undefined): void {
    this.#stats.protocolErrors++;
    this.#stats.unexpectedFds += this.#discard(fds);
    this.#end(err);
  }

  /**
   * Ends the connection once: the socket is shut down, the command closed,
   * then the intake and the socket.
   */
  #end(reason: Error | null): void {
    if (this.#ended) return;
    this.#ended = true;
    // The socket is closed once the command is, and once the REFUSED has
    // left if it waits in the send queue (#refusedLeft).
    let waits = 1;
    const finish = (): void => {
      if (--waits > 0) return;
      this.#intake?.close();
      this.#socket.close();
      this.#options.onEnd?.(reason, this.#stats);
    };
    let refusedQueued = false;
    if (reason instanceof QuotaExceededError) {
      // A limit that ends the connection (no HELLO in time, idle) is said to
      // the client before the socket closes, as a REFUSED naming the quota,
      // so that it fails with that quota rather than as a peer that went
      // away: after the replies queued before it, which it may be reading.
      try {
        // Exempt from the send queue's limit: one small message more, the
        // last, which a client whose replies fill the queue is owed too.
        refusedQueued = !this.#socket.write(encodeRefused(reason.message), undefined, () => this.#refusedDone('write'), undefined, {
          exemptFromLimit: true,
        });
      } catch {
        // Gone: it is disconnected all the same.
      }
    }
    this.#channel.serve(false);
    this.#updateReading();
    // The client learns of the end now (end of file after the replies it
    // has not read; EPIPE for what it sends), not once the socket's close(2)
    // is done: the command's close waits for its fds' closes, and in
    // background the socket's close waits behind its owner's others, which
    // a client can make block for as long as it likes (lingering TCP
    // sockets), its calls in flight and new ones waiting with it. The
    // socket is this connection's alone (accepted, or the child's end of
    // its socketpair), never an fd a client sent: shutdown(2) ends it for
    // no one else. It never blocks; nothing unread is dropped here (the
    // close does that). A REFUSED still in the send queue would be: the
    // writing side is shut down once it has left (#refusedDone), and the
    // socket closed then. A client that does not read it is the
    // supervisor's to cut off (end() again: a helper daemon's
    // stalledReaderTimeoutMs); one that is gone fails the send.
    try {
      this.#socket.shutdown(refusedQueued ? 'read' : 'both');
    } catch {
      // closed already, or never connected (ENOTCONN): no peer to tell
    }
    if (refusedQueued) {
      waits++;
      this.#refusedLeft = finish;
    }
    if (this.#host) this.#host.close().catch(() => undefined).finally(finish);
    else finish();
  }

  /**
   * The end's REFUSED, if it waits in the send queue, waits no more: it has
   * left, or failed (`shut` 'write': the client reads its end of file
   * next), or end() was called again ('both': it is dropped with the
   * replies still unsent). The socket is closed then, once the command is.
   */
  #refusedDone(shut: 'write' | 'both'): void {
    const left = this.#refusedLeft;
    if (left === undefined) return;
    this.#refusedLeft = undefined;
    try {
      this.#socket.shutdown(shut);
    } catch {
      // its peer gone (ENOTCONN)
    }
    left();
  }
}
