/**
 * The rows of a run in a process of their own (harness/run-child.ts),
 * watched from this one, whose event loop scenario code never blocks.
 *
 * Why a process, not a worker thread: a row's time limit is a timer on the
 * event loop of the thread the scenario runs on, and a scenario that blocks
 * that thread (a readSync on a pipe whose write end it still holds, a busy
 * loop, an execSync, a deadlock) keeps it from firing; so would SIGINT and
 * SIGTERM, which Node handles on that loop too. Worker.terminate() stops
 * JavaScript, not a thread waiting in read(2) or in native code, and a
 * worker shares this process's fd table, so what it held would stay open
 * here. A process can always be killed, and the kernel closes what it held.
 * The same pattern as execa's `timeout` (the signal, then SIGKILL after
 * forceKillAfterDelay) and workerpool's terminate (a message, then a kill
 * after a grace), with a new process for the rows left, as jest-worker
 * starts a new child for one that died.
 *
 * The watch: each step of a row that runs scenario code announces its time
 * limit (RowEnvironment.onDeadline); the supervisor arms its own timer
 * with it. Once that has passed, the row process must answer a ping within
 * UNRESPONSIVE_MS, and again every UNRESPONSIVE_MS until the row's result
 * comes: while its event loop turns, its own timers end the row (closing its
 * connections, the leak oracle's verdict) as they would in one process. A
 * row process that does not answer is blocked: it is killed (SIGKILL; its
 * children first), its row fails, and a new row process runs the rows left.
 * A row process that exits during a row (a scenario's process.exit(), a
 * crash) fails that row the same way.
 *
 * What the leak oracle sees: it runs in the row process, against that
 * process's own fd table, baselined after the warm-up, as it would in one
 * process. A killed row process leaks nothing (the kernel closes its fds),
 * but the fds it had opened during the row and still held are named in the
 * row (rowProcess.held): the supervisor reads its fd table when the row
 * starts (the row process waits for the message then) and just before it
 * kills it.
 *
 * Temporary directories: the supervisor makes each row's directory and
 * removes it after the row (the row process removes it too when it can),
 * so a killed row leaves none.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

import { killIfSpawned } from '../src/child-process';
import { diffFdTables, fdTargets, openFdTable, type FdTable } from '../src/fd';
import { requireDistFile } from '../src/paths';
import { cleanupOnExit, ownTempDir } from './exit-cleanup';
import { exitText, type Ended } from './exit-text';
import { peakRssOf } from './helper-process';
import type { PlannedRow, PlanOptions, RowHooks, RowSessionOptions, RowsOutcome } from './runner';
import type { Leak, ResultRow, ResultsFile } from './types';

export { exitText };

/**
 * How long a row process past a deadline may leave a ping unanswered before
 * it is taken as blocked and killed. A live event loop answers in
 * milliseconds; this is the margin for a machine so loaded that a runnable
 * process waits that long for a CPU (a row killed then still fails: it was
 * past its time limit).
 */
export const UNRESPONSIVE_MS = 3000;

/**
 * How long a row process that answers pings may stay past the time limit
 * of the step it last announced without announcing another step or ending
 * the row. Every step of a row is bounded by the row process's own timer
 * (run(), the closes after it, the leak oracle's look), and a loop that
 * turns fires it: past this margin the row process has lost the row (a
 * defect of the harness, such as a rejection nothing waited for), and it
 * is killed rather than waited for forever.
 */
export const STALLED_MS = 30_000;

/**
 * The least time a row process has to start (Node, the addon, every
 * scenario module) before it is watched, whatever the rows' --timeout: a
 * start is not a row, and a loaded machine or the sanitized build slows it.
 */
export const START_MS = 10_000;

/**
 * The row process's fd for its IPC channel to the run: 'ipc' is index 3 of
 * the stdio it is spawned with (RowProcess). A scenario that closes this fd
 * cuts the row process off: the run sees its end of the channel end.
 */
export const CHANNEL_FD = 3;

