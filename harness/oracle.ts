/**
 * The leak oracle: the open-fd table (fd number -> target) of every process
 * a scenario involves, before and after, and what differs once closes have
 * settled.
 *
 * Which process is looked at when:
 * - the client (this process; worker and direct commands share its table):
 *   before the scenario and after it (and after its connections closed);
 * - the run's helper daemon: the same, before and after the scenario; one
 *   that is gone by then is a finding (`ended`) as a command process's
 *   is, unless ctx.helper.restart() ended it;
 * - a process a connection spawned (child, pidfd, ...; any command whose pid
 *   is neither ours nor the helper's): baseline right after connect, less
 *   the fds the command's construction opened there and left open (its
 *   READY names them: CommandLocation.constructorFds), which are leaks if
 *   still open when compared, named as the constructor's (a READY that
 *   had no room to name them all, constructorFdsOmitted, leaves that
 *   process unwatched and fails the row with one leak entry of fd -1 saying
 *   how many: they cannot be told from the process's own); compared
 *   in the connection's onCommandClosed hook, i.e. after the command closed
 *   and before that process exits. A process that is gone by then (the
 *   scenario killed it) has no fds left and so no leak. A remote command's
 *   pid is one where it runs (another machine, a container's pid
 *   namespace): it is watched only when this machine's process of that
 *   number descends from the via process, never a local stranger that
 *   happens to have the number;
 * - anything the scenario registered with ctx.watchProcess(pid, role):
 *   baseline when registered, compared after the scenario unless gone.
 *
 * Policy for the two kinds of difference (see ProcessFdSnapshot):
 * - `leaks`: an fd open after that was not open before (or now names
 *   another file, or was the client's fd of fdbridge's before the row and
 *   is no longer fdbridge's, whatever file it holds). After the settle time this is a leak, unless it is
 *   fdbridge's own copy still queued on its background closer once the
 *   settle has waited for that (settleFdSnapshots: `closing`), or its copy
 *   of a log fd that a line whose write has not returned holds (`writing`),
 *   which are noted, not counted.
 * - `closed`: an fd open before that is gone (or renamed) after. The
 *   baselines are taken before the scenario, so such an fd belonged to the
 *   harness, the helper or the command's process itself: closing it is a bug
 *   of its own (a wrong-fd close; the fd number may be reused and the wrong
 *   file written). The runner fails a row on any `closed` entry, with one
 *   exception: an fd that an earlier row leaked (the oracle remembers those;
 *   they stay open, since closing an fd some live object still owns would
 *   be worse) may be closed later without blame. An fd of the client that
 *   fdbridge held for itself before the row and closed during it (a
 *   connection's socket and pidfd, a worker thread's loop fds) is not in
 *   `closed` at all (settleFdSnapshots: `ownClosed`), only noted.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

import type { CommandLocation, CommandSpec, Connection } from '../src';
import { ProcessFdSnapshot, settleFdSnapshots, type FdEntry } from '../src/leak-check';
import { describeRuntimeFd, warmRuntimeFds } from '../src/runtime-fds';
import { heldByFileHandle } from './file-handles';
import type { Leak, ProcessEnded } from './types';

export interface OracleVerdict {
  leaks: Leak[];
  /** fds open before the scenario and closed by it (not counting earlier rows' leaks). */
  closed: Leak[];
  /** Earlier rows' leaks that this row saw closed (a note, not a failure). */
  reclaimed: Leak[];
  /** Command processes and the run's helper daemon that were gone before their look: their leaks could not be checked. */
  ended: ProcessEnded[];
}

const key = (e: FdEntry): string => `${e.pid}\0${e.fd}\0${e.target}`;

/**
 * Remembers, across the rows of one run, the fds that rows leaked: they stay
 * in later baselines, and their closing later is not blamed on a later row.
 */
export class LeakLedger {
  #carried = new Set<string>();

  add(entries: readonly FdEntry[]): void {
    for (const e of entries) this.#carried.add(key(e));
  }

