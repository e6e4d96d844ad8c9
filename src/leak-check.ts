/**
 * fd-leak checks for anyone's tests: snapshot the open-fd table of this
 * process (and of other processes, by pid), run something, let asynchronous
 * closes settle, and say which fds were opened and left behind.
 *
 *     import { expectNoFdLeaks } from 'fdbridge';
 *     await expectNoFdLeaks(async () => {
 *       const conn = await connect('child', { command: LOG_COMMAND });
 *       await logRedirectOption(conn, '/tmp/x.log');
 *       await conn.close();
 *     });
 *     // throws FdLeakError: "1 fd leaked:\n  fd 23 -> /tmp/x.log (opened during the test, still open)"
 *
 * The harness's leak oracle (harness/oracle.ts) is built on the same pieces.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { FdBridgeError, isCutOf, SystemError } from './errors';
import { backgroundCloseFds, CLOSES_GIVE_UP_MS, diffFdTables, FdTableHold, openFdTable, type FdTable } from './fd';
import { describeFdOrigin, leakOrigin, startFdTracking, type FdOrigin } from './fd-track';
import { native } from './native';
import { describeRuntimeFd, warmRuntimeFds, type RuntimeFd } from './runtime-fds';
import { validateTimeoutMs } from './validate';

/** A process whose fd table is watched, and what it is to the test ('client', 'child', 'helper', ...). */
export interface WatchedProcess {
  pid: number;
  role: string;
}

/** One fd in one process: opened and left behind (a leak), or closed when it should not have been. */
export interface FdEntry {
  pid: number;
  role: string;
  fd: number;
  target: string;
  /** With `trackFds`: where the fd was opened (the JS stack; call 'unseen' when no recorder saw it, 'untracked' when none ran in its process). */
  openedAt?: FdOrigin;
  /**
   * In `closed`: the fd was one fdbridge held for itself at the baseline (a
   * connection's socket or pidfd, a worker's loop fd, a pin or copy), and
   * someone else closed it behind fdbridge's back: fdbridge found it closed
   * (or holding another file) where it went to close it, or it was still
   * fdbridge's when the check gave up waiting.
   */
  fdbridgeOwn?: true;
  /**
   * In `leaks`: who opened it, when the check was told (ProcessFdSnapshot's
   * `attributed`): e.g. the constructor of a command whose process's table
   * was read only after it had run.
   */
  openedBy?: string;
}

/** What a check found once the fd tables settled. */
export interface FdLeakReport {
  /**
   * fds open now that were not open before (or that name another file now),
   * and those of this process that fdbridge held for itself at the baseline,
   * no longer fdbridge's, and open now (the same file included: a command
   * that adopted one and keeps it, a number the code under test took over).
   */
  leaks: FdEntry[];
  /** fds open before that are closed now (or that name another file now). */
  closed: FdEntry[];
  /** Watched processes that ended in between: the kernel closed their fds, so they cannot leak. */
  gone: WatchedProcess[];
  /**
   * fds this thread's event loop opened for itself just before the baseline
   * (warmRuntimeFds: what it would otherwise open at first use, during the
   * test, and keep): in the baseline, never counted. Empty when they were
   * open already.
   */
  runtime?: RuntimeFd[];
  /**
   * fds of this process that are fdbridge's own copies of files (a failed
   * request's pins, a queued send's copies, duplicates a direct or worker
   * command did not adopt), handed to its background closer and still
   * waiting there for a thread when the check stopped waiting for them
   * (CLOSES_GIVE_UP_MS after the settle began): the closer's threads were
   * all in closes that block (TCP sockets lingering with unsent data, whose
   * last reference was such a copy). Not leaks, and not in `leaks`:
   * fdbridge closes each as soon as a thread comes free. Absent when none.
   */
  closing?: FdEntry[];
  /**
   * fds of this process that a log line being written holds: the log
   * command writes each line into a copy of its log fd, made as the line is
   * handed over, on a thread of its own (and, while the fd takes no more,
   * with an eventfd to be woken by). A write(2) into a terminal whose
   * output is stopped, or into a file on a hung filesystem, cannot be
   * cancelled, and its copy stays open after the connection's end until
   * the write returns (the line's end of file, the terminal started
   * again). fdbridge's, opened and closed by it: not leaks, and not in
   * `leaks`. Absent when none.
   */
  writing?: FdEntry[];
  /**
   * fds of this process that fdbridge held for itself when the baseline was
   * taken and that are closed now, no longer fdbridge's: it closed them (a
   * connection's socket and pidfd once its command died, the event-loop fds
   * of a worker thread it ran, which that thread's loop closed as it ended:
   * epoll, pipes, eventfd, /dev/null, inotify; a pin or copy it held), or a
   * command it ran adopted one and closed it. Not in `closed`: the code
   * under test closed nothing that was not its own. One that someone else
   * closed behind fdbridge's back (fdbridge found it closed, or it was
   * still fdbridge's when the check stopped waiting) is not here but in
   * `closed`, marked `fdbridgeOwn`. Absent when none.
   */
  ownClosed?: FdEntry[];
}