/**
 * A row's temporary directory: `$TMPDIR/fdbridge-<scenario>-<pid>-XXXXXX`
 * (ownTempDir), of the scenario's name its first 40 characters, each one
 * other than a letter, digit, `.`, `_` or `-` written `_`. A name is free
 * text: a `/` in it would make the directory outside $TMPDIR (`../x`) or in
 * a directory that does not exist (ENOENT, ending the run), a NUL would
 * fail mkdtemp.
 */
export function rowDirPrefix(scenario: string): string {
  return `fdbridge-${scenario.slice(0, 40).replace(/[^A-Za-z0-9._-]/g, '_')}-`;
}

/** What the row process needs to plan the same rows and run them as this process would. */
export interface RowProcessInit {
  scenariosDir: string;
  plan: PlanOptions;
  session: Omit<RowSessionOptions, 'rows' | 'signal' | 'info' | 'onDeadline'>;
  /** The rows as "<scenario>/<transport>/<pass>", in run order: the row process checks it planned the same. */
  labels: string[];
}

/** Supervisor -> row process. */
export type ToRowProcess =
  | { type: 'init'; init: RowProcessInit }
  | { type: 'row'; index: number; dir: string }
  | { type: 'ping' }
  | { type: 'stop'; reason: string }
  | { type: 'finish' };

/** Row process -> supervisor. */
export type FromRowProcess =
  | { type: 'info'; line: string }
  | { type: 'ready'; anchors: ResultsFile['anchors'] }
  | { type: 'failed'; message: string }
  | { type: 'deadline'; ms: number; what: string }
  | { type: 'result'; index: number; result: ResultRow; clientPeakRss: number; helperPeakRss: number | undefined }
  /**
   * The result of an earlier row of this process (index) as it stands now:
   * what appeared after that row's leak oracle looked, up to the next row's
   * begin (or the process's end), is charged to it (RowSession.run).
   */
  | { type: 'settled'; index: number; result: ResultRow }
  /**
   * As a row (index) begins, before its code runs: what the row before it in
   * this process (earlier) left running (RowSession.run's onLeftRunning),
   * should this process end during the row.
   */
  | { type: 'left-running'; index: number; earlier: number; leftRunning: string[] }
  /** After a row's result: the process runs no other row (a row changed its credentials, which could not be put back) and ends. */
  | { type: 'retiring'; why: string }
  | { type: 'pong' }
  | { type: 'closed'; clientPeakRss: number; helperPeakRss: number | undefined };

/** "<scenario>/<transport>/<pass>" */
export function rowLabels(rows: readonly PlannedRow[]): string[] {
  return rows.map((r) => `${r.scenario.name}/${r.transport}/${r.iteration}`);
}

/** The process ended before it sent what was waited for. */
class RowProcessGone extends Error {}

/**
 * The pids of `pid`'s children now (over all its threads); none once it is
 * gone. A thread that ends between the listing and the read (a worker, a
 * libuv or addon thread) had no children of its own left: its entry is
 * skipped, not an error.
 */
export function childrenOf(pid: number): number[] {
  const gone = (err: unknown): boolean => ['ENOENT', 'ESRCH'].includes((err as NodeJS.ErrnoException).code ?? '');
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    if (gone(err)) return [];
    throw err;
  }
  return tasks.flatMap((tid) => {
    let list: string;
    try {
      list = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch (err) {
      if (gone(err)) return [];
      throw err;
    }
    return list
      .split(' ')
      .filter((p) => p !== '')
      .map(Number);
  });
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/**
 * SIGKILLs every process below `pid` (what a scenario spawned, and what
 * those spawned: `execSync('a | b')` makes a shell whose children are the
 * pipeline), not `pid` itself. Each is stopped (SIGSTOP) as it is found, so
 * that none can fork a child the walk would miss, then all are killed. A
 * process that left the tree (daemonized, reparented to init) is out of
 * reach, as it is for any supervisor short of a cgroup.
 */
export function killDescendants(pid: number): void {
  const found: number[] = [];
  const seen = new Set<number>();
  let frontier = [pid];
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const parent of frontier) {
      for (const child of childrenOf(parent)) {
        if (seen.has(child)) continue;
        seen.add(child);
        sendSignal(child, 'SIGSTOP');
        found.push(child);
        next.push(child);
      }
    }
    frontier = next;
  }
  for (const child of found) sendSignal(child, 'SIGKILL');
}