  /** Splits `closed` into what was carried from earlier rows (now forgotten) and the rest. */
  reclaim(closed: readonly FdEntry[]): { reclaimed: FdEntry[]; rest: FdEntry[] } {
    const reclaimed: FdEntry[] = [];
    const rest: FdEntry[] = [];
    for (const e of closed) {
      if (this.#carried.delete(key(e))) reclaimed.push(e);
      else rest.push(e);
    }
    return { reclaimed, rest };
  }
}

export interface OracleOptions {
  /** Longest wait for asynchronous closes before a difference counts (ms). */
  settleMs: number;
  /** The run's helper daemon, if one is running. */
  helperPid?: number;
  ledger?: LeakLedger;
  /** Where the oracle's own remarks go (the row's notes). */
  note?: (text: string) => void;
  /** How a process that is gone ended (its exit code or signal), when the caller knows. */
  howEnded?: (pid: number) => Promise<string | undefined>;
  /** The ends the scenario declares (Scenario.ends): such an end is `declared`, and its last read only noted. */
  ends?: readonly ('command' | 'helper')[];
}

/** An fd a command process's read after a call showed, kept in case that process ends before its look: `seenAt` says when. */
type SeenEntry = FdEntry & { seenAt?: string };

const strip = (e: SeenEntry): Leak => ({
  pid: e.pid,
  role: e.role,
  fd: e.fd,
  target: e.target,
  ...(e.openedBy !== undefined ? { openedBy: e.openedBy } : {}),
  ...(e.seenAt !== undefined ? { seenAt: e.seenAt } : {}),
});

/** How a leak report names the opener of an fd an unclosed FileHandle holds. */
const FILE_HANDLE = "an fs.promises FileHandle never closed (Node would close it when garbage-collected, DEP0137; the harness holds it, so the check does not depend on when that happens)";

/** How a leak report names a command: its helper name, else its module's file and export. */
function commandName(command: CommandSpec): string {
  if (command.module === undefined) return command.name ?? '(unnamed)';
  return `${command.name !== undefined ? `${command.name}, ` : ''}${basename(command.module)}#${command.export ?? 'default'}`;
}

/** One row's oracle: begin() before the scenario, finish() after it. */
export class LeakOracle {
  readonly #options: OracleOptions;
  readonly #ledger: LeakLedger;
  /** Compared in finish(). */
  #snapshots: ProcessFdSnapshot[] = [];
  /** Spawned command processes: pid -> snapshot, compared in onCommandClosed. */
  #commandProcesses = new Map<number, ProcessFdSnapshot>();
  #leaks: SeenEntry[] = [];
  #closed: FdEntry[] = [];
  /** Processes that must outlive their look (command processes, the run's helper daemon): pid -> what they are. */
  #mustOutlive = new Map<number, string>();
  /** A command process's last read after a call: the fds open then that its baseline lacks. */
  #lastRead = new Map<number, SeenEntry[]>();
  #ended: ProcessEnded[] = [];
  /** Numbers duplications gave each command process (given). */
  #given = new Map<number, Set<number>>();
  /** False once run() is done: the bench's calls are not read (a read per call would be timed). */
  #readingCalls = true;

  constructor(options: OracleOptions) {
    this.#options = options;
    this.#ledger = options.ledger ?? new LeakLedger();
  }