export interface FdCheckOptions {
  /** Other processes to watch besides this one (this one is always watched, as 'self'). */
  processes?: ReadonlyArray<number | WatchedProcess>;
  /**
   * How long to wait, at most, for the tables to return to their baseline:
   * closes can be asynchronous (a worker's exit, a child's pipes, a peer's
   * EOF). Default 1000 ms; an integer from 0 to 2^31 - 1, else a RangeError
   * before anything runs. A clean run returns as soon as the tables match.
   * While an fd that this process's table has in excess is one fdbridge
   * handed to its background closer (a copy it made of a caller's file,
   * closed off the event loop since such a close can block), the check
   * waits for that close past settleMs, up to CLOSES_GIVE_UP_MS (5 s)
   * after the settle began: see FdLeakReport.closing.
   */
  settleMs?: number;
  /** Entries to leave out of the verdict (e.g. an fd a library opens lazily, once). */
  ignore?: (entry: FdEntry) => boolean;
  /**
   * expectNoFdLeaks/toLeakNoFds: also fail when an fd that was open before
   * was closed during the test (something closed an fd it did not own).
   * Default false: only fds opened and left behind fail.
   */
  failOnClosed?: boolean;
  /**
   * Name where each leaked fd was opened: the JS stack of the call that
   * made it (fs, net, child_process pipes, fdbridge's own fds), in this
   * thread, in the worker threads and the Node processes started during the
   * check (child and pidfd commands). For a file that can be opened again
   * the origin is `unconfirmed` (FdOrigin): a close made where the recorder
   * does not see (a thread started before the check, native code) and an
   * open of the same file at the same number would read the same. Native stacks need the process started with the
   * recorder preloaded (`fdbridge run --track-fds` does that); there, a JS record whose fd no call through the C
   * library made again since, in any thread, is also `nativeCurrent`. Off by
   * default: it costs a stack capture per fd opened.
   */
  trackFds?: boolean;
}

/** Thrown by expectNoFdLeaks: `report` holds the details, the message lists them one per line. */
export class FdLeakError extends FdBridgeError {
  readonly report: FdLeakReport;

  constructor(report: FdLeakReport, message = describeFdLeakReport(report)) {
    super('ERR_FDBRIDGE_FD_LEAK', message);
    this.report = report;
  }
}

/** The kernel's start time of `pid` (clock ticks since boot), or undefined when it is gone or a zombie. */
function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  // A zombie's /proc/<pid>/fd reads as empty: it has no fds left to leak.
  // Stryker disable next-line ConditionalExpression: a process is in state X (dead) only while its parent reaps it, a moment no test can hold it in; a stat with nothing after the comm cannot be read from /proc
  if (state === 'Z' || state === 'X' || state === undefined) return undefined;
  return fields[19]; // field 22 of stat(5): starttime
}

/**
 * The open-fd table of one process at one moment, to be compared later.
 * The process's start time is kept too, so a pid reused by a new process
 * is seen as the old one gone rather than as a table full of changes.
 *
 * The baseline's files are held (FdTableHold) until release(): a file the
 * code under test closes and deletes cannot pass its inode number to a new
 * file opened at the same fd number and path, which would otherwise read
 * exactly as the baseline's. Call release() when done with the snapshot
 * (checkFdLeaks and the harness's oracle do, on every path).
 */
export class ProcessFdSnapshot implements Disposable {
  readonly pid: number;
  readonly role: string;
  readonly baseline: FdTable;
  readonly #startTime: string | undefined;
  readonly #hold: FdTableHold;
  /**
   * This process's only: the baseline's fds that fdbridge held for itself
   * then, each with its registration (native.registration: never reused),
   * read right after the table.
   */
  readonly #own = new Map<number, number>();
  /** This process's only: watching for fds of fdbridge's closed by someone else (native.watchClosedByOthers), until release(). */
  #watching = false;

