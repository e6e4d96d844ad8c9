/**
 * Sockets that must never receive fds say so to the kernel.
 *
 * The client's side of a child, helper or pidfd connection never expects an
 * fd from the command's side (replies carry fd *numbers*, valid over there),
 * and the command's side of a pidfd connection pulls fds with pidfd_getfd(2)
 * instead of receiving them. On those sockets SO_PASSRIGHTS is turned off
 * (Linux 6.16+): a peer's sendmsg with SCM_RIGHTS then fails with EPERM in
 * the *sender*, so no fd ever lands in our table. On older kernels the option
 * is unknown (ENOPROTOOPT) and the receive paths remain the guard: any fd
 * that arrives is discarded, counted (`unexpectedFds` in the stats) and
 * ends that connection with a ProtocolError.
 */
import { SystemError } from '../errors';
import { native } from '../native';
import type { UnixSocket } from '../socket';

/**
 * Turns SO_PASSRIGHTS off on `socket`. Returns true when the kernel now
 * refuses fds sent to it, false when the kernel lacks the option
 * (ENOPROTOOPT: before Linux 6.16) or the socket is already closed. Other
 * failures throw (they would mean a bug, not an old kernel).
 */
export function refuseFds(socket: UnixSocket): boolean {
  return refuseFdsOn(socket.fd);
}

/**
 * Turns SO_PASSRIGHTS back on for a served connection whose fds come with
 * its frames (a helper daemon's connections start with it off: see
 * mayHoldFds). Nothing to do before Linux 6.16, where it is always on.
 */
export function acceptFds(socket: UnixSocket): void {
  if (socket.fd < 0) return;
  try {
    native.setPassRights(socket.fd, true);
  } catch (err) {
    if (!(err instanceof SystemError && err.code === 'ENOPROTOOPT')) throw err;
  }
}

/** refuseFds for a socket by number (a listening socket's: see mayHoldFds). */
export function refuseFdsOn(fd: number): boolean {
  if (fd < 0) return false;
  try {
    native.setPassRights(fd, false);
    return true;
  } catch (err) {
    if (err instanceof SystemError && err.code === 'ENOPROTOOPT') return false;
    throw err;
  }
}

/**
 * Whether fds may wait unread in `socket`'s receive queue, now or later:
 * false only where the kernel says SO_PASSRIGHTS is off. A socket accepted
 * from a listener that refuses fds (refuseFdsOn) has it off from the peer's
 * connect(2) on (the kernel copies the listener's setting then), so no fd
 * was ever queued on it, and closing it cannot drop the last reference of
 * a peer's file (whose close may block: a lingering TCP socket). True
 * before Linux 6.16, and for a socket closed already.
 */
export function mayHoldFds(socket: UnixSocket): boolean {
  const fd = socket.fd;
  if (fd < 0) return true;
  try {
    return native.getPassRights(fd);
  } catch (err) {
    if (err instanceof SystemError && err.code === 'ENOPROTOOPT') return true;
    throw err;
  }
}
