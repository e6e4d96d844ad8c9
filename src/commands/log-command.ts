/**
 * The log command: a command whose log output the client can redirect into
 * a file, pipe or terminal it opened itself, wherever the command runs.
 */
import { openSync, closeSync, constants as fsConstants, readlinkSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

import { resolve } from 'node:path';

import type { CommandContext, ModuleCommandSpec } from '../command';
import type { Connection } from '../connection';
import { DatagramSocket, type Datagram } from '../datagram';
import { ClosedError, FdBridgeError, SystemError } from '../errors';
import { peerCloseOwner, setFdFlags } from '../fd';
import { native } from '../native';
import { distPath } from '../paths';
import { isRelativeSenderName } from '../socket';
import { invalidType, validateFdArgument } from '../validate';

/**
 * Writes all of `buf` into `fd` off the event loop and off libuv's pool: on
 * a thread of `owner`'s lane (native laneWrite), into a copy of the fd. The
 * fd is the client's (a pipe it may never read, a terminal, a socket, a
 * file on a hung filesystem): in a helper daemon a write that blocks the
 * loop would stall every client, and one that blocks a pool thread would
 * take one of the four that every client's lines (and the daemon's fs
 * calls) share. A lane's threads are its owner's alone (a uid's in a
 * helper daemon), so a client whose fd takes nothing holds back its own
 * uid's lines, nobody else's. A pipe or socket full is waited for in
 * poll, never by flipping O_NONBLOCK on the client's open file, and the
 * wait ends when the command closes (laneWriteCancel): ClosedError.
 */
function laneWrite(fd: number, buf: Buffer, owner: number, group: number): Promise<void> {
  return new Promise((written, reject) => {
    native.laneWrite(fd, buf, owner, group, (result) => {
      // Stryker disable next-line EqualityOperator: the result is the bytes written, and a line always holds its newline: never 0 (`< 0` is killed)
      if (result >= 0) return written();
      if (result === -osConstants.errno.ECANCELED) return reject(new ClosedError('log: the command was closed before the line was written (part of it may have been)'));
      reject(new SystemError(result, 'write'));
    });
  });
}

/**
 * Why the log may not go to `fd` (the command's, a client's file), or
 * undefined where it may (native laneTargetRefusal): "the fd is ..." A
 * file that takes no text is refused before any line goes there: an
 * eventfd takes each 8-byte write as a number added to its counter, and
 * the write that would overflow it blocks until someone reads it, which
 * nobody does when the command holds its only copy: the line's lane thread
 * would be held for good, and with it, once every thread of the lane is,
 * every later line of the client's uid.
 */
function logTargetRefusal(fd: number): string | undefined {
  const r = native.laneTargetRefusal(fd);
  if (r === 0) return undefined;
  let what: string;
  if (r === -osConstants.errno.EBADF) {
    what = 'not open for writing (O_RDONLY or O_PATH)';
  } else if (r === -osConstants.errno.EISDIR) {
    what = 'a directory';
  } else {
    // Stryker disable next-line StringLiteral: shown only where /proc/self/fd cannot be read, which no test stages (fdbridge reads it throughout)
    let target = 'unknown';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      // no /proc: the kind is left unsaid
    }
    what = `${escapeLogText(target)}, not a file that takes text`;
  }
  return `the fd is ${what}; the log goes to a regular file, a pipe or FIFO, a socket or a character device (a terminal, /dev/null) open for writing`;
}

/**
 * Characters that could make one logged line pass for several, or for
 * another's: C0 and C1 controls (newlines, carriage returns, terminal
 * escape sequences), DEL, the Unicode line and paragraph separators, the
 * bidirectional overrides, isolates and marks (text shown in another order
 * than written), and the backslash, so that an escape written here is never
 * taken for one the client wrote.
 */