  /** `attributed` still open as they were at the snapshot: out of the baseline, fd -> who opened it. */
  readonly #attributed = new Map<number, { target: string; by: string }>();

  /**
   * Snapshots `pid` now. Throws if its table cannot be read (no such
   * process, another user's). `attributed`: fds of another process that
   * its code under test opened before this snapshot and that were not
   * there before that code ran (a command's constructor, as the command's
   * READY named them): each still open at its number with its target (or
   * a target it is a cut of: isCutOf) is left out of the baseline, so that
   * it is a leak if it is still open at the comparison, named as opened by
   * `by`.
   */
  constructor(pid: number, role: string, attributed: readonly { fd: number; target: string; by: string }[] = []) {
    this.pid = pid;
    this.role = role;
    // Stryker disable next-line ConditionalExpression: for this process current() returns before the start time is ever compared
    this.#startTime = pid === process.pid ? undefined : processStartTime(pid);
    if (pid !== process.pid && this.#startTime === undefined) {
      // Stryker disable next-line UnaryOperator: SystemError takes the errno's magnitude, so +3 and -3 both name ESRCH
      throw new SystemError(-3 /* ESRCH */, 'open-fd table', `open-fd table of pid ${pid}: no such process (or it is a zombie)`);
    }
    if (pid !== process.pid) {
      this.baseline = openFdTable(pid);
      for (const { fd, target, by } of attributed) {
        // A target may come cut (a READY's: src/protocol.ts, readyJson): the table's names the file whole.
        const now = this.baseline.get(fd);
        if (now === undefined || !isCutOf(target, now)) continue;
        this.baseline.delete(fd);
        this.#attributed.set(fd, { target: now, by });
      }
      this.#hold = new FdTableHold(this.baseline, pid);
      return;
    }
    // Watched from before the table is read until release(): a close of an
    // fd of fdbridge's that fdbridge finds done by someone else is noted.
    native.watchClosedByOthers(true);
    try {
      this.baseline = openFdTable();
      for (const fd of this.baseline.keys()) {
        const registration = native.registration(fd);
        if (registration !== 0) this.#own.set(fd, registration);
      }
      this.#hold = new FdTableHold(this.baseline, pid);
    } catch (err) {
      native.watchClosedByOthers(false);
      throw err;
    }
    this.#watching = true;
  }

  /** Ends the hold of the baseline's files (idempotent): compare no more after this. */
  release(): void {
    this.#hold.release();
    if (this.#watching) {
      this.#watching = false;
      native.watchClosedByOthers(false);
    }
  }

  [Symbol.dispose](): void {
    this.release();
  }

  /**
   * The table now, or undefined when the process has ended (or is a
   * zombie, or its pid now belongs to another process).
   */
  current(): FdTable | undefined {
    if (this.pid === process.pid) return openFdTable();
    let table: FdTable;
    try {
      table = openFdTable(this.pid);
    } catch (err) {
      // Reaped: /proc/<pid> is gone (opendir says ENOENT, and so does reading a directory opened before).
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw err;
    }
    // Read after the table, the start time tells whether that table was the
    // process's: a zombie's reads as empty, a reused pid's is another
    // process's, and one that exited during the read left a partial one.
    return processStartTime(this.pid) === this.#startTime ? table : undefined;
  }

