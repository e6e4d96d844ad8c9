/**
 * The command's side of a socket connection (child and helper transports):
 * reads frames, hosts one command, answers each request. Runs until the
 * client closes its end (or breaks the protocol); then the command's close()
 * runs and every fd it was given and did not adopt is closed.
 */
import { CommandHost, type CommandSpec } from '../command';
import { builtinCommand } from '../commands/registry';
import { describeError, ProtocolError, QueueFullError, QuotaExceededError, TruncatedError, UnknownCommandError, UnsupportedError, type QuotaName, type TransportName } from '../errors';
import { failpointFromEnv, type Failpoint } from '../failpoint';
import { closeFds } from '../fd';
import { native } from '../native';
import {
  decodeFrame,
  encodeEmpty,
  encodeFdList,
  encodeJson,
  encodeResult,
  FrameType,
  PROTOCOL_VERSION,
  type Frame,
} from '../protocol';
import type { UnixSocket } from '../socket';
import { refuseFds } from './refuse-fds';

export interface ServeStats {
  /** fds that arrived where none belonged (closed at once). */
  unexpectedFds: number;
  /** Frames rejected as malformed or out of place (each ends the connection). */
  protocolErrors: number;
  /**
   * pidfd connections: true once the socket refuses fds in the kernel
   * (SO_PASSRIGHTS=0, Linux 6.16+), false before that or on older kernels
   * (then an fd that arrives anyway is closed and counted in unexpectedFds).
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

/** Per-client limits on what one connection may hold in this process (a helper daemon's quotas). */
export interface ServeLimits {
  /** fds given to the command and not adopted, at most. A DUP past it is refused (QuotaExceededError 'fds'). */
  maxFds: number;
  /** Calls being served at once, at most; more are refused ('calls'). */
  maxCallsInFlight: number;
  /**
   * Reply bytes waiting for the client to read them (the send queue's
   * limit): a reply that does not fit disconnects the client ('queuedBytes').
   */
  maxQueuedBytes: number;
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
   * The code to run for the command a HELLO asks for; throws to refuse it.
   * Without it the HELLO's module is loaded as given, or a built-in command
   * by name (a child serves the parent that started it, whose code it is
   * anyway); a helper daemon
   * resolves names against the commands it was started with.
   */
  resolveCommand?: (requested: CommandSpec) => CommandSpec;
  /** Called once, after the command is closed and the socket with it. */
  onEnd?: (reason: Error | null, stats: ServeStats) => void;
}

/**
 * FDBRIDGE_FAILPOINT (src/failpoint.ts), read once here: a testing aid that
 * SIGKILLs this process at a chosen step. Unset, it costs one check of
 * `failpoint !== undefined` per request.
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
 * A pidfd for the client at the other end of `socket` (SO_PEERPIDFD, which
 * cannot name a recycled pid; pidfd_open on the SO_PEERCRED pid before Linux
 * 6.5), checked by pulling `probeFd` once. Throws UnsupportedError when the
 * kernel or the permissions (ptrace access to the client) refuse.
 */
function openClientPidfd(socket: UnixSocket, probeFd: number): number {
  let pidfd: number;
  try {
    pidfd = socket.peerPidfd().release();
  } catch {
    try {
      pidfd = native.pidfdOpen(socket.peerCredentials().pid);
    } catch (err) {
      throw new UnsupportedError(`pidfd transport: pidfd_open failed (${(err as Error).message}); it needs Linux 5.3+`, {
        cause: err,
      });
    }
  }
  try {
    closeFds([native.pidfdGetfd(pidfd, probeFd)]);
  } catch (err) {
    closeFds([pidfd]);
    const code = (err as { code?: string }).code;
    const why =
      code === 'EPERM'
        ? "this process may not ptrace the client (pidfd_getfd needs PTRACE_MODE_ATTACH_REALCREDS: same uid and no Yama restriction, or CAP_SYS_PTRACE)"
        : code === 'ENOSYS'
          ? 'the kernel has no pidfd_getfd (Linux 5.6+)'
          : (err as Error).message;
    throw new UnsupportedError(`pidfd transport: cannot pull the client's fds: ${why}`, { cause: err });
  }
  return pidfd;
}

/** pidfd_getfd for every number, or none: on failure the ones pulled are closed. */
function pullAll(pidfd: number, fds: readonly number[]): number[] {
  const out: number[] = [];
  try {
    for (const fd of fds) out.push(native.pidfdGetfd(pidfd, fd));
  } catch (err) {
    closeFds(out);
    throw err;
  }
  return out;
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
  /** Ends it as if the client had closed (or with `reason`): the command is closed, then the socket. */
  end(reason?: Error): void;
  /** What a supervisor needs to time it out (see HelperDaemon). */
  activity(): ServedActivity;
}

export interface ServedActivity {
  /** The HELLO was answered (the command is set up). */
  ready: boolean;
  /** Date.now() of the last request that reached JS. */
  lastRequestAt: number;
  /** DUP requests answered in C++ so far (they never reach JS). */
  servedDuplications: number;
  /** Requests being served. */
  inFlight: number;
  /** fds given to the command and not adopted. */
  fdsHeld: number;
  /** Reply bytes waiting for the client to read them. */
  queuedBytes: number;
}

/**
 * Runs `then` once the background closer thread has closed everything up to
 * `ticket` (a closeInBackground ticket). Polled: a close that blocks (a TCP
 * socket lingering) delays `then`, never the event loop.
 */
function afterBackgroundCloses(ticket: number, then: () => void): void {
  if (native.backgroundClosesDone() >= ticket) then();
  else setTimeout(() => afterBackgroundCloses(ticket, then), 1);
}

/** Serves one client on `socket` (which it owns and closes). */
export function serveConnection(socket: UnixSocket, options: ServeOptions): ServedConnection {
  checkFailpoint();
  const stats: ServeStats = { unexpectedFds: 0, protocolErrors: 0, refusesFds: false };
  const limits = options.limits;
  let host: CommandHost | undefined;
  let ended = false;
  let lastRequestAt = Date.now();
  if (options.closeInBackground) socket.closeGivenInBackground(true);

  /** Closes fds the client sent that nobody will own; returns how many. */
  const discard = (fds: readonly number[] | undefined): number => {
    if (!fds || fds.length === 0) return 0;
    if (!options.closeInBackground) return closeFds(fds);
    native.closeInBackground(fds);
    return fds.length;
  };

  const onSent = (err: Error | null): void => {
    if (err) end(err);
  };
  const send = (frame: Buffer): void => {
    if (ended) return;
    try {
      socket.write(frame, undefined, onSent);
    } catch (err) {
      // EPIPE: the client is gone; EOF will follow. A full queue: the
      // client has stopped reading its replies (reading requests pauses
      // long before, see below, so only replies to requests read earlier
      // get here): it is cut off, not buffered for.
      if (err instanceof QueueFullError) options.onQuota?.('queuedBytes');
      end(
        err instanceof QueueFullError
          ? new QueueFullError(
              `the client stopped reading its replies: ${err.queuedMessages} (${err.queuedBytes} bytes) wait to be sent, ` +
                `the limit; the connection is cut off`,
              err,
              { cause: err },
            )
          : (err as Error),
      );
      return;
    }
  };

  const refuseQuota = (id: number, quota: QuotaName, message: string): void => {
    options.onQuota?.(quota);
    send(encodeJson(FrameType.ERROR, id, describeError(new QuotaExceededError(quota, message))));
  };
  // Every request read makes a reply: while replies back up (the client
  // reads slowly), stop reading requests, so that they wait in the kernel
  // and then in the client's own bounded queue instead of here.
  socket.setSendQueueLimits(
    limits ? { pauseReadingAt: Math.min(SERVE_PAUSE_READING_AT, limits.maxQueuedBytes), limit: limits.maxQueuedBytes } : { pauseReadingAt: SERVE_PAUSE_READING_AT },
  );
  // Paused (replies backed up, or MAX_CALLS_IN_FLIGHT), it still learns at
  // once of a client that hangs up, and ends: nobody is left to answer.
  socket.watchHangup(true);

  let clientPidfd = -1;

  const end = (reason: Error | null): void => {
    if (ended) return;
    ended = true;
    socket.serveDuplications(false);
    socket.pause();
    const finish = (): void => {
      if (clientPidfd >= 0) closeFds([clientPidfd]);
      socket.close();
      options.onEnd?.(reason, stats);
    };
    if (host) host.close().catch(() => undefined).finally(finish);
    else finish();
  };

  // Calls the command has not answered yet. Their replies come later, all
  // at once maybe, whatever the reply queue holds: at MAX_CALLS_IN_FLIGHT no
  // request is read until one settles, so that such a burst stays bounded.
  let callsInFlight = 0;
  const callSettled = (): void => {
    if (callsInFlight-- === MAX_CALLS_IN_FLIGHT && !ended) socket.resume();
  };

  // The client's CLOSE: close the command, say so, and wait for the client
  // to hang up (it may inspect this process in between); EOF then ends us.
  let closing = false;
  const closeCommand = (id: number): void => {
    if (closing) return;
    closing = true;
    // A DUP behind the CLOSE must not be answered any more (its fds are closed below).
    socket.serveDuplications(false);
    if (failpoint !== undefined) failpoint.pass('on-close');
    const sendClosed = (): void => send(encodeEmpty(FrameType.CLOSED, id));
    // CLOSED tells the client that the command's unadopted fds are closed
    // (its onCommandClosed inspects this process then): when they went to
    // the closer thread with the command's sweep, wait until it has closed
    // everything queued so far.
    const reply = (): void =>
      options.closeInBackground ? afterBackgroundCloses(native.closeInBackground([]), sendClosed) : sendClosed();
    if (host) host.close().catch(() => undefined).finally(reply);
    else reply();
  };

  const violation = (err: Error, fds: readonly number[] | undefined): void => {
    stats.protocolErrors++;
    stats.unexpectedFds += discard(fds);
    end(err);
  };

  /**
   * Serves one decoded frame. `fds` are the ones that arrived with it (only
   * a DUP frame decodes with fds); every violation closes them, since
   * nothing else will.
   */
  const handle = (frame: Frame, fds: readonly number[]): void => {
    if (!host) {
      if (frame.type !== FrameType.HELLO) {
        violation(new ProtocolError(`expected HELLO, got a frame of type ${frame.type}`), fds);
        return;
      }
      if (frame.hello.version !== PROTOCOL_VERSION) {
        send(encodeJson(FrameType.ERROR, frame.id, { name: 'ProtocolError', message: `protocol version ${frame.hello.version} is not ${PROTOCOL_VERSION}` }));
        stats.protocolErrors++;
        end(new ProtocolError('protocol version mismatch'));
        return;
      }
      try {
        if (frame.hello.pull === 'pidfd') {
          clientPidfd = openClientPidfd(socket, frame.hello.probeFd as number);
          // From now on fds travel by number (GETFD), never over this socket.
          stats.refusesFds = refuseFds(socket);
        }
        // The command's fds live in the socket's given set, which the socket
        // answers DUP requests into without calling JS (and closes with it).
        host = new CommandHost(
          (options.resolveCommand ?? moduleOrBuiltin)(frame.hello.command),
          frame.hello.pull === 'pidfd' ? 'pidfd' : options.transport,
          socket.given,
        );
      } catch (err) {
        send(encodeJson(FrameType.ERROR, frame.id, describeError(err)));
        end(err as Error);
        return;
      }
      send(encodeJson(FrameType.READY, frame.id, { pid: process.pid, threadId: host.context.threadId }));
      // The common request, a DUP, is answered in C++ from now on: a round
      // trip then never enters JS on this side. Not with a failpoint (it
      // must see each request) nor on a pidfd connection (no fds arrive).
      if (failpoint === undefined && frame.hello.pull !== 'pidfd') socket.serveDuplications(true, limits?.maxFds);
      return;
    }
    const h = host;
    if (closing) {
      // Nothing is served after CLOSE; whatever fds came with it are closed.
      if (frame.type === FrameType.DUP) stats.unexpectedFds += discard(frame.fds);
      return;
    }
    switch (frame.type) {
      case FrameType.CLOSE:
        closeCommand(frame.id);
        return;
      case FrameType.DUP:
        if (clientPidfd >= 0) {
          // Only reachable where the kernel lacks SO_PASSRIGHTS.
          violation(new ProtocolError('DUP on a pidfd connection, whose client sends fd numbers (GETFD), never fds'), fds);
          return;
        }
        acceptDup(frame.id, frame.fds);
        return;
      case FrameType.HELLO:
        violation(new ProtocolError('a second HELLO on a connection that is already set up'), fds);
        return;
      case FrameType.GETFD: {
        if (clientPidfd < 0) {
          violation(new ProtocolError('GETFD on a connection that did not ask for pidfd pulls'), fds);
          return;
        }
        if (limits && h.ledger.size + frame.fds.length > limits.maxFds) {
          refuseQuota(frame.id, 'fds', `${frame.fds.length} more fd(s) would make ${h.ledger.size + frame.fds.length} held for this client (at most ${limits.maxFds}); nothing was pulled`);
          return;
        }
        let pulled: number[];
        try {
          pulled = pullAll(clientPidfd, frame.fds);
        } catch (err) {
          send(encodeJson(FrameType.ERROR, frame.id, describeError(err)));
          return;
        }
        acceptDup(frame.id, pulled);
        return;
      }
      case FrameType.RELEASE: {
        const mine = frame.fds.filter((fd) => h.ledger.adopt(fd));
        if (!options.closeInBackground) {
          closeFds(mine);
          send(encodeResult(frame.id, undefined));
          return;
        }
        // The reply says they are closed: send it once they are (a close
        // that blocks delays this reply, never the event loop).
        afterBackgroundCloses(native.closeInBackground(mine), () => send(encodeResult(frame.id, undefined)));
        return;
      }
      case FrameType.CALL:
        // A quota below MAX_CALLS_IN_FLIGHT refuses, with a typed error, what
        // would otherwise wait for a running call to settle.
        if (limits && callsInFlight >= limits.maxCallsInFlight) {
          refuseQuota(frame.id, 'calls', `${callsInFlight} calls are already being served for this client (at most ${limits.maxCallsInFlight}); wait for their replies`);
          return;
        }
        if (++callsInFlight === MAX_CALLS_IN_FLIGHT) socket.pause();
        h.call(frame.method, frame.args).then(
          (value) => {
            let reply: Buffer;
            try {
              reply = encodeResult(frame.id, value);
            } catch (err) {
              reply = encodeJson(FrameType.ERROR, frame.id, describeError(err));
            }
            callSettled();
            send(reply);
          },
          (err: unknown) => {
            callSettled();
            send(encodeJson(FrameType.ERROR, frame.id, describeError(err)));
          },
        );
        return;
      default:
        violation(new ProtocolError(`a client sent a frame of type ${frame.type}, which only a command sends`), fds);
    }
  };

  // A DUP whose fds did not all fit here (MSG_CTRUNC: this process is at its
  // fd limit). The native layer closed the ones that arrived; the header
  // still arrived whole, so that request fails and the connection lives on.
  const onTruncated = (err: TruncatedError): void => {
    let frame: Frame | undefined;
    try {
      frame = err.what === 'control' && err.data.length > 0 ? decodeFrame(err.data, [-1]) : undefined;
    } catch {
      frame = undefined;
    }
    if (!host || clientPidfd >= 0 || frame?.type !== FrameType.DUP) {
      // An oversized frame (MSG_TRUNC) or fds where none belong: the native
      // layer closed the fds that arrived; count them as unexpected.
      stats.unexpectedFds += err.fdsClosed;
      violation(new ProtocolError(`a request arrived truncated (${err.message})`, { cause: err }), undefined);
      return;
    }
    send(
      encodeJson(FrameType.ERROR, frame.id, {
        name: 'TruncatedError',
        code: err.code,
        message: `the command's process could not receive the fds (MSG_CTRUNC: it is at its fd limit); ${err.fdsClosed} that arrived were closed`,
      }),
    );
  };

  // fds now here for the command (received with a DUP, or pulled for a
  // GETFD): into the ledger, then the DUP_OK naming them. Usually the socket
  // answers DUPs in C++ (serveDuplications) and this runs only for GETFD, or
  // with a failpoint, which must see each request.
  const acceptDup = (id: number, fds: readonly number[]): void => {
    const h = host as CommandHost;
    if (limits && h.ledger.size + fds.length > limits.maxFds) {
      // Refused whole: the fds are closed (the client still has its own).
      discard(fds);
      refuseQuota(id, 'fds', `${fds.length} more fd(s) would make ${h.ledger.size + fds.length} held for this client (at most ${limits.maxFds}); release some first`);
      return;
    }
    for (const fd of fds) h.ledger.add(fd);
    // The fds are ours (in the ledger) and the client has no answer yet.
    if (failpoint !== undefined) failpoint.pass('after-receive');
    send(encodeFdList(FrameType.DUP_OK, id, fds));
  };

  socket.setMessageHandler((err, data, fds) => {
    if (ended) {
      stats.unexpectedFds += discard(fds);
      return;
    }
    lastRequestAt = Date.now();
    if (err) {
      if (err instanceof TruncatedError) onTruncated(err);
      else end(err.name === 'EofError' ? null : err); // EOF is the normal end
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(data as Buffer, fds as number[]);
    } catch (e) {
      violation(e as Error, fds);
      return;
    }
    handle(frame, fds as number[]);
  });
  return {
    end: (reason?: Error) => end(reason ?? null),
    activity: () => ({
      ready: host !== undefined,
      lastRequestAt,
      servedDuplications: socket.servedDuplications,
      inFlight: callsInFlight,
      fdsHeld: host ? host.ledger.size : 0,
      queuedBytes: socket.queuedSendBytes,
    }),
  };
}
