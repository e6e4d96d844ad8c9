/**
 * File-descriptor helpers. A raw fd number has one owner at a time; `OwnedFd`
 * makes the owner visible in the type.
 */
import { closeSync, openSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { fdList, native, type FileKey, type NativeHold } from './native';
import { ClosedError, ownFdRefusal, SECOND_OWNER, SystemError } from './errors';

/** Identity of an open file description: (dev, ino) plus the file type. */
export interface FdIdentity {
  dev: bigint;
  ino: bigint;
  type: FileType;
}

export type FileType = 'file' | 'directory' | 'pipe' | 'socket' | 'char' | 'block' | 'symlink' | 'unknown';

const S_IFMT = 0o170000;
const TYPES: Record<number, FileType> = {
  0o100000: 'file',
  0o040000: 'directory',
  0o010000: 'pipe',
  0o140000: 'socket',
  0o020000: 'char',
  0o060000: 'block',
  0o120000: 'symlink',
};

/** The largest fd number: an fd is a C int. */
export const MAX_FD = 0x7fffffff;

/**
 * An fd argument: a TypeError at once for anything but a non-negative
 * integer, one past MAX_FD included (a TypeError too, so that every entry
 * of a list that cannot be an fd fails the same way on every transport).
 */
export function validateFd(fd: unknown, what = 'fd'): number {
  // Stryker disable next-line ConditionalExpression: `typeof fd !== 'number'` forced false: Number.isInteger is false for anything but a number, so the next test refuses it all the same (the typeof is there for TypeScript's narrowing)
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new TypeError(`${what} must be a non-negative integer, not ${String(fd)}`);
  }
  if (fd > MAX_FD) throw new TypeError(`${what} must be a non-negative integer up to 2^31 - 1 (an fd number), not ${fd}`);
  return fd;
}

/** Every fd of a list argument, as validateFd (named `fds[i]` in the error). */
export function validateFds(fds: readonly unknown[]): void {
  // By index, not forEach: forEach skips a sparse array's holes, which read
  // as undefined and must be refused as it is (a list whose length alone
  // was set to 2^31 would otherwise be walked and batched by the transport).
  for (let i = 0; i < fds.length; i++) validateFd(fds[i], `fds[${i}]`);
}

/**
 * A list of fds to close (closeFds', closeClientFds'): every entry an fd
 * number (validateFds), each named once. A number named twice would be
 * closed twice, one close after the other: after the first, another fd
 * (another thread's, another connection's copy, the program's file) can
 * take the number, and the second close would close it. TypeError naming
 * `operation`, nothing closed.
 */
export function validateCloseList(fds: readonly unknown[], operation: string): void {
  validateFds(fds);
  const first = new Map<number, number>();
  for (let i = 0; i < fds.length; i++) {
    const fd = fds[i] as number;
    const at = first.get(fd);
    if (at !== undefined) {
      throw new TypeError(
        `${operation}: fds[${i}] is fd ${fd} again (fds[${at}]): each fd is closed once, since a second close of the number ` +
          'could close another fd that took it after the first; nothing was closed',
      );
    }
    first.set(fd, i);
  }
}

/** fstat identity of `fd` (borrowed). */
export function fdIdentity(fd: number): FdIdentity {
  const id = native.identity(fd);
  return { dev: id.dev, ino: id.ino, type: TYPES[id.mode & S_IFMT] ?? 'unknown' };
}

/** The file at `fd` now (device and inode, fdIdentity's), undefined for a free number. */
export function fileAt(fd: number): FileKey | undefined {
  try {
    const id = native.identity(fd);
    return { dev: id.dev, ino: id.ino };
  } catch {
    return undefined;
  }
}

/** Whether `fd`'s number holds `file` now (a free number holds none). */
export function holdsFile(fd: number, file: FileKey): boolean {
  const now = fileAt(fd);
  return now !== undefined && now.dev === file.dev && now.ino === file.ino;
}

/** True when both fds refer to the same file (same st_dev and st_ino). */
export function sameFile(a: number, b: number): boolean {
  const x = native.identity(a);
  const y = native.identity(b);
  return x.dev === y.dev && x.ino === y.ino;
}

export interface FdFlags {
  cloexec: boolean;
  nonblock: boolean;
}

/** Whether `fd` is an open number now (F_GETFD succeeds). */
export function isFdOpen(fd: number): boolean {
  try {
    native.getFlags(fd);
    return true;
  } catch {
    return false;
  }
}

