/**
 * What a relay can make of a client's fd on the remote transport: which
 * way its bytes go and what the command's end over there is. An fd cannot
 * cross machines; a byte stream can. Kinds with no byte stream to relay
 * (a listening socket, a directory, an eventfd, a pidfd, ...) are refused
 * with UnsupportedError naming the kind.
 */
import { fstatSync, readFileSync, readlinkSync } from 'node:fs';

import { errnoName, SystemError, UnsupportedError } from '../errors';
import { fdIdentity, type FileType } from '../fd';
import { constants, native } from '../native';
import type { StreamMode } from './remote-channel';

const O_ACCMODE = 0o3;
const O_WRONLY = 0o1;
const O_RDWR = 0o2;
const O_APPEND = 0o2000;
const O_PATH = 0o10000000;

/** A regular file larger than this is not copied for reading (the copy lives in the remote's memory). */
export const MAX_COPY_BYTES = 256 * 1024 * 1024;

export interface RelayPlan {
  mode: StreamMode;
  /** In words, for errors and the command's diagnostics: 'pipe (read end)', 'regular file (append)'. */
  kind: string;
  /**
   * How the client reaches the fd's bytes:
   * - 'reopen': a new open file description of the same pipe, FIFO or
   *   terminal (open of /proc/self/fd/N), so that the O_NONBLOCK the relay
   *   sets is not the caller's;
   * - 'dup': a duplicate (sockets, which cannot be reopened: the relay's
   *   O_NONBLOCK is then shared with the caller's fd);
   * - 'file': a duplicate read or written at the file's own offset with
   *   positioned or plain calls on the thread pool (regular files, character
   *   devices; they ignore O_NONBLOCK).
   */
  access: 'reopen' | 'dup' | 'file';
  /** Open flags for 'reopen' (O_RDONLY, O_WRONLY or O_RDWR). */
  openFlags?: number;
  /** copy: the client's offset (the command's fd starts there) and the file's size. */
  offset?: number;
  size?: number;
}

/** The status flags of `fd` (O_ACCMODE, O_APPEND, ...), from /proc/self/fdinfo. */
export function statusFlags(fd: number): number {
  // Stryker disable next-line StringLiteral: with no encoding readFileSync gives a Buffer, which RegExp.exec reads as the same text
  const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  // Stryker disable next-line Regex: the flags line is `flags:`, one tab, the octal digits, the line's end: without an anchor, or with \s for \s+, the same line matches
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  // Stryker disable next-line ConditionalExpression,StringLiteral: every fdinfo has a flags line (proc(5)); without the check m[1] throws (a TypeError): a throw all the same
  if (!m) throw new Error(`/proc/self/fdinfo/${fd} has no flags line`);
  return parseInt(m[1] as string, 8);
}

function offsetOf(fd: number): number {
  // Stryker disable next-line Regex,StringLiteral: the pos line is `pos:`, one tab, the digits, the line's end (without an anchor, or with \s for \s+, the same line matches); with no encoding readFileSync gives a Buffer, read as the same text
  const m = /^pos:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** What /proc calls an fd with no file type of its own: 'eventfd', 'pidfd', 'eventpoll', 'inotify', ... */
function anonKind(fd: number): string {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return 'unknown';
  }
  const m = /^anon_inode:\[?([^\]]+)\]?$/.exec(target) ?? /^(\w+):\[/.exec(target);
  return m ? (m[1] as string) : target;
}

const NAMES: Record<FileType, string> = {
  file: 'regular file',
  directory: 'directory',
  pipe: 'pipe',
  socket: 'socket',
  char: 'character device',
  block: 'block device',
  symlink: 'symbolic link (O_PATH)',
  unknown: 'fd',
};

function refuse(operation: string, kind: string, why: string): never {
  throw new UnsupportedError(`${operation} failed on the remote transport: ${kind} cannot be relayed (${why})`);
}

/**
 * The refusal of a file open for reading that held more than MAX_COPY_BYTES
 * by the time it was copied (it grew after planRelay); `operation` names the
 * duplication as the caller asked for it ('dupFileDescriptor(5)',
 * 'dupFileDescriptors (fd 5)').
 */
