/**
 * Socket files: the rules for taking a name on disk, shared by every socket
 * that binds one (the helper daemon's listener, a bound datagram socket).
 *
 * - bind(2) creates the file and never follows or replaces an existing name
 *   (sock_ops: the mode is then set through an O_PATH|O_NOFOLLOW handle).
 * - A name left by a dead process (nobody bound behind it: connect gives
 *   ECONNREFUSED) is stale and removed; a live one is never taken; anything
 *   that is not a socket is never unlinked.
 * - A private directory is a real directory (not a symlink), ours, 0700.
 */
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';

import { FdBridgeError, SystemError } from './errors';
import { native } from './native';

/**
 * Creates `dir` with mode 0700, or checks that an existing one is a real
 * directory (not a symlink), owned by us, with no group/other access.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory()) throw new FdBridgeError('ERR_FDBRIDGE_UNSAFE_PATH', `${dir} exists and is not a directory (a symlink?); refusing to use it`);
  if (st.uid !== uid) throw new FdBridgeError('ERR_FDBRIDGE_UNSAFE_PATH', `${dir} belongs to uid ${st.uid}, not ${uid}; refusing to use it`);
  if ((st.mode & 0o077) !== 0) {
    throw new FdBridgeError(
      'ERR_FDBRIDGE_UNSAFE_PATH',
      `${dir} has mode ${(st.mode & 0o777).toString(8)}; a socket's directory must be private (0700)`,
    );
  }
}

/**
 * Runs `bind` (which binds a socket of `type`, SOCK_*, at `path`); if the name exists
 * (EADDRINUSE), removes it when it is a stale socket file and binds again.
 * A socket that someone still has bound behind the name makes `inUse()` the
 * error; a name that is not a socket (a file, a symlink) is never removed.
 */
export function bindReplacingStale<T>(path: string, type: number, bind: () => T, inUse: () => Error): T {
  try {
    return bind();
  } catch (err) {
    if (!(err instanceof SystemError) || err.code !== 'EADDRINUSE') throw err;
  }
  const st = lstatSync(path);
  if (!st.isSocket()) {
    throw new FdBridgeError(
      'ERR_FDBRIDGE_UNSAFE_PATH',
      `${path} exists and is not a socket (${st.isSymbolicLink() ? 'a symlink' : 'a file'}); refusing to remove it`,
    );
  }
  // Only ECONNREFUSED means nobody is bound there. A connection, EPROTOTYPE
  // (a socket of another kind), EPERM (a datagram socket connected to
  // someone else) and EAGAIN (a full backlog) are someone alive; any other
  // error (EACCES...) is the caller's to see.
  let fd = -1;
  try {
    fd = native.connect(type, path, false);
  } catch (err) {
    if (!(err instanceof SystemError)) throw err;
    if (err.code === 'EPROTOTYPE' || err.code === 'EPERM' || err.code === 'EAGAIN') throw inUse();
    if (err.code !== 'ECONNREFUSED') throw err;
  }
  if (fd >= 0) {
    native.close(fd);
    throw inUse();
  }
  // Nobody is bound: a dead process's leftover. Remove it, then bind again
  // (a racing process that binds first makes this fail with EADDRINUSE, as
  // it should).
  const again = lstatSync(path);
  if (again.isSocket() && again.ino === st.ino && again.dev === st.dev) unlinkSync(path);
  return bind();
}

/** The identity of the socket file at `path`, to recognise it later (unlinkOwnSocketFile). */
export interface SocketFileIdentity {
  dev: number;
  ino: number;
}

export function socketFileIdentity(path: string): SocketFileIdentity {
  const st = lstatSync(path);
  return { dev: st.dev, ino: st.ino };
}

/** Removes the socket file at `path`, but only if the path still names that very socket (never someone else's file). */
export function unlinkOwnSocketFile(path: string, identity: SocketFileIdentity | undefined): void {
  if (!identity) return;
  try {
    const st = lstatSync(path);
    if (st.isSocket() && st.dev === identity.dev && st.ino === identity.ino) unlinkSync(path);
  } catch {
    // already removed
  }
}