/** FD_CLOEXEC and O_NONBLOCK of `fd` (borrowed). */
export function fdFlags(fd: number): FdFlags {
  const bits = native.getFlags(fd);
  return { cloexec: (bits & 1) !== 0, nonblock: (bits & 2) !== 0 };
}

/**
 * Sets FD_CLOEXEC and/or O_NONBLOCK of `fd` (borrowed); a flag left out
 * stays as it is.
 */
export function setFdFlags(fd: number, flags: Partial<FdFlags>): void {
  if (flags.cloexec !== undefined) native.setCloexec(fd, flags.cloexec);
  if (flags.nonblock !== undefined) native.setNonblock(fd, flags.nonblock);
}

/**
 * Numbers a native call made, handed on to the caller: from here they are
 * the caller's, no longer kept by this thread's environment (native.handOver).
 * The main thread's environment keeps none (it ends with the process), so
 * there is nothing to tell it: a received message's fds cost no call there.
 */
export function handedOver<T extends number | readonly number[]>(fds: T): T {
  // Stryker disable next-line ArrayDeclaration,BooleanLiteral,ConditionalExpression,EqualityOperator,StringLiteral: run in worker threads, which load the compiled dist/, out of per-test coverage's sight: test/unit/fd.test.ts's worker test fails with the check inverted, or the number not wrapped in a list or given as an empty one; forced true it is the same, the main thread's environment keeping none (handOver returns at once)
  if (!isMainThread) native.handOver(typeof fds === 'number' ? [fds] : (fds as readonly number[]));
  return fds;
}

/** A close-on-exec duplicate of `fd`; the caller owns it. */
export function dupFd(fd: number): number {
  return handedOver(native.dup(fd));
}

/**
 * A new open file description of what `fd` (borrowed) names, opened
 * through /proc/self/fd with `flags`, as the addon duplicate `copy` makes
 * of it (the caller owns it). The fd fs opens is closed at once: in a
 * worker thread it is Node's to track as that thread's, so that once its
 * number comes back to a later openSync there Node warns "File descriptor
 * N opened in unmanaged mode twice" and the thread's end closes whatever
 * holds the number then; the addon's duplicate is nobody's but the caller's.
 */
export function reopenedCopy(fd: number, flags: number | string, copy: (opened: number) => number): number {
  const opened = openSync(`/proc/self/fd/${fd}`, flags);
  try {
    return copy(opened);
  } finally {
    closeSync(opened);
  }
}

/** A pipe, both ends close-on-exec: `[read, write]`, owned by the caller. */
export function makePipe(): [number, number] {
  return handedOver(native.pipe());
}

/** An anonymous memory file (memfd_create), close-on-exec, owned by the caller. */
export function makeMemfd(name = 'fdbridge'): number {
  return handedOver(native.memfd(name));
}

/** An eventfd, close-on-exec, owned by the caller. */
export function makeEventfd(): number {
  return handedOver(native.eventfd());
}

/**
 * A pidfd for process `pid` (pidfd_open(2), Linux 5.3+), close-on-exec,
 * owned by the caller. It turns readable when the process exits: a
 * DatagramSocket receive given it as `peerPidfd` ends then.
 */
export function openPidfd(pid: number): number {
  return handedOver(native.pidfdOpen(pid));
}

/**
 * Closes every fd given (takes ownership), skipping any that is already
 * closed; returns how many it closed. A list with an entry that is not an
 * fd number, or naming a number twice, is refused whole (validateCloseList:
 * a TypeError, nothing closed). For cleanup paths, where an fd that is
 * gone already must not stop the rest from being released. A list naming a
 * number fdbridge holds for itself (refuseOwnFd) is refused as closeFd
 * refuses one, before anything is closed (as closeClientFds refuses a
 * list): a SystemError EBADF naming that fd, nothing of the list closed.
 * Checked and closed in one native step (native.closeCallers), so that no
 * fd another thread of fdbridge's puts at one of the numbers in between is
 * closed in its place.
 */
export function closeFds(fds: Iterable<number> | undefined): number {
  const list = Array.isArray(fds) ? (fds as readonly number[]) : [...(fds ?? [])];
  validateCloseList(list, 'closeFds');
  const closed = native.closeCallers(fdList(list));
  if (closed < 0) throw ownFdRefusal(-1 - closed, 'closeFds', `${CLOSED_HERE}; nothing of the list was closed`);
  return closed;
}