/**
 * The processes other than `except` whose fds name `target` (a socket:
 * `socket:[inode]`), each as "pid N (comm)": who still holds the row
 * process's channel once it has exited (a grandchild it left, given that
 * fd). Processes whose tables cannot be read are not listed.
 */
function holdersOf(target: string, except: number): string[] {
  const found: string[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return found;
  }
  for (const d of pids) {
    const pid = Number(d);
    if (pid === except || pid === process.pid) continue;
    let targets: string[];
    try {
      targets = fdTargets(pid); // the targets alone: no fdinfo read for each fd of each process
    } catch {
      continue; // gone, or another user's
    }
    if (!targets.includes(target)) continue;
    let comm = '?';
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      // gone since
    }
    found.push(`pid ${pid} (${comm})`);
  }
  return found;
}

/** How long a row process's channel may take to reach its end of file after the process exited, before the run lets go of it. */
const CHANNEL_EOF_MS = 1000;

/** The row process's channel fd when its channel ended: what it named at the start, and now (absent: closed). */
interface ChannelEnd {
  fd: number;
  was: string;
  now?: string;
}

/** What fd CHANNEL_FD of `pid` names, or undefined when it cannot be read (the process is gone). */
function channelTarget(pid: number): string | undefined {
  try {
    return openFdTable(pid).get(CHANNEL_FD);
  } catch {
    return undefined;
  }
}

/** Why a row process's channel ended, as the row's error says it. */
function channelWhy(proc: RowProcess, c: ChannelEnd): string {
  const how =
    c.now === undefined
      ? `the scenario closed the harness's channel (fd ${c.fd} -> ${c.was}): fd ${c.fd} is closed in the row process`
      : c.now !== c.was
      ? `the scenario closed the harness's channel (fd ${c.fd} -> ${c.was}): fd ${c.fd} names ${c.now} in the row process now`
      : `the row process's channel to the run (fd ${c.fd} -> ${c.was}) ended, though the fd is still open, and the process did not exit within ${UNRESPONSIVE_MS} ms`;
  return `${how}; it could report nothing more, and its row process (pid ${proc.pid}) was killed`;
}

/** One row process, its messages, and the watch on its event loop. */
class RowProcess {
  readonly pid: number;
  readonly exited: Promise<Ended>;
  readonly #child: ChildProcess;
  readonly #waiters = new Set<(m: FromRowProcess) => void>();
  readonly #info: (line: string) => void;
  readonly #stalledMs: number;
  #heard = false;
  /** When the watched limit passed (performance.now()). */
  #expiredAt = 0;
  #deadline: NodeJS.Timeout | undefined;
  #pinger: NodeJS.Timeout | undefined;
  /** The last time limit the row process announced for the current row (undefined: the row has not begun). */
  last: { ms: number; what: string } | undefined;
  /** The time limit watched now. */
  armed: { ms: number; what: string } | undefined;
  /** The last row that ended in it: "<scenario> on <transport>". */
  lastRow: string | undefined;
  /** Set once it said it runs no other row ('retiring'), and why. */
  retiring: string | undefined;
  /** What the row before the one that began last left running, as it began ('left-running'). */
  leftBefore: { index: number; earlier: number; leftRunning: string[] } | undefined;
  /**
   * Set when the supervisor killed it: what it held that it had opened
   * since the row began, and whether it still answered pings then (it had
   * lost the row: STALLED_MS) or not (blocked).
   */
  killed: { held: Leak[]; answering: boolean; channel?: ChannelEnd } | undefined;
  /** See STALLED_MS. */
  get stalledMs(): number {
    return this.#stalledMs;
  }
  /** Its fd table as the current row began. */
  baseline: FdTable | undefined;
  /**
   * Set once it has exited with its channel still open at the other end:
   * the processes that held the channel then (it left them, given that fd),
   * which the run let go of.
   */
  strays: string[] | undefined;
  /** Resolves once it has exited and this end of its channel is closed (`strays` set by then). */
  readonly released: Promise<void>;
  /** What its channel's fd (CHANNEL_FD) named once it was spawned: the socket to this process. */
  readonly #channel: string | undefined;
  readonly #listeners = new Set<(m: FromRowProcess) => void>();

