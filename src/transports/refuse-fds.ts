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
 * that arrives is closed at once, counted (`unexpectedFds` in the stats) and
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
  const fd = socket.fd;
  if (fd < 0) return false;
  try {
    native.setPassRights(fd, false);
    return true;
  } catch (err) {
    if (err instanceof SystemError && err.code === 'ENOPROTOOPT') return false;
    throw err;
  }
}
