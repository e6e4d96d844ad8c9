/**
 * A net.Socket on an fd fdbridge holds for itself (registered: a socketpair
 * end of its own, a copy above the fd floor; see native/fd_ops.h,
 * OwnedFdsLock).
 */
import { Socket } from 'node:net';

import { fdIdentity } from '../fd';
import { native } from '../native';

/**
 * A stream on `fd` (owned: libuv closes it, when the stream is destroyed or
 * ends by itself), which leaves fdbridge's registry once it is closed.
 *
 * The order is the one FdClose keeps: closed first, unregistered after.
 * Until its close the number is ours, and a caller who names it (a number
 * it closed and still names, which past the floor can be ours), on this
 * thread or another (a worker's command, a synchronous duplication), must be
 * refused with EBADF, never handed our socket: unregistering before the
 * close would open that window, however short. libuv closes the fd inside
 * destroy() and reports it with 'close' a loop turn later; in between the
 * number is free and another fd may take it. The caller's is then refused
 * once, as if closed, until 'close' (the price FdClose pays too, and only
 * past the floor); a new fd of ours (a copy above the floor takes the lowest
 * number free there, which this one just freed) keeps its registration:
 * 'close' removes only the registration this fd had (native.registration),
 * never the one made for the number since.
 */
export function ownedStream(fd: number, ways: { readable: boolean; writable: boolean }): Socket {
  // libuv's to close from here on, also when this thread's environment ends
  // before 'close' (a terminated worker: its teardown only unregisters it).
  // Its file first: a number that is not open (EBADF) throws before the
  // registration is marked as the stream's.
  const { dev, ino } = fdIdentity(fd);
  const registration = native.runtimeCloses(fd);
  const socket = new Socket({ fd, readable: ways.readable, writable: ways.writable, allowHalfOpen: true });
  // libuv's close says nothing of a number someone else closed first (its
  // EBADF is not reported): looked at just before it (_destroy closes the
  // handle), so that a leak check blames that close on the code under test
  // (closedByOther) instead of setting the fd aside as one fdbridge closed.
  const destroy = socket._destroy.bind(socket);
  socket._destroy = (err, callback) => {
    // Stryker disable next-line ConditionalExpression: the registration check forced true: native.foundClosedByOther does nothing for a registration the number no longer has (a new fd of ours there keeps its own)
    if (native.registration(fd) === registration && !holds(fd, dev, ino)) native.foundClosedByOther(fd, registration);
    // libuv closes the number now: a new fd of ours may take it from here on
    // (while the stream was open, one was moved off it: the number was the stream's to close).
    native.runtimeClosing(fd, registration);
    destroy(err, callback);
  };
  socket.once('close', () => native.disown(fd, registration));
  return socket;
}

/** Whether `fd` is open on the file `dev`/`ino`. */
function holds(fd: number, dev: bigint, ino: bigint): boolean {
  try {
    const now = fdIdentity(fd);
    return now.dev === dev && now.ino === ino;
  } catch {
    return false; // closed (EBADF)
  }
}