  constructor(init: RowProcessInit, info: (line: string) => void, stalledMs: number) {
    this.#info = info;
    this.#stalledMs = stalledMs;
    // Its own stdout and stderr are the run's (a scenario's output shows);
    // its stdin is not a terminal's. SIGINT from a terminal reaches it too
    // (one process group): it ignores it, and the supervisor stops it.
    this.#child = spawn(process.execPath, [requireDistFile('harness/run-child.js')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const child = this.#child;
    this.exited = new Promise<Ended>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      // Only a failed spawn (EAGAIN, EMFILE) emits 'error' without 'exit'.
      child.once('error', () => {
        if (child.pid === undefined) resolve({ code: null, signal: null });
      });
    });
    if (child.pid === undefined) throw new Error('the row process could not be started');
    this.pid = child.pid;
    // Set up before its exec (spawn returns after that): the socket is in place.
    this.#channel = channelTarget(this.pid);
    child.on('disconnect', () => this.#disconnected());
    // A second signal's process.exit() (cli/run.ts) ends this process at once: the row process goes too.
    const forget = cleanupOnExit(() => this.#killNow());
    this.released = this.exited.then(async () => {
      forget();
      // Nothing left to watch: no timer may keep this process alive.
      this.calm();
      // A process it left that was given the channel's fd (a detached
      // grandchild) keeps the channel open, and this end of it would keep
      // the run from ever exiting: let go of it, and say who holds it.
      // Its last messages may still be unread at its exit: its channel's end
      // of file ('disconnect') comes after them, unless a process it left
      // holds the channel. Waited for a while (and a turn's reads after
      // that) before it is forced, which would drop what is unread.
      if (child.connected) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => setImmediate(resolve), CHANNEL_EOF_MS);
          child.once('disconnect', () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      if (child.connected) {
        this.strays = this.#channel === undefined ? [] : holdersOf(this.#channel, this.pid);
        // 'disconnect' comes once this end's fd is closed.
        const closed = new Promise((resolve) => child.once('disconnect', resolve));
        child.disconnect();
        await closed;
        if (this.strays.length > 0) this.#info(`the row process (pid ${this.pid}) exited; ${this.strays.join(', ')} still held its channel to the run: let go of`);
      }
    });
    child.on('message', (m: FromRowProcess) => {
      this.#heard = true;
      if (m.type === 'info') this.#info(m.line);
      if (m.type === 'deadline') this.watchFrom(m.ms, m.what);
      for (const l of this.#listeners) l(m);
      for (const w of [...this.#waiters]) w(m);
    });
    this.send({ type: 'init', init });
  }

  /** Calls `listener` with every message from now on (before the waits see it). */
  listen(listener: (m: FromRowProcess) => void): void {
    this.#listeners.add(listener);
  }

  /**
   * Its end of the channel ended while it still runs. A process that exits
   * closes all its fds at once (its table reads empty then, or it is gone):
   * its 'exit' follows and tells. A live one whose channel fd is closed or
   * names another file now had it closed by the code it runs (a scenario's
   * close(3)): it can send nothing more, not even a row's result, and is
   * killed at once. A live one whose fd still names the socket (the channel
   * ended some other way) is given UNRESPONSIVE_MS to exit, then killed.
   */
  #disconnected(): void {
    if (this.killed !== undefined || this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    let now: FdTable;
    try {
      now = openFdTable(this.pid);
    } catch {
      return; // gone already: 'exit' tells
    }
    if (now.size === 0) return;
    const target = now.get(CHANNEL_FD);
    const channel: ChannelEnd = { fd: CHANNEL_FD, was: this.#channel ?? '?', ...(target !== undefined ? { now: target } : {}) };
    if (this.#channel === undefined || target !== this.#channel) {
      this.calm();
      this.kill(false, channel);
      return;
    }
    const timer = setTimeout(() => {
      this.calm();
      this.kill(false, channel);
    }, UNRESPONSIVE_MS);
    void this.exited.then(() => clearTimeout(timer));
  }

  send(m: ToRowProcess): void {
    // Once it has exited, nothing is waiting for an answer: exited settles the waits.
    if (this.#child.connected) this.#child.send(m, (err: Error | null) => void err);
  }

  /** Resolves with the first message `pick` takes; rejects with RowProcessGone once the process has exited. */
  wait<T>(pick: (m: FromRowProcess) => T | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiter = (m: FromRowProcess): void => {
        const got = pick(m);
        if (got === undefined) return;
        this.#waiters.delete(waiter);
        resolve(got);
      };
      this.#waiters.add(waiter);
      void this.exited.then((how) => {
        if (!this.#waiters.delete(waiter)) return;
        reject(new RowProcessGone(`the row process (pid ${this.pid}) exited (${exitText(how, 'status') ?? 'not started'})`));
      });
    });
  }

  /**
   * From `ms` on, its event loop must answer pings (see the file comment).
   * `announced`: the row process announced this limit (a step of the row
   * began); false for the supervisor's own (a row sent, not yet begun).
   */
  watchFrom(ms: number, what: string, announced = true): void {
    this.calm();
    this.armed = { ms, what };
    if (announced) this.last = this.armed;
    this.#deadline = setTimeout(() => this.#expire(), ms);
  }

  /** No watch until the next watchFrom. */
  calm(): void {
    clearTimeout(this.#deadline);
    clearInterval(this.#pinger);
    this.#deadline = undefined;
    this.#pinger = undefined;
  }

  #expire(): void {
    this.#deadline = undefined;
    this.#heard = false;
    this.#expiredAt = performance.now();
    this.send({ type: 'ping' });
    this.#pinger = setInterval(() => {
      const answering = this.#heard;
      if (!answering || performance.now() - this.#expiredAt > this.#stalledMs) {
        this.calm();
        this.kill(answering);
        return;
      }
      this.#heard = false;
      this.send({ type: 'ping' });
    }, UNRESPONSIVE_MS);
  }

  /**
   * SIGKILL to it and to its children (the helper daemon, command
   * processes, whatever a scenario spawned; their own children see their
   * parent exit), noting first which fds it held that it had opened since
   * the row began. Children first: a row process that is killed no longer
   * reaps them, and a dead child is a zombie with its pid still its own
   * until then.
   */
  kill(answering = false, channel?: ChannelEnd): void {
    if (this.killed !== undefined || this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    let held: Leak[] = [];
    try {
      const now = openFdTable(this.pid);
      // The leak oracle's holds of its baselines are in tables of their own (FdTableHold), not in this one.
      held = this.baseline ? diffFdTables(this.baseline, now).opened.map((e) => ({ pid: this.pid, role: 'client', fd: e.fd, target: e.target })) : [];
    } catch {
      // It exited meanwhile: it holds nothing.
    }
    this.killed = { held, answering, ...(channel ? { channel } : {}) };
    this.#killNow();
  }

  /** Kills the row process and every process below it (killDescendants). */
  #killNow(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) sendSignal(this.pid, 'SIGSTOP');
    killDescendants(this.pid);
    killIfSpawned(this.#child, 'SIGKILL');
  }
}

/**
 * Why the supervisor killed `proc` during `step`: once the step's limit had
 * passed, its thread did not answer (it blocks or spins; `blocks` names what
 * typically blocks in that step), or it still answered but neither ended
 * `task` nor began another step.
 */
function killedWhy(proc: RowProcess, step: { ms: number; what: string }, task: string, blocks: string): string {
  return proc.killed?.answering
    ? `${step.what}: its time limit of ${step.ms} ms passed more than ${proc.stalledMs} ms ago, and its row process (pid ${proc.pid}) still answered ` +
        `but neither ended ${task} nor began another step`
    : `${step.what} timed out after ${step.ms} ms, and its thread did not return to its event loop within ${UNRESPONSIVE_MS} ms more ` +
        `(it blocks or spins: ${blocks}, a busy loop, a deadlock)`;
}

/** A ResultRow for a row whose process was killed or exited during it. */
function lostRow(row: PlannedRow, proc: RowProcess, how: Ended, durationMs: number): ResultRow {
  const held = proc.killed?.held ?? [];
  const step = proc.last ?? proc.armed ?? { ms: 0, what: `${row.scenario.name} on ${row.transport}` };
  const why = (): string => killedWhy(proc, step, 'the row', 'a synchronous read that waits for data');
  const channel = proc.killed?.channel;
  const error = proc.last === undefined
    ? `the row process (pid ${proc.pid}) ${proc.killed ? 'was killed' : 'exited'} before the row began, in a new row process too`
    : channel
    ? channelWhy(proc, channel)
    : proc.killed?.answering
    ? `${why()}: the harness lost track of the row (its defect, not the scenario's); the row process was killed`
    : proc.killed
    ? `${why()}: its row process (pid ${proc.pid}) was killed`
    : `the row process (pid ${proc.pid}) exited during the row (${exitText(how, 'status') ?? 'how is not known'}): ` +
      'the scenario ended it (process.exit()) or it crashed';
  const notes = held.length > 0 ? [`held when its process was killed (opened during the row; the kernel closed them with the process): ${held.map((l) => `fd ${l.fd} -> ${l.target}`).join('; ')}`] : [];
  // The harness's channel, open before the row, closed by it: a wrong-fd close as the leak oracle reports one.
  const closed: Leak[] = channel && channel.now !== channel.was ? [{ pid: proc.pid, role: 'client', fd: channel.fd, target: channel.was }] : [];
  return {
    scenario: row.scenario.name,
    transport: row.transport,
    status: 'fail',
    leaks: [],
    error,
    durationMs: Math.round(durationMs),
    ...(notes.length > 0 ? { notes } : {}),
    ...(closed.length > 0 ? { closed } : {}),
    rowProcess: channel
      ? { pid: proc.pid, ended: 'channel-closed', held }
      : proc.killed
      ? { pid: proc.pid, ended: 'killed', held }
      : { pid: proc.pid, ended: 'exited', code: how.code, signal: how.signal, held },
    expect: row.scenario.expect ?? 'pass',
    iteration: row.iteration,
  };
}

export interface SuperviseOptions {
  scenariosDir: string;
  plan: PlanOptions;
  session: RowSessionOptions;
  hooks: RowHooks;
  /** See STALLED_MS (its default). */
  stalledMs?: number;
}

/** Runs `session.rows` in row processes (see the file comment); rejects with the signal's reason once stopped. */
export async function superviseRows(o: SuperviseOptions): Promise<RowsOutcome> {
  const { rows, signal, info } = o.session;
  const { timeoutMs } = o.session;
  const labels = rowLabels(rows);
  const results: ResultRow[] = [];
  let anchors: ResultsFile['anchors'] = [];
  let helperPeakRss: number | undefined;
  let clientPeakRss = 0;
  const peaks = (m: { clientPeakRss: number; helperPeakRss: number | undefined }): void => {
    clientPeakRss = Math.max(clientPeakRss, m.clientPeakRss);
    if (m.helperPeakRss !== undefined) helperPeakRss = Math.max(helperPeakRss ?? 0, m.helperPeakRss);
  };
  let proc: RowProcess | undefined;
  let measuredAnchors = false;
  /**
   * The last row's result from its row process, held until that process
   * has sent the next row's result or ended: meanwhile what the row's code
   * left running did is charged to it ('settled' replaces the result;
   * RowSession.run). `notes`: this process's own, added as it is released.
   */
  let held: { index: number; result: ResultRow; proc: RowProcess; notes: string[] } | undefined;
  const finalize = (result: ResultRow, index: number): void => {
    results.push(result);
    o.hooks.onRowEnd?.(result, index, rows.length);
  };
  /** Once `p` has ended and been released: the held row, its last, names what still held its channel. */
  const strayNote = (p: RowProcess): void => {
    const strays = p.strays ?? [];
    if (strays.length > 0 && held?.proc === p) {
      held.notes.push(
        `after the row process (pid ${p.pid}) exited, ${strays.join(', ')} still held its channel to the run (fd ${CHANNEL_FD}), given to it by a row of that process (this one was its last): the run let go of the channel and did not wait for it`,
      );
    }
  };
  /**
   * A row process's end, once it was told to end or is ending on its own
   * (`why`): watched from now, its 'closed' (its peaks; none if it is gone
   * first), its release, then what still held its channel noted.
   */
  const awaitEnd = async (p: RowProcess, why: string, closed: Promise<{ clientPeakRss: number; helperPeakRss: number | undefined }>): Promise<void> => {
    p.watchFrom(0, why);
    try {
      peaks(await closed);
    } catch (err) {
      if (!(err instanceof RowProcessGone)) throw err;
    }
    await p.released;
    strayNote(p);
  };
  const release = (): void => {
    if (!held) return;
    const { index, result, notes } = held;
    held = undefined;
    finalize(notes.length > 0 ? { ...result, notes: [...notes, ...(result.notes ?? [])] } : result, index);
  };

  const start = async (): Promise<RowProcess> => {
    const { signal: _signal, info: _info, onDeadline: _onDeadline, rows: _rows, ...session } = o.session;
    const p = new RowProcess({ scenariosDir: o.scenariosDir, plan: o.plan, session: { ...session, anchors: !measuredAnchors }, labels }, info, o.stalledMs ?? STALLED_MS);
    proc = p;
    p.listen((m) => {
      if (m.type === 'settled' && held?.proc === p && held.index === m.index) held.result = m.result;
      if (m.type === 'retiring') p.retiring = m.why;
      if (m.type === 'left-running') p.leftBefore = { index: m.index, earlier: m.earlier, leftRunning: m.leftRunning };
    });
    // Starting loads every scenario module again (their top-level code runs:
    // it may block the thread), then starts the helper daemon and warms up,
    // steps the row process announces: it is watched as a row is.
    p.watchFrom(Math.max(timeoutMs, START_MS), 'the row process\'s start (loading the scenario modules)', false);
    const ready = await p
      .wait((m) => (m.type === 'ready' || m.type === 'failed' ? m : undefined))
      .catch((err: unknown) => {
        const why = p.killed ? `: ${killedWhy(p, p.armed ?? { ms: 0, what: 'its start' }, 'its start', "a scenario module's top-level code that waits")}` : '';
        throw new Error(`${(err as Error).message} before it was ready to run rows${why}`);
      });
    p.calm();
    if (ready.type === 'failed') {
      await p.exited;
      proc = undefined;
      throw new Error(ready.message);
    }
    if (!measuredAnchors) anchors = ready.anchors;
    measuredAnchors = true;
    return p;
  };

  /**
   * One row in the row process: its result, or a failed row if the process
   * was killed or exited once the row had begun. Undefined when that
   * happened before the row began (code an earlier row left running
   * blocked it or ended it): the row is then run again in a new process.
   */
  const attempt = async (row: PlannedRow, i: number, current: RowProcess, dir: string, mayRetry: boolean): Promise<ResultRow | undefined> => {
    const started = performance.now();
    // It waits for this message: its table now is the row's starting point.
    current.baseline = openFdTable(current.pid);
    // Its peak so far, should it not live to report it.
    peaks({ clientPeakRss: peakRssOf(current.pid) ?? 0, helperPeakRss: undefined });
    const done = current.wait((m) => (m.type === 'result' && m.index === i ? m : undefined));
    current.send({ type: 'row', index: i, dir });
    current.last = undefined;
    current.watchFrom(timeoutMs, `${row.scenario.name} on ${row.transport}`, false);
    try {
      const m = await done;
      peaks(m);
      current.lastRow = `${row.scenario.name} on ${row.transport}`;
      return m.result;
    } catch (err) {
      if (!(err instanceof RowProcessGone)) throw err;
      const how = await current.exited;
      proc = undefined;
      const what = current.killed === undefined ? 'exited' : 'was killed';
      if (current.last === undefined && mayRetry) {
        info(`the row process (pid ${current.pid}) ${what} before ${row.scenario.name} on ${row.transport} began (code an earlier row left running); the row runs in a new one`);
        return undefined;
      }
      info(`the row process (pid ${current.pid}) ${what} during ${row.scenario.name} on ${row.transport}; a new one runs the rows left`);
      const lost = lostRow(row, current, how, performance.now() - started);
      const left = current.leftBefore?.index === i ? current.leftBefore : undefined;
      const earlier = left && rows[left.earlier];
      if (left === undefined || earlier === undefined) return lost;
      // Code the earlier row left running (a child's exit callback) may be what ended or blocked it: the earlier row is
      // named, and is the suspect (its rerun runs both).
      return {
        ...lost,
        error:
          `${lost.error ?? ''}\n(possibly ${current.killed ? 'blocked' : 'ended'} by an earlier row's code: ${earlier.scenario.name} on ${earlier.transport} ran before it in this ` +
          `row process and left running ${left.leftRunning.join(', ')}, whose callbacks may ${current.killed ? 'block its thread' : 'end it'} during the next row)`,
        suspect: { scenario: earlier.scenario.name, transport: earlier.transport, iteration: earlier.iteration },
      };
    }
  };

  const onAbort = (): void => {
    if (!proc) return;
    proc.send({ type: 'stop', reason: String((signal?.reason as Error | undefined)?.message ?? signal?.reason) });
    proc.watchFrom(0, 'stopping');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (const [i, row] of rows.entries()) {
      signal?.throwIfAborted();
      o.hooks.onRowStart?.(row, i, rows.length);
      const rowDir = ownTempDir(rowDirPrefix(row.scenario.name));
      const dir = rowDir.path;
      let result: ResultRow | undefined;
      let from: RowProcess | undefined;
      /** Set once its process retired after it: the row is settled and released already. */
      let retired = false;
      const retried: string[] = [];
      try {
        while (result === undefined) {
          const current = proc ?? (await start());
          signal?.throwIfAborted();
          // Once only: a new process has no earlier row's code left in it.
          result = await attempt(row, i, current, dir, retried.length === 0);
          from = current;
          if (result !== undefined && current.retiring !== undefined) {
            // It ends after this row ('retiring'): the rows left run in a new one. The row is held as the last row of a
            // finished process is, before anything it sends as it ends is read: what its code left running did until
            // then ('settled') is charged to it, and its channel's strays named.
            release();
            held = { index: i, result, proc: current, notes: retried };
            await awaitEnd(current, 'retiring', current.wait((m) => (m.type === 'closed' ? m : undefined)));
            if (proc === current) proc = undefined;
            release();
            retired = true;
          }
          if (result === undefined) {
            const how = current.killed?.channel
              ? `closed its channel to the run (fd ${current.killed.channel.fd})`
              : current.killed
              ? 'blocked its thread'
              : 'ended it';
            retried.push(
              `row process pid ${current.pid} ${current.killed ? 'was killed' : 'exited'} before this row began: code an earlier row in it left running ` +
                `(the last one: ${current.lastRow ?? 'none'}) ${how}; the row ran in a new one`,
            );
          }
        }
      } finally {
        proc?.calm();
        rowDir.remove();
      }
      signal?.throwIfAborted();
      if (retired) continue;
      // The earlier row is settled: its process sent this row's result after its last 'settled', or it is gone.
      release();
      if (from !== undefined && proc === from) held = { index: i, result, proc: from, notes: retried };
      else finalize(retried.length > 0 ? { ...result, notes: [...retried, ...(result.notes ?? [])] } : result, i);
    }
    if (proc) {
      const closing = proc;
      const closed = closing.wait((m) => (m.type === 'closed' ? m : undefined));
      closing.send({ type: 'finish' });
      await awaitEnd(closing, 'closing', closed);
    }
    release();
    return { results, anchors, helperPeakRss, clientPeakRss };
  } catch (err) {
    // A row process that ended because the run was stopped fails its start or its row: the stop is the reason.
    if (signal?.aborted) throw signal.reason;
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (proc) {
      // Stopped, or something failed: a live row process is told to stop (again: it ignores a second) and watched.
      const last = proc;
      last.send({ type: 'stop', reason: signal?.aborted ? 'the run was stopped' : 'the run ended' });
      last.watchFrom(0, 'stopping');
      await last.released;
      last.calm();
    }
  }
}
