/**
 * fds the runtime opens lazily and owns for the life of an event loop: a
 * leak check that takes its baseline before they exist blames the test for
 * them. Known, on Node 20.20, 22.23 and 24.22 (libuv 1.46, 1.51, 1.52):
 *
 * - libuv's EMFILE reserve, `/dev/null` (or `/`), opened by the loop's first
 *   pipe, TCP or TTY handle (a spawned child's stdio, a socket,
 *   process.stdout when it is a pipe or a TTY but not a file) and kept to
 *   shed connections at EMFILE. Unwarmed, `fdbridge run > file` would blame
 *   the first spawn on a scenario where `| cat` or a terminal would not
 *   (stdout there has opened it already).
 * - libuv's inotify fd, opened by the loop's first fs.watch and kept after
 *   the last watcher is closed.
 * - process.stdout and process.stderr, made at first use: on a terminal,
 *   libuv reopens it (uv_tty_init: a non-blocking fd of its own, so as not
 *   to change the one shared with other processes), and either stream on a
 *   pipe or a terminal opens the EMFILE reserve. Node itself first touches
 *   process.stderr when it destroys a socket (net.Socket#_destroy), e.g. a
 *   spawned child's stdio pipe.
 * - process.stdin on a terminal, made at first use (`process.stdin.isTTY`
 *   is enough), reopened the same way. It is made paused: nothing reads
 *   the terminal until someone resumes it. On a pipe or a file it opens no
 *   fd, and making it would set O_NONBLOCK on a pipe shared with other
 *   processes: there it is left alone.
 *
 * Each event loop (the main thread's, every worker's) has its own. The
 * loop's epoll fd, its io_uring rings (when libuv uses io_uring), its
 * signal pipe and its async eventfd are opened with the loop, before any
 * user code, and a worker's go away with the worker: none is lazy.
 *
 * warmRuntimeFds() makes the calling thread's loop open the lazy ones now.
 * They stay open (libuv would have opened them at the first occasion anyway
 * and never closes them), so a baseline taken afterwards holds them and a
 * leak check never sets aside anything the test itself opened: a `/dev/null`
 * the test leaks is still a leak.
 */
import { isatty } from 'node:tty';
import { isMainThread } from 'node:worker_threads';

import { diffFdTables, openFdTable } from './fd';
import { native } from './native';

/** An fd the runtime opened for itself, and what it is. */
export interface RuntimeFd {
  fd: number;
  target: string;
  /** Who owns it and why it stays open. */
  owner: string;
}

function ownerOf(target: string): string {
  if (target === '/dev/null' || target === '/') {
    return "libuv's EMFILE reserve (opened by an event loop's first pipe, socket or TTY handle, kept for the loop's life)";
  }
  // Stryker disable next-line MethodExpression: startsWith('/dev/tty') as endsWith is the same for /dev/tty itself; not equivalent for a virtual console or serial line (/dev/tty1, /dev/ttyS0), which no test can stage (the /dev/pts/ one is killed)
  if (target.startsWith('/dev/pts/') || target.startsWith('/dev/tty')) {
    return "process.stdin, process.stdout or process.stderr on a terminal (libuv reopens the terminal for a non-blocking fd of its own; kept for the process's life)";
  }
  // Stryker disable next-line ConditionalExpression: forced true, a target none of the above would be called the inotify fd; not equivalent, but no runtime known opens another fd lazily for a test to see (forced false is killed)
  if (target === 'anon_inode:inotify') {
    return "libuv's inotify fd (opened by an event loop's first fs.watch, kept for the loop's life)";
  }
  // Stryker disable next-line StringLiteral: the owner of a target none of the above; not equivalent, but no runtime known opens another fd lazily for a test to see
  return "opened by the runtime's event loop for itself";
}

/**
 * Has this thread's event loop open the fds it would open lazily and keep
 * (see above), and returns those it opened now: empty when they were open
 * already. Cheap after the first call.
 */
export function warmRuntimeFds(): RuntimeFd[] {
  const before = openFdTable();
  // Made now if not yet. process.stdin only on a terminal, in the main
  // thread (a worker's is a stream from its parent, with no fd): see above.
  void process.stdout;
  void process.stderr;
  if (isMainThread && isatty(0)) void process.stdin;
  native.warmLoop();
  return diffFdTables(before, openFdTable()).opened.map(({ fd, target }) => ({ fd, target, owner: ownerOf(target) }));
}

/** `fd 18 -> /dev/null: libuv's EMFILE reserve (...)`, for notes and reports. */
export function describeRuntimeFd(r: RuntimeFd): string {
  return `fd ${r.fd} -> ${r.target}: ${r.owner}`;
}

/** An fd that a command's construction opened and left open, as its process's table named it then. */
export interface ConstructorFd {
  fd: number;
  target: string;
}

/**
 * Runs `construct` (loading a command's module and constructing it) and
 * returns what it made with the fds it opened and left open: those in this
 * process's table after it that were not before. fdbridge's own that the
 * command made (a DatagramSocket's socket) are among them, as they would be
 * in a leak check of a direct command. This thread's event loop opens
 * its lazy fds first (warmRuntimeFds), so a constructor that makes the
 * loop's first socket or pipe is not charged with libuv's EMFILE reserve.
 * Meant for a process that serves one command (child, pidfd, remote): there
 * nothing else runs while the constructor does, so a leak check whose
 * baseline is read after the connection is up can still charge these to the
 * constructor.
 */
export function fdsOpenedBy<T>(construct: () => T): { value: T; opened: ConstructorFd[] } {
  warmRuntimeFds();
  const before = openFdTable();
  const value = construct();
  const opened = diffFdTables(before, openFdTable()).opened.map(({ fd, target }) => ({ fd, target }));
  return { value, opened };
}
