/**
 * The serving side of the pidfd transport (the client side is pidfd.ts):
 * the client's fds are pulled out of its process with pidfd_getfd(2), by
 * the numbers its GETFD requests list, instead of arriving over the socket.
 * The pulled copies are close-on-exec (pidfd_getfd sets it) and become the
 * command's, like received ones; the socket itself refuses fds
 * (refuse-fds.ts), so none can arrive on a connection that never expects one.
 */
import { UnsupportedError } from '../errors';
import { closeOwnFds } from '../fd';
import type { FrameChannel } from '../frame-channel';
import { fdList, native } from '../native';
import { FrameType } from '../protocol';
import type { UnixSocket } from '../socket';
import type { TransportName } from './index';
import { refuseFds } from './refuse-fds';
import type { DuplicationFrame, FdIntake } from './serve';

type GetfdFrame = Extract<DuplicationFrame, { type: typeof FrameType.GETFD }>;

/**
 * A pidfd for the client at the other end of `socket` (SO_PEERPIDFD, which
 * cannot name a recycled pid; pidfd_open on the SO_PEERCRED pid before Linux
 * 6.5), checked by pulling `probeFd` once. Throws UnsupportedError when the
 * kernel or the permissions (ptrace access to the client) refuse.
 */
function openClientPidfd(socket: UnixSocket, probeFd: number): number {
  let pidfd: number;
  try {
    pidfd = socket.peerPidfd({ own: true }).release();
  } catch {
    try {
      pidfd = native.pidfdOpen(socket.peerCredentials().pid, true);
    } catch (err) {
      throw new UnsupportedError(`pidfd transport: pidfd_open failed (${(err as Error).message}); it needs Linux 5.3+`, {
        cause: err,
      });
    }
  }
  try {
    closeOwnFds([native.pidfdGetfd(pidfd, probeFd)]);
  } catch (err) {
    closeOwnFds([pidfd]);
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

/**
 * Sets up pulling for the client at the other end of `socket`, whose HELLO
 * named `probeFd` (an fd open in its process) to prove that pulling works,
 * on a connection served as `servedAs`. From then on fds travel by number
 * (GETFD), never over the socket. Throws UnsupportedError when the kernel
 * or the permissions refuse, or a helper daemon is asked; nothing is left
 * open then.
 */
export function openPidfdIntake(socket: UnixSocket, probeFd: number, servedAs: TransportName): FdIntake {
  // A pull is pidfd_getfd(2) with this process's privileges on whatever the
  // connecting process runs by then (it may have exec'd a set-user-ID
  // program and left the socket to a child of its own): only the process a
  // client spawned for itself may pull. A shared daemon takes fds as its
  // clients send them, which the kernel checks they have.
  if (servedAs === 'helper') {
    throw new UnsupportedError('a helper daemon takes fds only as its clients send them (SCM_RIGHTS), never by pidfd pulls');
  }
  let pidfd = openClientPidfd(socket, probeFd);
  let refuses: boolean;
  try {
    refuses = refuseFds(socket);
  } catch (err) {
    closeOwnFds([pidfd]);
    throw err;
  }
  // The channel that answers GETFDs by pulling through the pidfd (start), told to stop before it closes.
  let served: FrameChannel | undefined;
  return {
    transport: 'pidfd',
    requestType: FrameType.GETFD,
    wrongRequest: 'DUP on a pidfd connection, whose client sends fd numbers (GETFD), never fds',
    refusalNote: 'nothing was pulled',
    refusesFds: refuses,
    // Every number or none: on failure nothing pulled stays open. For the
    // GETFDs the channel leaves to JS (over a quota, replies backed up, or
    // pulls that failed there: this pull then fails with their typed error).
    // Each pull must be the file the client pinned at its number (named
    // beside it): another is the client program's, at a number it closed
    // and reopened before the pull (an EBADF naming that fd; the pulls are
    // closed, and the client's file stays open there).
    // serve.ts hands an intake the frames of its requestType alone (GETFD here).
    take: (frame) => native.pidfdGetfdAll(pidfd, fdList(frame.fds), (frame as GetfdFrame).files),
    // The channel pulls, keeps and answers a GETFD in one native step, as it
    // answers a DUP: no call into JS, nor one per fd into the ledger.
    // serve.ts starts it once, right after the HELLO opened it, so the pidfd is open.
    start: (channel, maxFds) => {
      channel.servePulls(pidfd, maxFds);
      served = channel;
    },
    // serve.ts closes it once, as the connection ends, just before its socket
    // (the channel then serves nothing more); a second call closes nothing.
    close: () => {
      // Stryker disable next-line UnaryOperator: +1 would name fd 1 as the pidfd to pull through, but the socket closes right after (serve.ts #end) and its channel serves no GETFD any more
      served?.servePulls(-1);
      served = undefined;
      // Stryker disable next-line ConditionalExpression,EqualityOperator: serve.ts calls close once, with the pidfd open (forced true changes nothing then); it is fdbridge's own, above the fd floor, never 0 (`> 0` is the same test)
      if (pidfd >= 0) closeOwnFds([pidfd]);
      // Stryker disable next-line UnaryOperator: read only by a second close, which serve.ts never makes
      pidfd = -1;
    },
  };
}