/**
 * closeFds for fdbridge's own paths, which close what they hold (closeOwnFd),
 * whether or not it is registered as fdbridge's.
 */
export function closeOwnFds(fds: Iterable<number> | undefined): number {
  // Stryker disable next-line ConditionalExpression: an array sent through the loop below forced false: native.closeAll is its one-call form (each number closed, one that is not open or not a number passed over, the closes counted)
  if (Array.isArray(fds)) return native.closeAll(fdList(fds));
  let n = 0;
  // Stryker disable next-line ArrayDeclaration: `[]` given an element: native.close of a string throws, which the catch takes for a closed fd, and nothing is counted
  for (const fd of fds ?? []) {
    try {
      native.close(fd);
      n++;
    } catch {
      // already closed: nothing left to release
    }
  }
  return n;
}

/**
 * A number fdbridge's registry holds (native/fd_ops.h: a connection's
 * socket, a helper daemon's listening or accepted socket, a pin, a copy
 * given to a command and not adopted, one the background closer has still
 * to close) already has its owner, which closes it. Naming it to take it
 * over (`new UnixSocket(fd)`, `UnixServer.fromListeningFd(fd)`) or to close
 * it (`closeFd`) is refused as every number of fdbridge's own is where a
 * caller names an fd: a SystemError EBADF, nothing done with the fd.
 * `consequence`: what the operation would do, for the message.
 */
export function refuseOwnFd(fd: number, operation: string, consequence: string): void {
  if (Number.isInteger(fd) && fd >= 0 && fd <= 0x7fffffff && native.registration(fd) !== 0) throw ownFdRefusal(fd, operation, consequence);
}

/** Why closeFd and closeFds refuse one of fdbridge's own numbers (refuseOwnFd). */
const CLOSED_HERE = "closed here, its owner would go on using the number, another file's by then perhaps, and close it again";

/**
 * Closes `fd` (takes ownership). EBADF is a typed SystemError, for a
 * number that is not open and for one fdbridge holds for itself
 * (refuseOwnFd), which is left open: its owner would go on using the
 * number, another file's by then perhaps, and close it again.
 */
export function closeFd(fd: number): void {
  closeCallersFd(fd, 'closeFd');
}

/**
 * closeFd as `operation` (closeFd, OwnedFd.close), which the refusal names:
 * checked and closed in one native step (native.closeCaller), so that no fd
 * another thread of fdbridge's puts at the number in between is closed in
 * its place.
 */
function closeCallersFd(fd: number, operation: string): void {
  if (!native.closeCaller(fd)) throw ownFdRefusal(fd, operation, CLOSED_HERE);
}

/**
 * closeFd for fdbridge's own paths, which close what they hold (a relay's
 * copy, a file they made) whether or not it is registered as fdbridge's:
 * the registration ends with the close.
 */
export function closeOwnFd(fd: number): void {
  native.close(fd);
}

/** fd number -> target (readlink of /proc/<pid>/fd/<fd>). */
export type FdTable = Map<number, string>;

/**
 * The file each number of a table named when it was read ("mnt_id:ino" from
 * /proc/<pid>/fdinfo/N), beside the table so that a table still equals
 * (toEqual) another with the same targets. A number whose target reads the
 * same but whose file is another (closed and opened again for a memfd of
 * the same name, a path renamed over) has changed all the same. fdinfo, not
 * stat(2) through /proc/<pid>/fd/N: a stat asks the file's filesystem (a
 * hung NFS server or FUSE daemon would hang the check), fdinfo reads the
 * open file alone. Anonymous inodes (eventfd, epoll, ...) share one inode:
 * for them the target is all there is. A number with no such line (closed
 * in between, a kernel before 5.14) is compared by target.
 *
 * An inode number names one file only while that file exists: ext4 and xfs
 * give a freed number to the next file made. A table whose files are held
 * (FdTableHold) keeps them, so their numbers cannot pass to new files until
 * the hold ends.
 */
const tableFiles = new WeakMap<FdTable, Map<number, string>>();

/**
 * What each open fd of a process (this one by default) points at, from
 * /proc/<pid>/fd, in the order the directory lists them: the targets alone,
 * no fdinfo read (openFdTable reads each fd's file as well).
 */
export function fdTargets(pid?: number): string[] {
  return native.listFds(pid ?? 0).map(([, target]) => target);
}