export function copyOverflowError(operation: string): UnsupportedError {
  return new UnsupportedError(
    `${operation} failed on the remote transport: a regular file that grew past ${MAX_COPY_BYTES} bytes while it was copied cannot be relayed ` +
      `(a file open for reading is copied, and the copy is limited to ${MAX_COPY_BYTES} bytes)`,
  );
}

/**
 * The failure of a copy whose file could not be read to its end: `err`, the
 * read's own error (EIO from a failing disk or /proc/self/mem, EINVAL from
 * a namespace fd; libuv's, so it has its errno). What was sent is not the file.
 * `operation` names the duplication, as in copyOverflowError.
 */
export function copyReadError(operation: string, err: NodeJS.ErrnoException): SystemError {
  const errno = err.errno as number;
  return new SystemError(
    errno,
    'read',
    `${operation} failed on the remote transport: the file could not be read to its end for its copy (read: ${errnoName(errno)})`,
    { cause: err },
  );
}

/**
 * How `fd` (borrowed, validated) is relayed, or UnsupportedError naming its
 * kind. EBADF for a closed fd, as on every transport.
 */
export function planRelay(fd: number, operation = `dupFileDescriptor(${fd})`): RelayPlan {
  const id = fdIdentity(fd); // EBADF for a closed fd
  const flags = statusFlags(fd);
  const acc = flags & O_ACCMODE;
  const readable = acc !== O_WRONLY;
  const writable = acc === O_WRONLY || acc === O_RDWR;
  if ((flags & O_PATH) !== 0) refuse(operation, `an O_PATH fd (${NAMES[id.type]})`, 'it opens nothing that can be read or written');
  switch (id.type) {
    case 'pipe': {
      const end = acc === O_RDWR ? 'read-write' : readable ? 'read end' : 'write end';
      return {
        mode: acc === O_RDWR ? 'both' : readable ? 'up' : 'down',
        kind: `pipe (${end})`,
        access: 'reopen',
        openFlags: acc,
      };
    }
    case 'socket': {
      // Asked of the socket itself (SO_TYPE, SO_ACCEPTCONN), never of
      // /proc/net's text, where a name anyone binds can forge a record.
      const { type, listening } = native.socketShape(fd);
      if (type !== constants.SOCK_STREAM) {
        refuse(operation, `a ${type === constants.SOCK_DGRAM ? 'datagram (SOCK_DGRAM)' : type === constants.SOCK_SEQPACKET ? 'SOCK_SEQPACKET' : `type ${type}`} socket`, 'a byte stream loses its message boundaries');
      }
      if (listening) refuse(operation, 'a listening socket', 'it carries connections, not bytes');
      return { mode: 'both', kind: 'stream socket', access: 'dup' };
    }
    case 'file': {
      if (readable) {
        // Open for reading (O_RDWR too: a memfd, say): a read-only copy.
        // The command's writes fail there (EBADF) rather than vanish.
        const size = fstatSync(fd).size;
        if (size > MAX_COPY_BYTES) refuse(operation, `a regular file of ${size} bytes`, `a file open for reading is copied, and the copy is limited to ${MAX_COPY_BYTES} bytes`);
        return { mode: 'copy', kind: `regular file (${acc === O_RDWR ? 'read-write, ' : ''}given as a read-only copy)`, access: 'file', offset: offsetOf(fd), size };
      }
      return { mode: 'down', kind: `regular file (${(flags & O_APPEND) !== 0 ? 'append' : 'write'})`, access: 'file' };
    }
    case 'char':
      if (!writable) refuse(operation, 'a character device open for reading', 'only writes to a terminal or device are relayed');
      return { mode: 'down', kind: 'character device (write)', access: 'file' };
    case 'directory':
      return refuse(operation, 'a directory', 'it has no bytes to relay');
    case 'block':
      return refuse(operation, 'a block device', 'it is not a byte stream');
    default: {
      const kind = anonKind(fd);
      return refuse(operation, `an fd of kind ${kind}`, 'it has no byte stream to relay');
    }
  }
}