  /**
   * What changed since the snapshot, as entries; undefined when the process
   * is gone. A number fdbridge held for itself then, no longer under that
   * registration and open now, is a leak whatever file it holds. Of the
   * fds open before and not now, those fdbridge held for
   * itself then and holds no longer under that registration (it closed
   * them, or a command it ran adopted them) are `ownClosed`, the rest
   * `closed`; of those, `unreleased` are the ones the registry still has
   * under the baseline's registration: fdbridge has yet to let go of them
   * (an fd of its that someone else closed, or one whose close, a
   * thread's or libuv's, has not returned). An fd of fdbridge's whose
   * registration ended because fdbridge found it closed by someone else
   * (native.closedByOther) is in `closed`, as the unreleased ones are, each
   * marked `fdbridgeOwn`.
   */
  changes(
    ignore?: (entry: FdEntry) => boolean,
  ): { leaks: FdEntry[]; closed: FdEntry[]; ownClosed: FdEntry[]; unreleased: FdEntry[] } | undefined {
    // Read before the table: fdbridge ends a registration only once its
    // close has returned (or as it hands the fd over), so a number whose
    // registration had ended before the table was read and that the table
    // shows open holds a file that is not the baseline's fd of fdbridge's.
    const ended = [...this.#own].filter(([fd, registration]) => native.registration(fd) !== registration).map(([fd]) => fd);
    const now = this.current();
    if (!now) return undefined;
    const diff = diffFdTables(this.baseline, now);
    const entry = (e: { fd: number; target: string }): FdEntry => ({ pid: this.pid, role: this.role, fd: e.fd, target: e.target });
    const keep = (e: FdEntry): boolean => !ignore?.(e);
    // A number fdbridge held at the baseline, no longer under that
    // registration, that holds a file now: whose it is now, it was not
    // there (fdbridge's no longer, the code under test's or nobody's).
    // When the file is the same as the baseline's (a command that adopted
    // fdbridge's copy and keeps it, fdbridge letting go of its fd without
    // closing it, the same file opened again at the number) the tables
    // alone show no change: it is a leak all the same, as a copy given
    // and adopted during the check and kept is.
    const opened = new Set(diff.opened.map((e) => e.fd));
    const takenOver = ended.filter((fd) => now.has(fd) && !opened.has(fd)).map((fd) => ({ fd, target: now.get(fd) as string }));
    const closed: FdEntry[] = [];
    const ownClosed: FdEntry[] = [];
    const unreleased: FdEntry[] = [];
    for (const e of diff.closed.map(entry).filter(keep)) {
      const registration = this.#own.get(e.fd);
      if (registration === undefined) {
        closed.push(e);
      } else if (native.registration(e.fd) !== registration) {
        // Ended: fdbridge closed it (or a command adopted it), unless
        // fdbridge found it closed by someone else (the note comes first).
        if (native.closedByOther(registration)) closed.push({ ...e, fdbridgeOwn: true });
        else ownClosed.push(e);
      } else {
        const own: FdEntry = { ...e, fdbridgeOwn: true };
        closed.push(own);
        unreleased.push(own);
      }
    }
    const named = (e: FdEntry): FdEntry => {
      const by = this.#attributed.get(e.fd);
      return by?.target === e.target ? { ...e, openedBy: by.by } : e;
    };
    return { leaks: [...diff.opened, ...takenOver].map(entry).filter(keep).map(named), closed, ownClosed, unreleased };
  }
}

/**
 * The numbers fdbridge's background closer holds in this process now:
 * `held`, those queued there or being closed (a close still to come, which
 * the check waits for), and `queued`, those no closer thread has taken yet
 * (open, and the closer's).
 */
function closerFds(): { held: Set<number>; queued: Set<number> } {
  const { queued, running } = backgroundCloseFds();
  return { held: new Set([...queued, ...running]), queued: new Set(queued) };
}

/**
 * Waits (at most `settleMs`, polling every 20 ms) until every snapshot's
 * process is back at its baseline or gone, and reports what is left then.
 * While an fd this process has in excess is one fdbridge's background
 * closer has yet to close, it waits past `settleMs`, up to
 * CLOSES_GIVE_UP_MS after it began; such an fd still queued there then is
 * reported in `closing`, not in `leaks` (FdLeakReport.closing). So it does
 * while an fd of this process that fdbridge held for itself at the
 * baseline is closed and still registered as that fd (its close, on a
 * thread of its own or in an ending worker thread's loop, has not returned
 * yet): once fdbridge has let it go it is in `ownClosed`, and so is one its
 * background closer is closing (a close that blocks); the rest is in
 * `closed`.
 */
export async function settleFdSnapshots(
  snapshots: readonly ProcessFdSnapshot[],
  options: { settleMs?: number; ignore?: (entry: FdEntry) => boolean } = {},
): Promise<FdLeakReport> {
  // Real time, from the modules: jest's fake timers replace the test's
  // global setTimeout and Date, and a wait on them would never end.
  const start = performance.now();
  const deadline = start + (options.settleMs === undefined ? 1000 : validateTimeoutMs(options.settleMs, 'settleMs'));
  const closerDeadline = Math.max(deadline, start + CLOSES_GIVE_UP_MS);
  for (;;) {
    // Read before the tables: a close the closer ends while they are read
    // leaves its number in them, and it must still count as the closer's.
    // The lanes' first: a copy leaves them only once the closer has it.
    const writing = native.laneWriterFds();
    const closer = closerFds();
    const report: FdLeakReport = { leaks: [], closed: [], gone: [] };
    const ownClosed: FdEntry[] = [];
    // Closed, and still registered as the fd fdbridge held at the baseline.
    const unreleased = new Set<FdEntry>();
    for (const snap of snapshots) {
      const changes = snap.changes(options.ignore);
      if (!changes) {
        report.gone.push({ pid: snap.pid, role: snap.role });
        continue;
      }
      report.leaks.push(...changes.leaks);
      report.closed.push(...changes.closed);
      ownClosed.push(...changes.ownClosed);
      for (const e of changes.unreleased) unreleased.add(e);
    }
    // fdbridge's own whose close its closer is in (one that blocks): its, not the test's.
    const onCloser = (e: FdEntry): boolean => unreleased.has(e) && closer.held.has(e.fd);
    ownClosed.push(...report.closed.filter(onCloser).map(({ fdbridgeOwn: _, ...e }) => e));
    report.closed = report.closed.filter((e) => !onCloser(e));
    if (report.leaks.length === 0 && report.closed.length === 0) return withOwnClosed(report, ownClosed);
    const now = performance.now();
    // Stryker disable next-line EqualityOperator: > instead of >= is at most one more 20 ms poll, the same verdict later
    if (now >= deadline) {
      // A lane's copy before the tables were read and no longer the lanes'
      // now went on to the closer after it was read: its close is coming.
      // One the lanes' now is not waited for, whether it was the lanes'
      // before the tables were read or made while they were (a line handed
      // over meanwhile): the return sets aside in `writing` every number the
      // lanes hold now.
      const lanes = new Set(native.laneWriterFds());
      const handedOn = (e: FdEntry): boolean => e.pid === process.pid && writing.includes(e.fd) && !lanes.has(e.fd);
      const waiting =
        report.closed.some((e) => unreleased.has(e)) || report.leaks.some((e) => (e.pid === process.pid && closer.held.has(e.fd)) || handedOn(e));
      // Stryker disable next-line EqualityOperator: > instead of >= at the give-up is at most one more 20 ms poll, the same verdict later
      if (!waiting || now >= closerDeadline) {
        // Queued before the tables were read and still now: never closed in
        // between, so its number was the closer's fd throughout. A lane's
        // now (`lanes`, read after the tables) holds its number: what the
        // tables showed there was that copy, or a file closed since, a leak
        // no longer either way.
        const still = closerFds().queued;
        const queued = new Set([...closer.queued].filter((fd) => still.has(fd)));
        return setAsideWriting(setAsideClosing(withOwnClosed(report, ownClosed), queued), lanes);
      }
    }
    await sleep(20);
  }
}

/** `report` with `ownClosed` set when there are any. */
function withOwnClosed(report: FdLeakReport, ownClosed: FdEntry[]): FdLeakReport {
  return ownClosed.length > 0 ? { ...report, ownClosed } : report;
}

/** `report` with this process's leaks that are fdbridge's queued closes (`queued`) moved to `closing`. */
function setAsideClosing(report: FdLeakReport, queued: ReadonlySet<number>): FdLeakReport {
  const closing = (e: FdEntry): boolean => e.pid === process.pid && queued.has(e.fd);
  if (!report.leaks.some(closing)) return report;
  return { ...report, leaks: report.leaks.filter((e) => !closing(e)), closing: report.leaks.filter(closing) };
}

/** `report` with this process's leaks that are copies the log lanes hold (`held`) moved to `writing`. */
function setAsideWriting(report: FdLeakReport, held: ReadonlySet<number>): FdLeakReport {
  const writing = (e: FdEntry): boolean => e.pid === process.pid && held.has(e.fd);
  if (!report.leaks.some(writing)) return report;
  return { ...report, leaks: report.leaks.filter((e) => !writing(e)), writing: report.leaks.filter(writing) };
}

function toWatched(p: number | WatchedProcess): WatchedProcess {
  return typeof p === 'number' ? { pid: p, role: `pid ${p}` } : p;
}

/**
 * Runs `fn` between two looks at the fd tables of this process and of
 * `options.processes`, and reports what it left open (and what it closed).
 * Never throws for a leak; an error from `fn` is rethrown as is.
 */
export async function checkFdLeaks(fn: () => unknown, options: FdCheckOptions = {}): Promise<FdLeakReport> {
  if (typeof fn !== 'function') throw new TypeError('checkFdLeaks(fn): fn must be a function');
  // Before fn runs: a settleMs past setTimeout's range is refused, not found out after.
  if (options.settleMs !== undefined) validateTimeoutMs(options.settleMs, 'checkFdLeaks: options.settleMs');
  const tracking = options.trackFds ? startFdTracking() : undefined;
  const snapshots: ProcessFdSnapshot[] = [];
  try {
    const runtime = warmRuntimeFds();
    snapshots.push(new ProcessFdSnapshot(process.pid, 'self'));
    for (const p of (options.processes ?? []).map(toWatched)) snapshots.push(new ProcessFdSnapshot(p.pid, p.role));
    await fn();
    const settled = await settleFdSnapshots(snapshots, options);
    // Stryker disable next-line ConditionalExpression: the test process warms its runtime fds before any test (test/setup), so `runtime` is checked in fresh processes (test/harness/runtime-fds.test.ts fails with it forced false), out of per-test coverage's sight
    const report = runtime.length > 0 ? { ...settled, runtime } : settled;
    if (!tracking) return report;
    return { ...report, leaks: report.leaks.map((l) => ({ ...l, openedAt: leakOrigin(tracking.dir, l.pid, l.fd, l.target) })) };
  } finally {
    for (const snap of snapshots) snap.release();
    tracking?.stop();
  }
}

/**
 * Like checkFdLeaks, but throws an {@link FdLeakError} listing every fd that
 * `fn` opened and left open (and, with `failOnClosed`, every fd it closed
 * that was open before), one readable line each.
 */
export async function expectNoFdLeaks(fn: () => unknown, options: FdCheckOptions = {}): Promise<void> {
  const report = await checkFdLeaks(fn, options);
  if (report.leaks.length > 0 || (options.failOnClosed && report.closed.length > 0)) {
    throw new FdLeakError(options.failOnClosed ? report : { ...report, closed: [] });
  }
}

/** `fd 23 -> /tmp/x`, prefixed with the process when it is not this one. */
export function describeFdEntry(e: FdEntry): string {
  const where = e.pid === process.pid ? '' : `pid ${e.pid} (${e.role}): `;
  return `${where}fd ${e.fd} -> ${e.target}`;
}

/** The lines of a report: one per leaked fd, then one per closed fd; empty when clean. */
export function describeFdLeakReport(report: FdLeakReport): string {
  const lines: string[] = [];
  if (report.leaks.length > 0) {
    lines.push(`${report.leaks.length} fd${report.leaks.length === 1 ? '' : 's'} leaked:`);
    for (const e of report.leaks) {
      lines.push(`  ${describeFdEntry(e)} (opened during the test, still open)`);
      if (e.openedAt) lines.push(...describeFdOrigin(e.openedAt, '    '));
    }
  }
  if (report.closed.length > 0) {
    const one = report.closed.length === 1;
    lines.push(`${report.closed.length} fd${one ? '' : 's'} closed that ${one ? 'was' : 'were'} open before:`);
    for (const e of report.closed) {
      const how = e.fdbridgeOwn ? "fdbridge's own fd, open before the test, closed during it by someone other than fdbridge" : 'open before the test, closed during it';
      lines.push(`  ${describeFdEntry(e)} (${how})`);
    }
  }
  if (lines.length > 0 && report.closing && report.closing.length > 0) {
    lines.push(`set aside (fdbridge's own copies, queued on its background closer after ${CLOSES_GIVE_UP_MS} ms, behind closes that block; it closes them):`);
    for (const e of report.closing) lines.push(`  ${describeFdEntry(e)}`);
  }
  if (lines.length > 0 && report.writing && report.writing.length > 0) {
    lines.push("set aside (fdbridge's own copies of a log fd, held by a log line whose write has not returned; closed when it does):");
    for (const e of report.writing) lines.push(`  ${describeFdEntry(e)}`);
  }
  if (lines.length > 0 && report.ownClosed && report.ownClosed.length > 0) {
    lines.push("set aside (fdbridge's own fds before the test, closed during it by fdbridge, or by a command that adopted them from it):");
    for (const e of report.ownClosed) lines.push(`  ${describeFdEntry(e)}`);
  }
  if (lines.length > 0 && report.runtime && report.runtime.length > 0) {
    lines.push('set aside (opened by the runtime for itself before the baseline, not by the test):');
    for (const r of report.runtime) lines.push(`  ${describeRuntimeFd(r)}`);
  }
  return lines.join('\n');
}