/**
 * The open-fd table of a process (this one by default), from /proc/<pid>/fd,
 * each number's file read in the same walk. The walk's own directory
 * streams are left out. (The leak checker's holds, FdTableHold, are in no
 * table this reads.)
 */
export function openFdTable(pid?: number): FdTable {
  const table: FdTable = new Map();
  const files = new Map<number, string>();
  for (const [fd, target, file] of native.listFds(pid ?? 0, true)) {
    table.set(fd, target);
    if (file !== '') files.set(fd, file);
  }
  tableFiles.set(table, files);
  return table;
}

/**
 * Keeps the files of a table's fds from being freed until release(), so
 * that each one's (mount, inode number) names that one file for as long:
 * a file the code under test closes and deletes cannot pass its inode
 * number to a new file at the same path, reopened at the same fd number.
 *
 * Each file is held by an O_PATH reference (open of /proc/<pid>/fd/N),
 * which is no opener of it: pipes still see their EOF, sockets still close
 * when their last real fd does, the process's POSIX locks are not dropped
 * when the reference is closed, devices are not opened, no fsnotify event is
 * raised. Opening the magic link calls no filesystem (the jump to the open
 * file's path asks no server; O_PATH skips the open and permission checks),
 * except a weak revalidation where a filesystem has one (NFS does nothing
 * there without an open intent).
 *
 * The references are kept in the fd table of a thread of this process that
 * has a table of its own (made empty with close_range's
 * CLOSE_RANGE_UNSHARE, every signal blocked), not in the process's table
 * nor queued in a socket: they take no fd number of the process
 * (/proc/<pid>/fd does not list them, `thread`'s /proc/<pid>/task/<tid>/fd
 * does), nothing the code under test does to its table (close_range over
 * all of it) reaches them, and they are not in flight, so they do not count
 * against the user's in-flight fds (SCM_RIGHTS sends are refused with
 * ETOOMANYREFS past RLIMIT_NOFILE of them): the code under test can send as
 * many as without a check. The thread's table is bounded by the process's
 * RLIMIT_NOFILE: one entry per file held, plus one.
 *
 * Not held: anonymous-inode files (eventfd, epoll, timerfd, signalfd,
 * inotify...), which share one inode and so cannot be told apart from /proc
 * at all, held or not; and numbers whose file could not be opened (closed
 * since, another user's process). While held, a deleted file's blocks stay
 * allocated and its filesystem cannot be unmounted (EBUSY). A worker
 * thread's teardown releases the holds made in it.
 */
export class FdTableHold implements Disposable {
  readonly #hold: NativeHold | undefined;
  readonly #pid: number;
  #released = false;

  /** Holds the files of `table`'s fds, read from process `pid` (this one by default). Throws a SystemError when it cannot. */
  constructor(table: FdTable, pid?: number) {
    this.#pid = pid ?? process.pid;
    const files = tableFiles.get(table);
    const fds = [...table].filter(([fd, target]) => files?.has(fd) === true && !target.startsWith('anon_inode:')).map(([fd]) => fd);
    if (fds.length === 0) return;
    // Stryker disable next-line ConditionalExpression: this process's own pid instead of 0 reads /proc/<own pid>, the same table as /proc/self
    const { held, ...hold } = native.holdFiles(pid === process.pid ? 0 : (pid ?? 0), fds);
    this.#hold = hold;
    // The file each number is held as, read from the reference itself: the
    // one whose inode number is kept for this number.
    // Stryker disable next-line BlockStatement: not equivalent: the reference's file differs from the one the table read only if the number was closed and opened again between that read and the hold, a race no test can hold open
    held.forEach((file, i) => {
      // Stryker disable next-line ConditionalExpression,EqualityOperator,StringLiteral: the same race (an empty answer is a number closed before the hold)
      if (file !== '') files?.set(fds[i] as number, file);
    });
  }

  /** The thread (its id) whose own fd table holds the references, while any files are held. */
  get thread(): number | undefined {
    return this.#released ? undefined : this.#hold?.tid;
  }

  /** The process whose fds' files are held. */
  get pid(): number {
    return this.#pid;
  }