const UNSAFE_IN_LOG = /[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * A client's line as the daemon's own log takes it: exactly one line (one
 * final newline dropped, every other unsafe character escaped as \xNN or
 * \uNNNN), marked with the client's pid and uid as SO_PEERCRED gave them.
 * The daemon's own lines never start "fdbridge helper: log from", so no
 * client can write one of them.
 */
export function daemonLogLine(peer: { pid: number; uid: number }, line: string): string {
  const body = escapeLogText(line.endsWith('\n') ? line.slice(0, -1) : line);
  return `fdbridge helper: log from pid ${peer.pid} (uid ${peer.uid}): ${body}\n`;
}

/**
 * `text` with every unsafe character (UNSAFE_IN_LOG) escaped as \xNN or
 * \uNNNN: one line, shown in the order it was written. For any line of a
 * log that may quote what a client sent.
 */
export function escapeLogText(text: string): string {
  return text.replace(UNSAFE_IN_LOG, (c) => {
    const code = c.charCodeAt(0);
    // Stryker disable next-line EqualityOperator: no unsafe character is 0xff (those up to 0xff end at 0x9f; `> 0xff` is killed)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

export class LogCommand {
  readonly context: CommandContext;
  /** Where log lines go: stderr of the command's process until redirected. */
  #fd = 2;
  #owned = false;
  #redirects: DatagramSocket | undefined;
  /**
   * The lines being written, in call order (each starts when the one before
   * has ended). Each goes to the log fd of the moment it starts: the lane
   * writes into a copy made then, so a log fd replaced is closed at once,
   * whatever lines wait (a client that redirects again and again while a
   * line is stuck leaves no fd behind).
   */
  #writes: Promise<void> = Promise.resolve();
  #closed = false;
  /** This command's writes, ended together by close() (native laneWriteCancel). */
  readonly #group = native.laneGroup();
  /**
   * Whose lane its lines are written on: in a helper daemon the client's
   * uid's (the daemon's owner of that uid's closes, peerCloseOwner),
   * so that one uid's blocked writes hold back only its own; 0 elsewhere
   * (the client is the only one).
   */
  readonly #owner: number;

  constructor(context: CommandContext) {
    this.context = context;
    this.#owner = context.transport === 'helper' && context.peer !== undefined ? peerCloseOwner(context.peer.uid) : 0;
  }

  /**
   * Sends the log to `fd`, an fd the client duplicated into this context with
   * dupFileDescriptor. The command adopts it (and closes it on close()).
   * An fd of a file that takes no text (an eventfd, timerfd, signalfd,
   * epoll fd, a directory, a block device) or not open for writing (O_PATH,
   * O_RDONLY) is refused: FdBridgeError ERR_FDBRIDGE_LOG_FD_REFUSED, the fd
   * closed, the log where it went.
   */
  redirectLogToFd(fd: number): void {
    validateFdArgument(fd, 'log.redirectLogToFd: fd');
    this.context.adoptFd(fd);
    // Looked at once adopted: the number is the client's then, not one of this process's own.
    const refused = logTargetRefusal(fd);
    if (refused !== undefined) {
      const notClosed = this.#closeClient([fd]);
      throw new FdBridgeError(
        'ERR_FDBRIDGE_LOG_FD_REFUSED',
        // Stryker disable next-line StringLiteral: a close refused here needs the number closed behind fdbridge's back by another thread between adoptFd and this close, in one turn of this thread, which no test stages
        `log.redirectLogToFd(${fd}): ${refused}; it was closed and the log goes where it went${notClosed ? `; ${notClosed.message}` : ''}`,
      );
    }
    const notClosed = this.#logTo(fd);
    // The log goes to `fd` now; the call says what it could not close.
    if (notClosed) throw notClosed;
  }

  /**
   * Binds a datagram socket at `path` (its directory private, see
   * DatagramSocket.bind) where a client sends the datagram "redirect" with
   * exactly one fd, from any socket, without a connection: the log goes to
   * that fd from then on. A bound sender is answered "ok"
   * (or "refused: ..." for anything else, whose fds are closed, and for an
   * fd redirectLogToFd refuses: "refused: the fd is ..."). Returns
   * the path; the socket closes with the command. Refused to a client of
   * another uid than this process's (root excepted). `path` is a path: any
   * other value (an `{ abstract: name }` address among them, which has no
   * file permissions, so that any user could redirect the log to an fd of
   * theirs and read the client's lines) is a TypeError, nothing bound.
   */
  listenForRedirects(path: string): string {
    if (typeof path !== 'string' || path.length === 0) throw invalidType('log.listenForRedirects: path', 'a non-empty path', path);
    // The directory and the socket are made as this process's user: a
    // client of another uid (a helper daemon's --allow-uid) must not choose
    // where, unless it is root (it could anyway).
    const peer = this.context.peer;
    const uid = process.getuid?.();
    if (peer !== undefined && peer.uid !== uid && peer.uid !== 0) {
      throw new Error(`listenForRedirects: the directory and socket would be made as uid ${String(uid)}, which a client of uid ${peer.uid} may not choose a path for`);
    }
    if (this.#redirects) throw new Error(`listenForRedirects: already listening at ${String(this.#redirects.address)}`);
    // Bound as this method runs, before any await: what it receives is the
    // command's client's (client-fds.ts), which #onRedirect and #logTo
    // close with closeClientFds.
    const sock = DatagramSocket.bind(path);
    sock.unref();
    // No datagram: a truncated one (its fds already closed) or a socket error; nothing to answer.
    sock.setMessageHandler((_err, d) => d && this.#onRedirect(sock, d));
    this.#redirects = sock;
    return path;
  }

  #onRedirect(sock: DatagramSocket, d: Datagram): void {
    const ok = d.data.toString() === 'redirect' && d.fds.length === 1;
    const refused = ok ? logTargetRefusal(d.fds[0]!) : undefined;
    const notClosed = ok && refused === undefined ? this.#logTo(d.fds[0]!) : this.#closeClient(d.fds);
    if (d.from === null || isRelativeSenderName(d.from)) return; // an unbound sender, or one bound at a relative path, cannot be answered
    const answer =
      (!ok
        ? `refused: expected "redirect" with one fd, got ${d.data.length} bytes and ${d.fds.length} fd(s)`
        : refused !== undefined
          ? `refused: ${refused}`
          : 'ok') + (notClosed ? `; ${notClosed.message}` : '');
    // Never wait on a client that does not read its answers: it has its own deadline.
    sock.sendTo(d.from, Buffer.from(answer), [], { whenFull: 'fail' }).catch(() => undefined);
  }

  /** Sends the log to `fd` and closes the log fd before it; returns what it could not close (#closeClient). */
  #logTo(fd: number): Error | undefined {
    const previous = this.#owned ? this.#fd : -1;
    this.#fd = fd;
    this.#owned = true;
    // closeClientFds, not fs.closeSync: in a worker, Node tracks the fds fs
    // opened and warns about closing one it did not open. A line being
    // written has a copy of its own (laneWrite).
    // The same number: the previous fd was closed behind fdbridge's back and
    // this one took its number, so there is nothing of the previous to close.
    return previous >= 0 && previous !== fd ? this.#closeClient([previous]) : undefined;
  }

  /**
   * Closes `fds`, the client's (closeClientFds), each on its own so that
   * one refused leaves none of the others open; returns the refusal (a
   * SystemError EBADF naming each number refused), never throws. A refused
   * number is not the command's any more: whoever closed its fd behind
   * fdbridge's back (other code of the process) closed it, and whatever
   * holds the number now is not the command's to close. The command
   * forgets it and says so to its caller (the call's error, a redirect's
   * answer, close()'s error): a refusal thrown out of a datagram's handler
   * would end the process, a helper daemon shared by every client.
   */
  #closeClient(fds: readonly number[]): Error | undefined {
    const refused: string[] = [];
    for (const fd of fds) {
      try {
        // Resolves once closed or given up on (HeldCopies.settled); a host's own close may reject.
        this.context.closeClientFds([fd]).catch(() => undefined);
      } catch (err) {
        refused.push((err as Error).message);
      }
    }
    if (refused.length === 0) return undefined;
    return new SystemError(osConstants.errno.EBADF, 'closeClientFds', `log: ${refused.join('; ')}`);
  }

  /**
   * Appends one line to the log; resolves once it is written (lines are
   * written in call order, each into the log fd of the moment its turn
   * comes: a redirect made while lines wait applies to them). In a helper daemon, before the client
   * redirected the log, the log is the daemon's own stderr, shared by every
   * client and by the daemon's own lines: a client of the daemon's uid (or
   * root) writes there as one line marked with its pid and uid, its control
   * characters escaped (see daemonLogLine), and a client of another uid is
   * refused (ERR_FDBRIDGE_LOG_NOT_REDIRECTED, nothing written). The line
   * counts against what its client's uid may have waiting to be written
   * (context.holdLogBytes) from this call until it is written or has
   * failed: past that it is refused (QuotaExceededError 'uidLogBytes'),
   * nothing of it queued, no copy of the fd made.
   */
  log(line: string): Promise<void> {
    if (typeof line !== 'string') return Promise.reject(invalidType('log.log: line', 'a string', line));
    let text = line.endsWith('\n') ? line : `${line}\n`;
    if (!this.#owned && this.context.transport === 'helper') {
      const peer = this.context.peer;
      const uid = process.getuid?.();
      if (peer === undefined || (peer.uid !== uid && peer.uid !== 0)) {
        return Promise.reject(
          new FdBridgeError(
            'ERR_FDBRIDGE_LOG_NOT_REDIRECTED',
            `log: this helper daemon's own log (uid ${String(uid)}) takes no lines from a client of uid ${String(peer?.uid)}; ` +
              'redirect the log first (redirectLogToFd, or fdbridge log --logfile)',
          ),
        );
      }
      text = daemonLogLine(peer, line);
    }
    const buf = Buffer.from(text);
    let giveBack: () => void;
    try {
      giveBack = this.context.holdLogBytes(buf.length);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const written = this.#writes
      .then(() => {
        if (this.#closed) throw new ClosedError('log: the command was closed before the line was written');
        return laneWrite(this.#fd, buf, this.#owner, this.#group);
      })
      .finally(giveBack);
    this.#writes = written.catch(() => undefined);
    return written;
  }

  /** Where the command runs (for tests and diagnostics). */
  where(): { transport: string; pid: number; threadId: number } {
    return { transport: this.context.transport, pid: this.context.pid, threadId: this.context.threadId };
  }

  /**
   * Ends the lines not written yet (ClosedError: one waiting for room in a
   * pipe or socket at once, one inside a write into another kind of file
   * when that write returns) and closes the log fds it adopted, at once:
   * a line handed to its lane writes into a copy of its own, and none is
   * handed over from here on. A write that cannot be ended (a terminal
   * whose output is stopped) does not keep the event loop alive: a
   * daemon told to stop exits, and the process's exit ends the write.
   */
  close(): void {
    this.#closed = true;
    native.laneWriteCancel(this.#group);
    this.#redirects?.close();
    this.#redirects = undefined;
    if (this.#owned) {
      // Stryker disable next-line BooleanLiteral: `#owned` is read again only by a second close() or a call after close(), and neither happens: CommandHost.close() runs the command's close() once and nothing calls it by name (callableMethod), a server serves nothing after CLOSE, and a closed connection calls nothing
      this.#owned = false;
      // Everything else is closed by now; the host reports what was not.
      const notClosed = this.#closeClient([this.#fd]);
      if (notClosed) throw notClosed;
    }
  }
}

/** The spec naming LogCommand, for `connect(transport, { command: LOG_COMMAND })`. */
export const LOG_COMMAND: ModuleCommandSpec = { name: 'log', module: distPath('src/commands/log-command.js'), export: 'LogCommand' };

/** What a `--logfile` argument means. */
export type LogTarget =
  | { kind: 'stdout' }
  | { kind: 'stderr' }
  | { kind: 'file'; path: string; truncate: boolean };

/**
 * Parses `--logfile [!]path | - | -stdout | -stderr`: `-` and `-stdout` mean
 * stdout, `-stderr` stderr, `!path` truncates the file, a plain path appends.
 * Each form is tested in turn, one `else` after another: a `-stderr` that
 * fell through to the path case would open a file named "-stderr"
 * (reproduce-seed-stderr-fallthrough).
 */
export function parseLogfileArgument(argument: string): LogTarget {
  if (typeof argument !== 'string' || argument.length === 0) {
    throw new TypeError('--logfile needs an argument: [!]path, -, -stdout or -stderr');
  }
  if (argument === '-stderr') return { kind: 'stderr' };
  if (argument === '-' || argument === '-stdout') return { kind: 'stdout' };
  if (argument.length > 1 && argument.startsWith('!')) {
    return { kind: 'file', path: resolve(argument.slice(1)), truncate: true };
  }
  return { kind: 'file', path: resolve(argument), truncate: false };
}

/** Whether `path` names a FIFO now (following symlinks); false where nothing, or nothing readable, is there. */
function isFifo(path: string): boolean {
  // Stryker disable BlockStatement,BooleanLiteral: where stat fails, a path taken for a FIFO is opened the same but O_NONBLOCK (a new file, which setFdFlags makes blocking again) or fails the same way, never with ENXIO; the catch emptied returns undefined, as false (the try block emptied hangs on a FIFO: detected)
  try {
    return statSync(path).isFIFO();
  } catch {
    return false;
  }
}
// Stryker restore BlockStatement,BooleanLiteral

/**
 * The `--logfile` option, client side: opens the target here, duplicates it
 * into the command's context and redirects the command's log there. The file
 * this opened is closed again; stdout and stderr are never closed.
 */
export async function logRedirectOption(connection: Connection, argument: string): Promise<void> {
  const target = parseLogfileArgument(argument);
  let fd: number;
  let opened = false;
  if (target.kind === 'stdout') {
    fd = 1;
  } else if (target.kind === 'stderr') {
    fd = 2;
  } else {
    // A FIFO is opened with O_NONBLOCK: a blocking open waits, without end,
    // for a reader, this one fails at once with ENXIO when there is none.
    // Any other file as before (O_NONBLOCK would make an open that waits for
    // a lease to be broken fail with EWOULDBLOCK instead).
    const fifo = isFifo(target.path);
    const flags =
      fsConstants.O_WRONLY | fsConstants.O_CREAT | (fifo ? fsConstants.O_NONBLOCK : 0) | (target.truncate ? fsConstants.O_TRUNC : fsConstants.O_APPEND);
    try {
      fd = openSync(target.path, flags, 0o664);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (!fifo || e.code !== 'ENXIO' || e.errno === undefined) throw err;
      throw new SystemError(e.errno, 'open', `--logfile ${target.path}: it is a FIFO that nobody reads (ENXIO; open it for reading first, e.g. \`cat ${target.path}\`)`, { cause: err });
    }
    opened = true;
    if (fifo) {
      try {
        // The flag is the open file's, which the command's copy shares: its
        // writes block, as to any file, while a reader is behind.
        setFdFlags(fd, { nonblock: false });
      } catch (err) {
        closeSync(fd);
        throw err;
      }
    }
  }
  try {
    const remote = await connection.dupFileDescriptor(fd);
    await connection.call('redirectLogToFd', remote);
  } finally {
    if (opened) closeSync(fd);
  }
}
