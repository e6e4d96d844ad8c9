/**
 * Socket files: the rules for taking a name on disk, shared by every socket
 * that binds one (the helper daemon's listener, a bound datagram socket).
 *
 * - bind(2) creates the file and never follows or replaces an existing name
 *   (sock_ops: the mode is then set through an O_PATH|O_NOFOLLOW handle).
 * - A name left by a dead process (nobody bound behind it: connect gives
 *   ECONNREFUSED and no socket of this namespace is bound to that file) is stale
 *   and removed; a live one is never taken; anything that is not a socket
 *   is never unlinked.
 * - A private directory is a real directory (not a symlink), ours, 0700.
 * - A socket's directory is writable by nobody but us (checkSocketDirectory).
 */
import { lstatSync, mkdirSync, readFileSync, realpathSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { FdBridgeError, SystemError } from './errors';
import { native } from './native';

function unsafe(message: string): FdBridgeError {
  return new FdBridgeError('ERR_FDBRIDGE_UNSAFE_PATH', message);
}

/**
 * Checks that nobody but us (and root) can replace `dir` or what is in it,
 * as OpenSSH's StrictModes does for ~/.ssh: `dir` and every directory above
 * it belong to us or to root; `dir` itself is writable by nobody else; a
 * directory above it writable by others must be sticky (as /tmp is: others
 * may add entries there but not rename or remove ours). A symlink on the
 * way must belong to us or root too (in a sticky directory nobody else can
 * repoint it). Another user who can write into the socket's directory could
 * otherwise swap the socket for one of theirs between our bind() and a
 * client's connect().
 */
export function checkSocketDirectory(dir: string): void {
  const uid = process.getuid?.() ?? 0;
  const trusted = (owner: number): boolean => owner === uid || owner === 0;
  // The path as written: a symlink component is followed by bind() and connect().
  const absolute = resolve(dir);
  try {
    lstatSync(absolute);
  } catch (err) {
    // No such directory: nothing there to take over, and bind() says ENOENT.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (let d = absolute; ; d = dirname(d)) {
    const st = lstatSync(d);
    if (st.isSymbolicLink() && !trusted(st.uid)) throw unsafe(`${d} is a symlink of uid ${st.uid}; refusing a socket path through it`);
    if (d === '/') break;
  }
  const real = realpathSync(absolute);
  for (let d = real; ; d = dirname(d)) {
    const st = lstatSync(d);
    if (!st.isDirectory()) throw unsafe(`${d} is not a directory`);
    if (!trusted(st.uid)) throw unsafe(`${d} belongs to uid ${st.uid}, neither us (${uid}) nor root: refusing a socket under it`);
    const othersWrite = (st.mode & 0o022) !== 0;
    if (othersWrite && d === real) {
      throw unsafe(`${d} has mode ${(st.mode & 0o7777).toString(8)}: others can write there and replace the socket; use a directory only you can write`);
    }
    if (othersWrite && (st.mode & 0o1000) === 0) {
      throw unsafe(`${d} has mode ${(st.mode & 0o7777).toString(8)}: others can write there (and it is not sticky), so they can replace what is below it`);
    }
    if (d === '/') break;
  }
}

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
    // A probe of ours, closed at once: numbered where no caller's stale fd can be.
    fd = native.connect(type, path, false, true);
  } catch (err) {
    if (!(err instanceof SystemError)) throw err;
    if (err.code === 'EPROTOTYPE' || err.code === 'EPERM' || err.code === 'EAGAIN') throw inUse();
    if (err.code !== 'ECONNREFUSED') throw err;
  }
  // Stryker disable next-line EqualityOperator: the probe is fdbridge's own, numbered at or above fdFloor(), never 0: `fd > 0` is the same test (`fd < 0` is killed)
  if (fd >= 0) {
    native.close(fd);
    throw inUse();
  }
  // A socket bound there and not listening yet (a daemon between its bind
  // and its listen) refuses connections too, and its process holds the name.
  if (boundInThisNamespace(path)) throw inUse();
  // Nobody is bound: a dead process's leftover. Remove it, then bind again
  // (a racing process that binds first makes this fail with EADDRINUSE, as
  // it should).
  if (isThatSocketFile(lstatSync(path), st)) unlinkSync(path);
  return bind();
}

