/**
 * The copies a transport makes of a list of the caller's fds for itself: the
 * duplicates a command in this process is given (direct, worker) and the
 * pins a pidfd client keeps until the far side has pulled them. Each copy is
 * close-on-exec and numbered at or above the fd floor (fdFloor()), so it
 * never takes a number the caller has closed and may still name.
 */
import { fdList, native, type FdList } from '../native';

/**
 * dup(2)s every fd, or none, each numbered above the highest in the list
 * and at least `above` (a batch sent in pieces passes its highest + 1): a
 * closed fd later in the list or batch then fails with EBADF instead of
 * matching a fresh duplicate's number. The caller owns the copies;
 * `givenTo`: they are copies given to a command, under that closer owner
 * (native.dupAll's: each registered with its file, see HeldCopies.closeGiven).
 */
export function dupAll(fds: FdList, above?: number, givenTo?: number): number[] {
  return native.dupAll(fdList(fds), above, givenTo);
}