  /**
   * Snapshots the client and the helper daemon. The client's event loop
   * first opens what it would open lazily and keep (warmRuntimeFds), so
   * that a row never gets the blame for the runtime's own fds, however the
   * run's stdout is connected.
   */
  begin(): void {
    for (const r of warmRuntimeFds()) this.#options.note?.(`leak oracle: set aside ${describeRuntimeFd(r)}`);
    this.#snapshots = [new ProcessFdSnapshot(process.pid, 'client')];
    const helper = this.#options.helperPid;
    if (helper !== undefined) {
      let snap: ProcessFdSnapshot | undefined;
      try {
        snap = tryTake(helper, 'helper', this.#options.note);
      } catch (err) {
        this.release();
        throw err;
      }
      if (snap) {
        this.#snapshots.push(snap);
        this.#mustOutlive.set(helper, "the run's helper daemon");
      }
    }
  }

  /**
   * ctx.helper.restart(): the daemon `before` was ended by the harness, no
   * finding; the new one, `after`, is watched from now and must outlive
   * the look as its predecessor had to.
   */
  helperRestarted(before: number, after: number): void {
    this.#mustOutlive.delete(before);
    this.watch(after, 'helper');
    if (this.#snapshots.some((s) => s.pid === after)) this.#mustOutlive.set(after, "the run's helper daemon");
  }

  /**
   * A call() on a connection to `pid` settled: reads that command
   * process's table, so that should it end before its look, what it held
   * then is still known. Only while run() runs (stopReadingCalls).
   */
  callReturned(pid: number, method: string): void {
    // Not the helper daemon's: its table holds every connection's socket and given fds, which no read tells from a leak.
    const snap = this.#commandProcesses.get(pid);
    if (!snap || !this.#readingCalls) return;
    let changes;
    try {
      changes = snap.changes();
    } catch (err) {
      // The scenario's call() settles as it did: a read the oracle could not make is its note, not the call's error.
      this.#options.note?.(`leak oracle: could not read pid ${pid}'s fds after call ${method}(): ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const given = this.#given.get(pid);
    if (!changes) return;
    // seenAt names the FIRST read that saw an fd (same number, same target): where the leak appeared, not the last read that still showed it.
    const earlier = this.#lastRead.get(pid);
    const seenAt = (e: FdEntry): string =>
      earlier?.find((p) => p.fd === e.fd && p.target === e.target)?.seenAt ?? `its read after call ${method}() settled, before its process ended`;
    this.#lastRead.set(pid, changes.leaks.filter((e) => !given?.has(e.fd)).map((e) => ({ ...e, seenAt: seenAt(e) })));
  }

  /**
   * Duplications gave the command in `pid` these numbers: fdbridge's there
   * until the command adopts them, so a read after a call leaves them
   * out (one the command adopted and leaked is then not seen: a miss, never
   * a wrong blame). Returns `fds`.
   */
  given(pid: number, fds: number[]): number[] {
    if (this.#commandProcesses.has(pid)) {
      let set = this.#given.get(pid);
      if (!set) this.#given.set(pid, (set = new Set()));
      for (const fd of fds) set.add(fd);
    }
    return fds;
  }

  /** run() has returned: calls made from here on (the bench's) are not read. */
  stopReadingCalls(): void {
    this.#readingCalls = false;
  }

  /** `snap`'s process was gone at its look: a finding, and what its last read showed as leaks seen then. */
  async #gone(snap: ProcessFdSnapshot): Promise<void> {
    const what = this.#mustOutlive.get(snap.pid);
    if (what === undefined) return;
    this.#mustOutlive.delete(snap.pid);
    // A duplication's number is in the command's table before its promise
    // settles here (given): one a read after a concurrent call saw is left out now.
    const given = this.#given.get(snap.pid);
    const seen = this.#lastRead.get(snap.pid)?.filter((e) => !given?.has(e.fd));
    this.#lastRead.delete(snap.pid);
    const declared = (this.#options.ends ?? []).includes(snap.role === 'helper' ? 'helper' : 'command');
    // A declared end (a kill on purpose) is no leak of what the process held: the kernel closed it.
    if (declared) {
      for (const e of seen ?? []) this.#options.note?.(`leak oracle: ${what} (pid ${snap.pid}) had fd ${e.fd} -> ${e.target} open at ${e.seenAt ?? 'its last read'}; it ended as the scenario declares, so that is not counted`);
    } else this.#leaks.push(...(seen ?? []));
    const how = await this.#options.howEnded?.(snap.pid);
    this.#ended.push({
      pid: snap.pid,
      role: snap.role,
      what,
      ...(how !== undefined ? { how } : {}),
      lastRead: seen === undefined ? 'none' : seen.length === 0 ? 'clean' : 'leaks',
      ...(declared ? { declared: true } : {}),
    });
  }

  /** ctx.watchProcess: baseline now, compared in finish() (no leak if it is gone by then). */
  watch(pid: number, role: string): void {
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`watchProcess: ${pid} is not a pid`);
    if (this.#snapshots.some((s) => s.pid === pid) || this.#commandProcesses.has(pid)) return;
    const snap = tryTake(pid, role, this.#options.note);
    if (snap) this.#snapshots.push(snap);
  }

  /**
   * Right after connect: a command running in a process of its own (not
   * this one, not the run's helper) gets its baseline now.
   */
  connected(conn: Connection, command?: CommandSpec): void {
    const { pid } = conn.location;
    // Stryker disable next-line ConditionalExpression: with `pid === process.pid` forced false the check below returns for this process too (begin() snapshotted it); the helper's half is pinned by a helper whose table is not ours to read
    if (pid === process.pid || pid === this.#options.helperPid) return;
    if (this.#snapshots.some((s) => s.pid === pid) || this.#commandProcesses.has(pid)) return;
    if (conn.transport === 'remote') {
      const via = (conn as { via?: { pid?: number } }).via?.pid;
      if (via === undefined || !descendsFrom(pid, via)) {
        this.#options.note?.(`leak oracle: the remote command's pid ${pid} is not a process the via (pid ${String(via)}) started on this machine; not watched`);
        return;
      }
    }
    // What the command's construction opened before this look (the
    // process's READY names it): out of the baseline, a leak if still open.
    const by = `the constructor of the command${command ? ` ${commandName(command)}` : ''} (its module's load included)`;
    const role = conn.transport === 'helper' ? 'helper' : conn.transport === 'remote' ? 'remote' : 'child';
    // Fds the READY had no room to name are in any baseline read now, and
    // their closing would look like a wrong-fd close, their leak like
    // nothing: the process is not watched, and the row fails, saying how many.
    const omitted = conn.location.constructorFdsOmitted ?? 0;
    if (omitted > 0) {
      this.#leaks.push({
        pid,
        role,
        fd: -1,
        target: `(${omitted} more fd(s) the constructor left open, not named: past what its READY holds; whether they leak cannot be told)`,
        openedBy: by,
      });
      this.#options.note?.(`leak oracle: pid ${pid} (${role}) not watched: its READY left ${omitted} of the constructor's fds unnamed`);
      return;
    }
    const attributed = (conn.location.constructorFds ?? []).map(({ fd, target }) => ({ fd, target, by }));
    const snap = tryTake(pid, role, this.#options.note, attributed);
    if (!snap) return;
    // Another helper daemon (a scenario's own) lives on after close: compare it at the end.
    if (conn.transport === 'helper') this.#snapshots.push(snap);
    else {
      this.#commandProcesses.set(pid, snap);
      this.#mustOutlive.set(pid, `the ${conn.transport} command's process`);
    }
  }

  /** The connection's onCommandClosed hook: compare a spawned command process before it exits. */
  async commandClosed(location: CommandLocation): Promise<void> {
    const snap = this.#commandProcesses.get(location.pid);
    if (!snap) return;
    this.#commandProcesses.delete(location.pid);
    try {
      const report = await settleFdSnapshots([snap], { settleMs: this.#options.settleMs });
      if (report.gone.length > 0) await this.#gone(snap);
      this.#lastRead.delete(location.pid);
      this.#mustOutlive.delete(location.pid);
      this.#leaks.push(...report.leaks);
      this.#closed.push(...report.closed);
    } finally {
      snap.release();
    }
  }

  /**
   * Ends the holds of every snapshot's baseline files (idempotent): finish()
   * does it; a row that ends without finish() (stopped, failed before the
   * look) calls this.
   */
  release(): void {
    for (const snap of [...this.#snapshots, ...this.#commandProcesses.values()]) snap.release();
  }

  /**
   * After the scenario and after its connections are closed: settles and
   * compares every remaining process. Command processes whose hook never ran
   * (the connection broke) are compared too if they are still alive.
   */
  async finish(): Promise<OracleVerdict> {
    const rest = [...this.#snapshots, ...this.#commandProcesses.values()];
    this.#commandProcesses.clear();
    let report;
    try {
      report = await settleFdSnapshots(rest, { settleMs: this.#options.settleMs });
    } finally {
      for (const snap of rest) snap.release();
    }
    for (const { pid } of report.gone) {
      const snap = rest.find((s) => s.pid === pid);
      if (snap) await this.#gone(snap);
    }
    // A FileHandle's fd, held open by harness/file-handles.ts whenever the garbage collector runs: named as such.
    const leaks = [...this.#leaks, ...report.leaks].map((e) =>
      e.pid === process.pid && e.openedBy === undefined && heldByFileHandle(e.fd) ? { ...e, openedBy: FILE_HANDLE } : e,
    );
    const { reclaimed, rest: closed } = this.#ledger.reclaim([...this.#closed, ...report.closed]);
    this.#ledger.add(leaks);
    // fdbridge's own copies still waiting for its background closer (behind
    // closes that block): no row's leak; carried like one, so that their
    // close in a later row is no blame either.
    for (const e of report.closing ?? []) {
      this.#options.note?.(`leak oracle: set aside fd ${e.fd} -> ${e.target} (${e.role}): fdbridge's own copy, still queued on its background closer behind closes that block`);
    }
    this.#ledger.add(report.closing ?? []);
    // fdbridge's own copies of a log fd held by a line whose write has not
    // returned (a stopped terminal): the same.
    for (const e of report.writing ?? []) {
      this.#options.note?.(`leak oracle: set aside fd ${e.fd} -> ${e.target} (${e.role}): fdbridge's own copy of a log fd, held by a log line whose write has not returned`);
    }
    this.#ledger.add(report.writing ?? []);
    // fdbridge's own fds (a connection's socket and pidfd, a worker thread's
    // loop fds) that it closed during the row: no wrong-fd close of the row's.
    for (const e of report.ownClosed ?? []) {
      this.#options.note?.(`leak oracle: set aside fd ${e.fd} -> ${e.target} (${e.role}): fdbridge's own before the row, closed by fdbridge during it`);
    }
    return { leaks: leaks.map(strip), closed: closed.map(strip), reclaimed: reclaimed.map(strip), ended: this.#ended };
  }
}

/** `pid`'s parent as this machine's /proc says, or undefined when it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    // Stryker disable BlockStatement: the catch below emptied returns undefined as well (the mark leads the try's first statement: one above `} catch` leads no node, and Stryker reads no other)
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the parent is the second field after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}
// Stryker restore BlockStatement

/** True when `pid` is `ancestor` or one of its descendants on this machine. */
function descendsFrom(pid: number, ancestor: number): boolean {
  // Stryker disable next-line ConditionalExpression,EqualityOperator: past 1 or 2 (kthreadd) the parent is 0, and /proc/0/stat does not exist: undefined ends the walk the same way
  for (let p: number | undefined = pid; p !== undefined && p > 0; p = parentOf(p)) {
    if (p === ancestor) return true;
    // Stryker disable next-line ConditionalExpression: without it the walk reads init's parent, 0, and ends there, false as well
    if (p === 1) return false;
  }
  return false;
}

/**
 * A snapshot of `pid`, or undefined when it has already ended, or when its
 * table is not ours to read (a command run as another uid while we are not
 * root): the oracle cannot speak for that process, and says so in a note.
 */
function tryTake(pid: number, role: string, note?: (text: string) => void, attributed?: readonly { fd: number; target: string; by: string }[]): ProcessFdSnapshot | undefined {
  try {
    return new ProcessFdSnapshot(pid, role, attributed);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    if (code === 'EACCES' || code === 'EPERM') {
      note?.(`leak oracle: cannot read the fd table of pid ${pid} (${role}): ${code}; not watched`);
      return undefined;
    }
    throw err;
  }
}