  /** Drops every reference and ends the thread (idempotent). False when the hold had been ended otherwise (its environment's teardown). */
  release(): boolean {
    if (this.#hold === undefined || this.#released) return true;
    this.#released = true;
    return native.releaseHold(this.#hold);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * The lowest number of the fds fdbridge makes for itself in this process
 * (pins, queued sends' copies, direct and worker duplicates, pidfd pulls):
 * half the soft RLIMIT_NOFILE, at most 8192. Fds taken from the lowest free
 * numbers stay below it until that many are open, so a number the caller
 * closed never comes back as one of fdbridge's.
 */
export function fdFloor(): number {
  return native.fdFloor();
}

/** RLIMIT_NOFILE of this process: `[soft, hard]` (Infinity when unlimited). */
export function fdLimit(): [number, number] {
  return native.getFdLimit();
}

/** Sets RLIMIT_NOFILE of this process. */
export function setFdLimit(soft: number, hard?: number): void {
  native.setFdLimit(soft, hard ?? fdLimit()[1]);
}

/** Set by ownedFdOfFdbridge while it makes an OwnedFd of a number fdbridge holds for itself. */
let wrappingOwnFd = false;

/**
 * An fd with a visible owner. `close()` is idempotent; `release()` hands the
 * number to someone else and makes this object forget it. It owns the
 * caller's fds only: a number fdbridge holds for itself (refuseOwnFd) is
 * refused as `closeFd` refuses it, at construction and at `close()` (a
 * number closed behind the object's back that one of fdbridge's own fds
 * took since): a SystemError EBADF, the fd left open. An OwnedFd fdbridge
 * makes for a number of its own (ownedFdOfFdbridge: peerPidfd with `own`,
 * not exported) closes it.
 */
export class OwnedFd implements Disposable {
  #fd: number;
  /** Made by ownedFdOfFdbridge: the number is fdbridge's own, which close() closes as its owner. */
  readonly #own = wrappingOwnFd;

  /** Takes ownership of `fd`, one of the caller's own. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`OwnedFd: ${fd} is not an fd`);
    if (!this.#own) refuseOwnFd(fd, 'new OwnedFd', SECOND_OWNER);
    this.#fd = fd;
  }

  get fd(): number {
    if (this.#fd < 0) throw new ClosedError('OwnedFd: the fd was already closed or released');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Gives up ownership and returns the number; the caller now closes it. */
  release(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  /** Closes the fd (once); a number fdbridge holds for itself now is refused as closeFd refuses it, and forgotten. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    if (this.#own) closeOwnFd(fd);
    else closeCallersFd(fd, 'OwnedFd.close');
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** An OwnedFd of `fd`, a number fdbridge holds for itself and hands out (peerPidfd with `own`): its close() closes it. */
export function ownedFdOfFdbridge(fd: number): OwnedFd {
  wrappingOwnFd = true;
  try {
    return new OwnedFd(fd);
  } finally {
    wrappingOwnFd = false;
  }
}

export interface FdTableDiff {
  /** fds open now that were not before, or that now name another target. */
  opened: Array<{ fd: number; target: string }>;
  /** fds open before that are closed now, or that named another target. */
  closed: Array<{ fd: number; target: string }>;
}

/**
 * What changed between two open-fd tables: a number open in both that names
 * another file (another target, or another file of the same name: see
 * tableFiles) counts as both closed and opened. A file deleted in between
 * while the number stayed open on it (its target now ends in ` (deleted)`,
 * its file read the same on both sides) has not changed.
 */
export function diffFdTables(before: FdTable, after: FdTable): FdTableDiff {
  const opened: FdTableDiff['opened'] = [];
  const closed: FdTableDiff['closed'] = [];
  const filesBefore = tableFiles.get(before);
  const filesAfter = tableFiles.get(after);
  const same = (fd: number, target: string): boolean => {
    const was = filesBefore?.get(fd);
    const now = filesAfter?.get(fd);
    // Stryker disable next-line ConditionalExpression: the name check forced true takes a file renamed while its number stayed open for unchanged as well; not equivalent: in a table whose files are not held (openFdTable alone) a changed name is what tells apart a new file given a freed inode number at the same fd, which no test can stage (the filesystem picks the number)
    if (before.get(fd) !== target) return was !== undefined && was === now && target === `${before.get(fd)} (deleted)`;
    return was === undefined || now === undefined || was === now;
  };
  for (const [fd, target] of after) {
    if (!same(fd, target)) opened.push({ fd, target });
  }
  for (const [fd, target] of before) {
    // Stryker disable next-line ConditionalExpression: `after.get(fd) === undefined` forced false: same() of an fd gone from `after` compares its target with undefined, false as well
    if (after.get(fd) === undefined || !same(fd, after.get(fd) as string)) closed.push({ fd, target });
  }
  return { opened, closed };
}

/** A readable one-line-per-fd description of a table diff, empty when equal. */
export function formatFdTableDiff(diff: FdTableDiff): string {
  return [
    ...diff.opened.map((e) => `+ fd ${e.fd} -> ${e.target}`),
    ...diff.closed.map((e) => `- fd ${e.fd} -> ${e.target}`),
  ].join('\n');
}

/**
 * The fds a command adopted from a ledger, each with the file it was given
 * with (device and inode): what closeClientFds expects at the number, so
 * that an adopted fd the command closed itself, whose number is free now or
 * another file's (another command's adopted fd, the program's file), is
 * refused rather than closed. Forgotten as closeClientFds takes them.
 */
export class AdoptedFiles {
  readonly #files = new Map<number, FileKey>();

  /** `fd` is the command's now, adopted with `file` (true: not known). */
  // Stryker disable next-line BlockStatement: the files kept here are what the addon checks at its hand-over; ClientFds.check has checked the same file at the number in the same call (CommandHost.closeClientFds): this refuses only a file another thread puts there in between, a race no test stages
  adopted(fd: number, file: FileKey | true): void {
    // Stryker disable next-line ConditionalExpression,EqualityOperator,BooleanLiteral: as above for a known file; a file not known (a SetLedger given a number while it was free, which no transport does) is the only other case
    if (file === true) this.#files.delete(fd);
    else this.#files.set(fd, file);
  }

  /**
   * The file each of `fds` was adopted with, undefined for one not adopted
   * here. One that `given` says the ledger still holds as given and not
   * adopted is not the client's to close: a SystemError EBADF naming it (its
   * `fd` and its `index` in `fds`, as the addon's refusals do), nothing
   * closed.
   */
  expected(fds: readonly number[], given: (fd: number) => boolean): Array<FileKey | undefined> {
    const index = fds.findIndex(given);
    if (index >= 0) {
      const fd = fds[index] as number;
      throw new SystemError(
        osConstants.errno.EBADF,
        'closeClientFds',
        `closeClientFds: fd ${fd} is not the client's to close: it is a copy given to the command and not adopted; nothing was closed`,
        { entry: { index, fd } },
      );
    }
    // Stryker disable next-line ArrowFunction: no file expected by the addon: ClientFds.check's of the same call stands (adopted() above)
    return fds.map((fd) => this.#files.get(fd));
  }

  /** closeClientFds took `fds`. */
  // Stryker disable next-line BlockStatement: an entry kept is never asked for again (ClientFds no longer holds the number, so closeClientFds refuses it first) and the next adoption there replaces it: memory only
  forget(fds: readonly number[]): void {
    for (const fd of fds) this.#files.delete(fd);
  }
}

/** How long a wait for background closes (closesSettled) lasts before it gives up on a close blocked for good. */
export const CLOSES_GIVE_UP_MS = 5000;

/**
 * Resolves once the background closer has closed every fd of the batches
 * `tickets` (native.closeInBackground's), or after CLOSES_GIVE_UP_MS: a
 * close that blocks for good (a TCP socket lingering for an hour) then
 * holds up nothing but itself. Its number is out of the fd table by then
 * (close(2) takes it out before the part that blocks), so a leak check
 * made after the wait sees a clean table either way. The timer keeps the
 * loop alive meanwhile; the closer's news does not have to.
 */
export function closesSettled(tickets: readonly number[]): Promise<void> {
  // Stryker disable next-line MethodExpression: without the filter, done batches go to afterBackgroundCloses as well, which calls back once all are done, on the next turn when they already are: resolved the same
  const open = tickets.filter((t) => !native.backgroundCloseDone(t));
  // Stryker disable next-line ConditionalExpression: forced false, no batch left open goes to afterBackgroundCloses of none, which calls back on the next turn and clears the timer: resolved all the same
  if (open.length === 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const giveUp = setTimeout(resolve, CLOSES_GIVE_UP_MS);
    native.afterBackgroundCloses(open, () => (clearTimeout(giveUp), resolve()), false);
  });
}

/**
 * The numbers of the fds this process handed to the background closer and
 * that are not closed yet: `queued`, those no closer thread has taken (open,
 * and fdbridge's until closed: nothing else can close them), and `running`,
 * those being closed (in the fd table until close(2) takes them out, which
 * it does before the part that can block).
 */
export function backgroundCloseFds(): { queued: number[]; running: number[] } {
  return native.backgroundCloseFds();
}

/**
 * The closer's owner of a helper daemon's work for the clients of `uid`
 * (their fds' closes, their log lines' writes): one per uid served, so that
 * what one user can make block (its lingering TCP sockets, pipes it never
 * reads) holds back that user's alone. 0 is everyone else's; the process's
 * own holders are above every such owner (HeldCopies).
 */
export function peerCloseOwner(uid: number): number {
  return uid + 1;
}

/**
 * The copies of callers' files a connection holds and has to close (pins of
 * requests that failed, queued sends' copies, duplicates the command did
 * not adopt). Such a copy can be its file's last reference, since the
 * caller may close its own once the call is made, and close(2) of the last
 * reference to a TCP socket with SO_LINGER and unsent data waits out the
 * linger time (socket(7)): so they are closed on the background closer,
 * never on the caller's event loop. Each fd stays registered as
 * fdbridge's until its close has returned (fd_ops.h: FdCloseInBackground),
 * so no number is handed out again while it is still ours.
 */
export class HeldCopies {
  /**
   * Its closer owner: one of this process's own (above every owner a
   * helper daemon uses, a uid plus one), given by the addon, so unique in
   * the process whatever thread made it (a worker thread has its own copy
   * of this module, and shares the closer), so that one holder's closes
   * that block hold back only its own. Its closes run on any of the
   * closer's shared threads (native/fd_ops.h: CloserThreadsFor).
   */
  readonly owner: number;
  /** Tickets of batches handed over; those done are dropped now and then. */
  #tickets: number[] = [];

  /**
   * `owner`: the one another thread's holder has (native.newCloseOwner),
   * for one ledger swept on either thread (a worker connection's); by
   * default a new one.
   */
  constructor(owner: number = native.newCloseOwner()) {
    this.owner = owner;
  }

  /** Hands `fds` (owned by the caller of this, now the closer's) to the background closer. */
  close(fds: readonly number[]): void {
    // Stryker disable next-line ConditionalExpression: forced false, closeInBackground of no fd closes nothing and gives ticket 0, which is done
    if (fds.length === 0) return;
    this.remember(native.closeInBackground(fds, this.owner));
  }

  /**
   * close() of fds a command holds as its client's
   * (CommandContext.closeClientFds): throws a SystemError EBADF naming the
   * first that is one of fdbridge's own fds now, whose `expected` file
   * (the one it was adopted with) is no longer at its number, or whose
   * number's install generation is not `installs`' (as the command held
   * it), nothing handed over (native.closeClientFds).
   */
  closeClientFds(fds: readonly number[], expected?: ReadonlyArray<FileKey | undefined>, installs?: readonly number[]): void {
    // Stryker disable next-line ConditionalExpression: forced false, closeClientFds of no fd closes nothing and gives ticket 0, which is done
    if (fds.length === 0) return;
    this.remember(native.closeClientFds(fds, this.owner, expected, installs));
  }

  /**
   * close() of copies given to a command under this holder's owner
   * (native.dupHigh's and dupAll's `givenTo`) that it did not adopt: each
   * is closed only while its number still holds that copy, and one the
   * program closed behind fdbridge's back is left alone, whatever file
   * took its number since (native.closeInBackground's `given`). Returns
   * the batch's ticket (0, done, for no fd), for a wait on this batch alone
   * (closesSettled).
   */
  closeGiven(fds: readonly number[]): number {
    // Stryker disable next-line ConditionalExpression: forced false, closeInBackground of no fd closes nothing and gives ticket 0, which is done
    if (fds.length === 0) return 0;
    const ticket = native.closeInBackground(fds, this.owner, true);
    this.remember(ticket);
    return ticket;
  }

  /** Waits for a batch handed over elsewhere (a socket's queued copies) too. */
  remember(...tickets: number[]): void {
    this.#tickets.push(...tickets);
    // Amortized: only batches not yet done are kept.
    // Stryker disable next-line ConditionalExpression,EqualityOperator,MethodExpression: when (or whether) done batches are dropped changes only how many tickets are kept, not what settled() waits for
    if (this.#tickets.length > 64) this.#tickets = this.#tickets.filter((t) => !native.backgroundCloseDone(t));
  }

  /** Resolves once every batch handed over so far is closed (closesSettled: or given up on). */
  settled(): Promise<void> {
    return closesSettled(this.#tickets);
  }
}