/**
 * True when a socket of this network namespace is bound to the socket file
 * at `path`, listening or not, however it was bound (this path, a relative
 * one from another working directory, one through a symlink): asked of the
 * kernel by the file's identity (native.unixFileBound, unix_diag), which no
 * socket's name can forge. A dead process's socket is gone from there once
 * its last fd is closed. A socket bound by a process of another network
 * namespace is not seen (the dump, as /proc/net/unix, is per namespace);
 * the probe's connect reaches it once it listens.
 */
function boundInThisNamespace(path: string): boolean {
  const st = lstatSync(path, { bigint: true });
  // The kernel reports the device of the filesystem the socket was bound on
  // (its superblock); stat gives that for the file on most filesystems, but
  // on an overlayfs over layers of different filesystems a non-directory
  // shows its layer's device and the directory shows the overlay's.
  const devs = [Number(st.dev), statSync(dirname(resolve(path))).dev];
  try {
    return native.unixFileBound(devs, Number(st.ino & 0xffffffffn));
  } catch (err) {
    if (!(err instanceof SystemError) || err.syscall !== 'sock_diag') throw err;
  }
  // No answer from the kernel: a kernel without unix_diag (CONFIG_UNIX_DIAG
  // off), or without NETLINK_SOCK_DIAG (gVisor), or a seccomp filter or an
  // LSM that refuses it. /proc/net/unix is read instead, where a name with
  // a newline can print a forged record (keeping a stale file, never
  // removing a live one).
  return listedInProcNetUnix(path);
}

/**
 * True when /proc/net/unix lists a socket bound at `path` by that name
 * (boundInThisNamespace's fallback).
 */
function listedInProcNetUnix(path: string): boolean {
  let table: string;
  // Stryker disable BlockStatement: the catch emptied leaves `table` undefined, which RegExp.test reads as "undefined", matching no record: false as well (the try's block emptied does not compile)
  try {
    table = readFileSync('/proc/net/unix', 'utf8');
  } catch {
    return false;
  }
  // Stryker restore BlockStatement
  // The kernel (unix_seq_show) prints "%pK: %08X %08X %08X %04X %02X %5lu", then a space and the
  // name as it was bound, byte for byte (spaces, tabs and newlines too), then "\n": so the name is
  // matched whole after that prefix, never split on whitespace. A name bound relative to another
  // working directory, or through a symlink, is not recognised. An abstract name is printed as
  // "@name": a relative path that starts with "@" may match one, which only keeps a stale file.
  return [path, resolve(path)].some((name) => new RegExp(`^[0-9a-f]+: (?:[0-9A-F]+ ){5} *[0-9]+ ${name.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}$`, 'm').test(table));
}

/** The identity of the socket file at `path`, to recognise it later (unlinkOwnSocketFile). */
export interface SocketFileIdentity {
  dev: number;
  ino: number;
}

/** True when `st` is a socket file and the very one `identity` names (its device and inode number). */
function isThatSocketFile(st: Stats, identity: SocketFileIdentity): boolean {
  return st.isSocket() && st.dev === identity.dev && st.ino === identity.ino;
}

export function socketFileIdentity(path: string): SocketFileIdentity {
  const st = lstatSync(path);
  return { dev: st.dev, ino: st.ino };
}

/** Removes the socket file at `path`, but only if the path still names that very socket (never someone else's file). */
export function unlinkOwnSocketFile(path: string, identity: SocketFileIdentity | undefined): void {
  if (!identity) return;
  try {
    if (isThatSocketFile(lstatSync(path), identity)) unlinkSync(path);
  } catch {
    // already removed
  }
}
