/**
 * The scenario runner: finds the scenarios, expands them into
 * scenario x transport rows, orders and shards them from the seed, runs each
 * row under the leak oracle with a time limit, and returns results.json.
 *
 * Reproducibility:
 * - Order: rows run in ascending hashSeed(seed, "<scenario>/<transport>")
 *   (pass k > 1 of --repeat: "<scenario>/<transport>/<k>"), so the same seed
 *   gives the same order, and a filtered or sharded run keeps the relative
 *   order of the full one.
 * - Inputs: each row's rng is createRng(seed).fork("<scenario>/<transport>")
 *   (pass k > 1: ".../<k>", so repeats explore new inputs, reproducibly).
 * - Shards (--shard i/n): a row belongs to shard 1 + (mix(hash("<scenario>/<transport>")) mod n).
 *   That depends on nothing but the row's own name: not on the seed, not on
 *   the other filters, not on which other scenarios exist. So every row is in
 *   exactly one shard, shards agree without talking to each other, and all
 *   --repeat passes of a row land in the same shard.
 */
import { ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { inspect, stripVTControlCharacters } from 'node:util';

import { connect, missingCapabilities, transportNames, type CommandSpec, type Connection, type ConnectOptions, type TransportName } from '../src';
import { waitForExit } from '../src/child-process';
import { PROBE_COMMAND } from '../src/commands/probe-command';
import { packageRoot } from '../src/paths';
import { diffFdTables, openFdTable } from '../src/fd';
import { leakOrigin } from '../src/fd-track';
import { describeFdEntry } from '../src/leak-check';
import { describeRuntimeFd, warmRuntimeFds } from '../src/runtime-fds';
import { requireModule } from '../src/ts-modules';
import { validateTimeoutMs } from '../src/validate';
import { collectEnvironment } from './environment';
import { ownTempDir, removedOnExit } from './exit-cleanup';
import { HELPER_START_MS, HelperProcess } from './helper-process';
import { LOCAL_REMOTE } from './local-remote';
import { LeakLedger, LeakOracle, type OracleVerdict } from './oracle';
import { describeChanges, restoreEnvironment, snapshotEnvironment, type EnvironmentChange, type EnvironmentSnapshot } from './process-env';
import { restoreProcessState, snapshotProcessState, type ProcessState } from './process-state';
import { profileByName } from './profiles';
import { RowWork } from './row-work';
import { exitText, rowDirPrefix, superviseRows } from './run-supervisor';
import { createRng, hashSeed, type Rng } from './rng';
import type {
  BenchCase,
  ErrorMatcher,
  Expectation,
  ExpectedFailure,
  HelperControl,
  Latency,
  Leak,
  LeakMatcher,
  ProcessEnded,
  ResultRow,
  ResultsFile,
  RunOptions,
  Scenario,
  ScenarioContext,
  Status,
} from './types';

/** Default seed when none is given: runs are reproducible out of the box. */
export const DEFAULT_SEED = 1;
/** Default per-row time limit (the profile may set another). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Default wait for asynchronous closes before the oracle calls a difference a leak. */
export const DEFAULT_SETTLE_MS = 1000;

/** Where compiled scenarios are looked for: $FDBRIDGE_SCENARIOS_DIR, else dist/scenarios. */
export function defaultScenariosDir(): string {
  const fromEnv = process.env['FDBRIDGE_SCENARIOS_DIR'];
  return fromEnv ? resolve(fromEnv) : join(packageRoot, 'dist', 'scenarios');
}

// ---------------------------------------------------------------------------
// discovery

/** A scenario and the file it came from. */
export interface LoadedScenario {
  scenario: Scenario;
  file: string;
}

function isScenario(value: unknown): value is Scenario {
  const s = value as Partial<Scenario> | null;
  return typeof s === 'object' && s !== null && typeof s.name === 'string' && typeof s.run === 'function';
}

/** A scenario file: compiled (`.scenario.js`), or TypeScript loaded as it is (`.scenario.ts`, `.scenario.cts`). */
const SCENARIO_FILE = /\.scenario\.(js|ts|cts)$/;

/**
 * Loads every scenario file in `dir` (sorted by file name): `*.scenario.js`,
 * and `*.scenario.ts` compiled as it loads, with no build step (the `.ts`
 * modules it imports too; src/ts-modules.ts). Each must default-export a
 * Scenario; names must be unique and transports known. Throws on any of
 * that, and when `dir` holds no scenario file at all.
 */
export function discoverScenarios(scenariosDir: string = defaultScenariosDir()): LoadedScenario[] {
  const dir = resolve(scenariosDir);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => SCENARIO_FILE.test(f) && !/\.d\.c?ts$/.test(f)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`no scenarios: ${dir} does not exist`);
    throw err;
  }
  if (files.length === 0) throw new Error(`no scenarios: ${dir} has no *.scenario.ts or *.scenario.js file`);
  const known = new Set<string>(transportNames());
  const byName = new Map<string, string>();
  const out: LoadedScenario[] = [];
  for (const f of files) {
    const file = join(dir, f);
    // A module may export anything, null included: only a Scenario passes.
    const mod = requireModule(file) as { default?: unknown } | null | undefined;
    const scenario = mod?.default ?? mod;
    if (!isScenario(scenario)) throw new TypeError(`${file}: the default export is not a Scenario ({ name, description, run })`);
    const seen = byName.get(scenario.name);
    if (seen) throw new Error(`scenario name ${scenario.name} is used by both ${seen} and ${file}`);
    byName.set(scenario.name, file);
    for (const t of scenario.transports ?? []) {
      if (!known.has(t)) throw new TypeError(`${file}: unknown transport ${t}; use ${[...known].join(', ')}`);
    }
    const declared = declarationProblem(scenario);
    if (declared) throw new TypeError(`${file}: ${declared}`);
    out.push({ scenario, file });
  }
  return out;
}

/** Why a scenario's expected failure is not declared well enough to be checked, if it is not. */
function declarationProblem(scenario: Scenario): string | undefined {
  const expect = scenario.expect ?? 'pass';
  const { leaks, error } = scenario.failure ?? {};
  if (expect === 'leak' && (leaks === undefined || leaks.length === 0)) {
    return "expect 'leak' needs failure.leaks: the file(s) whose leak the oracle must see";
  }
  if (expect === 'fail' && (error === undefined || (error.name ?? error.code ?? error.check) === undefined)) {
    return "expect 'fail' needs failure.error with a name, code or check: the error run() must end with";
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// planning

/** One scenario on one transport, in one --repeat pass. */
export interface PlannedRow {
  scenario: Scenario;
  /**
   * The file the scenario was loaded from (discoverScenarios); absent for
   * one given as an object. A leak whose --track-fds stack names it is
   * this scenario's (RowSession.run).
   */
  file?: string;
  transport: TransportName;
  /** 1..repeat */
  iteration: number;
}

/** murmur3's 32-bit finalizer: FNV-1a's low bits alone are too regular for `mod n`. */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The shard (1-based, of `count`) a row belongs to; see the file comment. */
export function shardOf(scenario: string, transport: string, count: number): number {
  return 1 + (mix32(hashSeed(0, `${scenario}/${transport}`)) % count);
}

/** Turns a --scenario pattern into a test: glob (`*`, `?`) matches the whole name, else a substring; commas separate alternatives. */
export function scenarioMatcher(pattern: string | undefined): (name: string) => boolean {
  if (pattern === undefined || pattern === '') return () => true;
  const tests = pattern
    .split(',')
    .filter((p) => p !== '')
    .map((p): ((name: string) => boolean) => {
      if (!/[*?]/.test(p)) return (name) => name.includes(p);
      const re = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
      return (name) => re.test(name);
    });
  return (name) => tests.some((t) => t(name));
}

/** The row's key for ordering and rng: "<scenario>/<transport>", plus "/<k>" from the second pass on. */
function rowLabel(scenario: string, transport: string, iteration: number): string {
  return iteration === 1 ? `${scenario}/${transport}` : `${scenario}/${transport}/${iteration}`;
}

export interface PlanOptions {
  transports?: readonly TransportName[];
  /** A --scenario pattern (scenarioMatcher). */
  scenario?: string;
  /** --scenario-name: only the scenarios named exactly so (every character literal). */
  scenarioNames?: readonly string[];
  profile?: string;
  seed?: number;
  repeat?: number;
  shard?: { index: number; count: number };
}

export interface Plan {
  rows: PlannedRow[];
  /** Rows selected before sharding (one pass); 0 means the filters matched nothing. */
  matched: number;
  /**
   * Every row of the unsharded run, one pass, as "<scenario>/<transport>",
   * sorted: the same in every shard of one run, so `fdbridge merge` can tell
   * a missing row from one that was never planned.
   */
  planned: string[];
}

/** The identity of a row in run order: its scenario, transport and --repeat pass. */
export interface RowKey {
  scenario: string;
  transport: string;
  iteration: number;
}

/**
 * `rows` in the run order of `seed` (see the file comment): pass by pass,
 * each pass by hashSeed(seed, label), ties by label. A new array.
 */
export function inRunOrder<T extends RowKey>(rows: readonly T[], seed: number): T[] {
  const keyed = rows.map((row) => {
    const label = rowLabel(row.scenario, row.transport, row.iteration);
    return { row, key: hashSeed(seed >>> 0, label), label };
  });
  keyed.sort((a, b) => a.row.iteration - b.row.iteration || a.key - b.key || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  return keyed.map((k) => k.row);
}

/**
 * Expands, filters, shards and orders the rows (see the file comment).
 * Scenarios given as discoverScenarios loaded them keep their files in
 * their rows (PlannedRow.file).
 */
export function planRows(scenarios: readonly (Scenario | LoadedScenario)[], options: PlanOptions = {}): Plan {
  const all = transportNames();
  const wanted = new Set(options.transports ?? all);
  const named = options.scenarioNames === undefined ? undefined : new Set(options.scenarioNames);
  const pattern = scenarioMatcher(options.scenario);
  const matches = (name: string): boolean => pattern(name) && (named === undefined || named.has(name));
  const profile = profileByName(options.profile ?? 'default');
  const seed = options.seed ?? DEFAULT_SEED;
  const repeat = options.repeat ?? 1;
  const base: Array<{ scenario: Scenario; file: string | undefined; transport: TransportName }> = [];
  for (const given of scenarios) {
    const { scenario, file } = 'scenario' in given ? given : { scenario: given, file: undefined };
    if (!profile.select(scenario) || !matches(scenario.name)) continue;
    for (const transport of scenario.transports ?? all) {
      if (wanted.has(transport)) base.push({ scenario, file, transport });
    }
  }
  const shard = options.shard;
  const mine = shard ? base.filter((r) => shardOf(r.scenario.name, r.transport, shard.count) === shard.index) : base;
  const passes: PlannedRow[] = [];
  for (let iteration = 1; iteration <= repeat; iteration++) passes.push(...mine.map((r) => ({ ...r, iteration })));
  const ordered = inRunOrder(
    passes.map((row) => ({ row, scenario: row.scenario.name, transport: row.transport, iteration: row.iteration })),
    seed,
  );
  return {
    rows: ordered.map((k) => k.row),
    matched: base.length,
    planned: base.map((r) => `${r.scenario.name}/${r.transport}`).sort(),
  };
}

// ---------------------------------------------------------------------------
// running one row

/** Thrown by ctx.skip(). */
class SkipSignal extends Error {
  constructor(readonly reason: string) {
    super(`skipped: ${reason}`);
  }
}

/** Failures that fail a row whatever it expected (a 'fail' scenario's throw must come from run() itself). */
class RowFailure extends Error {}
/** run() (or bench) outlived the row's time limit. */
class RowTimeout extends RowFailure {}
/** The harness failed around the scenario (helper restart, oracle). */
class HarnessError extends RowFailure {}
/** Something the scenario started threw or rejected with nobody listening. */
class BackgroundError extends RowFailure {}
/** The run was stopped (RunnerOptions.signal) while the row ran. */
class RowStopped extends RowFailure {}
/** run() (or bench) rejected with undefined (a bare `reject()`) or with a value `instanceof` cannot look at (a revoked proxy). */
class UnusableThrow extends RowFailure {}

/**
 * An error as one plain string for results.json and the terminal. Without
 * its ANSI colours: node:assert colours its diffs when stderr is a terminal,
 * and results.json and the report are read elsewhere.
 */
function errorText(err: unknown): string {
  // A scenario may throw anything: a value with no prototype, a throwing
  // getter or toString, a revoked proxy (even `instanceof` throws on it).
  try {
    if (err instanceof Error) {
      const code = (err as { code?: unknown }).code;
      const head = `${err.name}${typeof code === 'string' && !err.message.includes(code) ? ` [${code}]` : ''}: ${err.message}`;
      return stripVTControlCharacters(head);
    }
    return stripVTControlCharacters(String(err));
  } catch {
    try {
      return stripVTControlCharacters(`${typeof err}: ${inspect(err, { breakLength: Infinity })}`);
    } catch {
      return `a thrown ${typeof err} that cannot be shown`;
    }
  }
}

/**
 * What a row keeps of the value run() (or bench) rejected with: the value
 * itself, but undefined (which reads as "no error": the row would pass) and
 * a value `instanceof` throws on become a RowFailure naming them.
 */
function caught(err: unknown): unknown {
  if (err === undefined) return new UnusableThrow('run() rejected with undefined (a throw or reject() with no error): it did not complete');
  try {
    void (err instanceof Error);
    return err;
  } catch {
    return new UnusableThrow(`run() threw ${errorText(err)}`);
  }
}

function formatEntries(entries: readonly Leak[]): string {
  return entries
    .map((e) => `pid ${e.pid} (${e.role}): fd ${e.fd} -> ${e.target}${e.openedBy !== undefined ? `, opened by ${e.openedBy}` : ''}${e.seenAt !== undefined ? `, seen open at ${e.seenAt}` : ''}`)
    .join('; ');
}

/** One ended process, as a report line names it. */
function describeEnded(e: ProcessEnded): string {
  const last =
    e.lastRead === 'leaks'
      ? '; its last read, after a call, showed fds open that its baseline lacks (listed as leaks, seen then)'
      : e.lastRead === 'clean'
        ? '; its last read, after a call, showed no fd its baseline lacks'
        : '';
  const restart = e.role === 'helper' ? ' (the harness starts a new one before the next helper row)' : '';
  return `${e.what} (pid ${e.pid}) ended (${e.how ?? 'how is not known'}) before its fds could be read again: its leaks cannot be checked${last}${restart}`;
}

/** Notes, in `notes`, the ends the scenario declares (the oracle marked them: Scenario.ends); returns `ended`. */
function noteDeclaredEnds(ended: readonly ProcessEnded[], notes: string[]): ProcessEnded[] {
  for (const e of ended) if (e.declared) notes.push(`${describeEnded(e)}, as the scenario declares (ends)`);
  return [...ended];
}

/** How long the harness waits for a connection's close() after a row. */
const CLOSE_MS = 10_000;
/** How long the oracle waits for Node to report the exit status of a process it found gone. */
const EXIT_STATUS_MS = 2000;
/** How long a timed-out scenario's run() is given to unwind once its connections are closed. */
const UNWIND_MS = 500;

/**
 * Resolves with `p`'s outcome, or rejects with RowTimeout after `ms`, or
 * with `stopped`'s error once that rejects (the run was stopped). The
 * timer is cleared as soon as one of them settles: a scenario that never
 * settles, stopped, leaves no timer holding the process open.
 */
async function withTimeout<T>(p: Promise<T>, ms: number, what: string, stopped?: Promise<never>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      ...(stopped ? [stopped] : []),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new RowTimeout(`${what} timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a row needs from the run around it. */
interface RowEnvironment {
  seed: number;
  timeoutMs: number;
  settleMs: number;
  helper: HelperProcess | undefined;
  ledger: LeakLedger;
  bench: ((benchCase: BenchCase) => Promise<Latency>) | undefined;
  /** Errors the process reported (unhandled rejection, uncaught exception) while this row ran. */
  stray: unknown[];
  /** --track-fds: the directory the fd recorders write into. */
  trackDir: string | undefined;
  /** Rejects with RowStopped once the run is stopped; never settles otherwise. */
  stopped: Promise<never>;
  /**
   * Called as a step of the row that runs scenario code starts, with the
   * step's time limit and its name: the run's watchdog (harness/run-supervisor.ts)
   * checks, once that limit has passed, that this thread still answers.
   */
  onDeadline: ((ms: number, what: string) => void) | undefined;
  /** process.env as the session began (harness/process-env.ts): each row ends with it put back. */
  environment: EnvironmentSnapshot;
  /** The working directory, umask and credentials as the session began (harness/process-state.ts): each row ends with them put back. */
  processState: ProcessState;
  /** Set once a row changed the credentials and they could not be put back: what they are now. No later row is to run in this process. */
  stateLost?: string;
}

/** `result` with `notes` (terminal controls taken out) after its own; itself when there are none. */
function withNotes(result: ResultRow, notes: readonly string[]): ResultRow {
  return notes.length === 0 ? result : { ...result, notes: [...(result.notes ?? []), ...notes.map((n) => stripVTControlCharacters(n))] };
}

/**
 * restoreEnvironment, for a row's end or the next row's start. A
 * process.env that cannot be given its own object back (a row made the
 * property read-only) is the process's state lost, as credentials given up
 * are: a note says so, and no other row runs in this process.
 */
function putBackEnvironment(env: RowEnvironment, notes: string[]): EnvironmentChange[] {
  try {
    return restoreEnvironment(env.environment);
  } catch (err) {
    env.stateLost ??= `process.env (${errorText(err)})`;
    notes.push(`${ENVIRONMENT_CHANGED}, which cannot be put back (${errorText(err)}): a row process runs no other row after it (a new one runs the rows left)`);
    return [];
  }
}

/**
 * Puts back the working directory, umask and credentials the session began
 * with (harness/process-state.ts), noting in `notes` what the row changed;
 * what cannot be put back sets `env.stateLost`. Called again as the row
 * ends: a note already there (what is still lost) is not added twice.
 */
function putBackProcessState(env: RowEnvironment, notes: string[], earlier: EarlierRow | undefined): void {
  const state = restoreProcessState(env.processState);
  const others = earlier && earlier.leftRunning.length > 0 ? ` (or code ${earlier.label}, which ran before it in this process, left running did)` : '';
  const add = (note: string): void => {
    if (!notes.includes(note)) notes.push(note);
  };
  if (state.putBack.length > 0) add(`changed the process's ${state.putBack.join(', ')}${others}, put back as the row ended; the rows after it in this process would have run with them`);
  if (state.lost !== undefined) {
    env.stateLost = state.lost;
    add(
      `changed the process's ${state.lost}${others}, which cannot be put back (the privilege to is gone): a row process runs no other row ` +
        `after it (a new one runs the rows left); rows run in one process (isolation 'none') run with them`,
    );
  }
}

/** The leak, with where it was opened (src/fd-track.ts), read right away: the records of a process outlive it, a reused fd number does not. */
function withOrigin(leak: Leak, dir: string): Leak {
  return { ...leak, openedAt: leakOrigin(dir, leak.pid, leak.fd, leak.target) };
}

function leakMatches(leak: Leak, m: LeakMatcher): boolean {
  if (m.role !== undefined && m.role !== leak.role) return false;
  return typeof m.target === 'string' ? leak.target === m.target : m.target.test(leak.target);
}

function errorMatches(err: unknown, m: ErrorMatcher): boolean {
  // Stryker disable next-line ConditionalExpression: with `err === null` forced false, null reaches the try, where reading a property of it throws into the catch, which returns false as well (a 'fail' matcher names a name, code or check: declarationProblem refuses one that does not)
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; code?: unknown; check?: unknown };
  try {
    return (
      (m.name === undefined || e.name === m.name) &&
      (m.code === undefined || e.code === m.code) &&
      (m.check === undefined || e.check === m.check)
    );
  } catch {
    return false; // a throwing getter or a revoked proxy is not the declared error
  }
}

function describeMatcher(m: ErrorMatcher | LeakMatcher): string {
  return Object.entries(m)
    .map(([k, v]) => `${k} ${String(v)}`)
    .join(', ');
}

/**
 * Applies the scenario's expectation (harness/types.ts) to what happened: an
 * expected failure counts only when it is the declared one (that error; leaks
 * of those files), so a scenario that breaks some other way fails.
 */
function verdict(
  expect: Expectation,
  failure: ExpectedFailure,
  outcome: { error?: unknown; leaks: Leak[]; closed: Leak[]; pending?: string; ended?: readonly ProcessEnded[] },
): { status: Status; error?: string } {
  const { error, leaks, closed, pending } = outcome;
  const problems: string[] = [];
  if (closed.length > 0) problems.push(`closed ${closed.length} fd(s) that were open before it: ${formatEntries(closed)}`);
  if (pending !== undefined) problems.push(pending);
  // Whatever it expected: a process whose fds were not read again hides its leaks (a 'leak' or 'fail' scenario declares such an end).
  for (const e of outcome.ended ?? []) if (!e.declared) problems.push(describeEnded(e));
  if (error instanceof RowFailure) return { status: 'fail', error: [error.message, ...problems].join('\n') };
  if (error instanceof SkipSignal) {
    if (leaks.length > 0) problems.push(`leaked ${leaks.length} fd(s) before skipping: ${formatEntries(leaks)}`);
    return problems.length > 0 ? { status: 'fail', error: [error.message, ...problems].join('\n') } : { status: 'skip', error: error.reason };
  }
  switch (expect) {
    case 'pass':
      if (error !== undefined) problems.unshift(errorText(error));
      if (leaks.length > 0) problems.push(`undeclared leak of ${leaks.length} fd(s): ${formatEntries(leaks)}`);
      return problems.length > 0 ? { status: 'fail', error: problems.join('\n') } : { status: 'pass' };
    case 'leak': {
      const declared = failure.leaks ?? [];
      const other = leaks.filter((l) => !declared.some((m) => leakMatches(l, m)));
      if (error !== undefined) problems.unshift(`a 'leak' scenario must complete, but it threw: ${errorText(error)}`);
      if (leaks.length === 0) problems.push(`expected a leak of ${declared.map(describeMatcher).join(' or ')} ('leak' scenario), but the oracle saw none`);
      if (other.length > 0) problems.push(`undeclared leak of ${other.length} fd(s): ${formatEntries(other)}`);
      return problems.length > 0
        ? { status: 'fail', error: problems.join('\n') }
        : { status: 'expected-fail', error: `leak caught: ${formatEntries(leaks)}` };
    }
    case 'fail': {
      const declared = failure.error ?? {};
      if (error === undefined) problems.unshift(`expected run() to throw ${describeMatcher(declared)} ('fail' scenario), but it completed`);
      else if (!errorMatches(error, declared)) {
        problems.unshift(`expected run() to throw ${describeMatcher(declared)}, but it threw another error: ${errorText(error)}`);
      }
      if (leaks.length > 0) problems.push(`undeclared leak of ${leaks.length} fd(s): ${formatEntries(leaks)}`);
      return problems.length > 0
        ? { status: 'fail', error: problems.join('\n') }
        : { status: 'expected-fail', error: `failure caught: ${errorText(error)}` };
    }
    default:
      return { status: 'fail', error: `unknown expectation ${String(expect)}` };
  }
}

/** How a row's note on process.env begins (harness/process-env.ts). */
const ENVIRONMENT_CHANGED = 'changed process.env';
/** Why process.env is put back, and what a row that means to set a command's environment uses instead. */
const ENVIRONMENT_WHY =
  "the rows after it in this process, and the processes they start, would have inherited it (a command's own environment: connect's child.env option)";

/** The row that ran before this one in the same process, as a row sees it (RowSession.run). */
interface EarlierRow {
  /** "<scenario> on <transport>" */
  label: string;
  /** The row itself: a rerun of a row its code may have failed runs it too (ResultRow.suspect). */
  row: PlannedRow;
  /** Its scenario's file, when it was discovered from one. */
  file: string | undefined;
  /** What it left running as this row began (leftRunning): none, and no code of its can open an fd later. */
  leftRunning: string[];
  /** Charges it with leaks this row's look found that its code opened. */
  charge(leaks: Leak[]): void;
  /** Notes on it, without changing its verdict, that `leaks` may be its. */
  mention(leaks: Leak[]): void;
}

/** Whether a stack frame (`fn (file:line:col)` or `file:line:col`) is in `file`. */
function inFile(frame: string, file: string | undefined): boolean {
  return file !== undefined && (frame.includes(`(${file}:`) || frame.startsWith(`${file}:`));
}

/**
 * Sorts a row's leaks by who opened them when an earlier row ran in the
 * same process: that row's code may still run (a timer, a callback) and
 * open an fd during this row. With --track-fds, a leak whose recorded JS
 * stack names the earlier scenario's file and not this one's is the
 * earlier row's (`theirs`) only when the native recorder confirms the
 * record is still the fd's (FdOrigin.nativeCurrent): a JS record alone may
 * be stale, its fd closed where the JS recorder does not see (a worker
 * that does not record, native code) and the same file opened again at
 * its number by this row. Such a leak (`named`) stays this row's, the
 * earlier row only told of it. One whose stack names this row's file is
 * its own; any other (no record, or a stack naming neither) cannot be told
 * (`unsure`) and stays this row's, said to be possibly the earlier's.
 */
function sortByOrigin(leaks: readonly Leak[], own: string | undefined, earlier: EarlierRow): { mine: Leak[]; theirs: Leak[]; named: Leak[]; unsure: Leak[] } {
  const mine: Leak[] = [];
  const theirs: Leak[] = [];
  const named: Leak[] = [];
  const unsure: Leak[] = [];
  for (const leak of leaks) {
    const frames = leak.openedAt?.js ?? [];
    const ours = frames.some((f) => inFile(f, own));
    if (ours) mine.push(leak);
    else if (!frames.some((f) => inFile(f, earlier.file))) {
      mine.push(leak);
      unsure.push(leak);
    } else if (leak.openedAt?.nativeCurrent) theirs.push(leak);
    else {
      mine.push(leak);
      named.push(leak);
    }
  }
  return { mine, theirs, named, unsure };
}

/** Why a JS record naming another row's file is not confirmed as the fd's (sortByOrigin), for a report. */
const UNCONFIRMED_RECORD =
  'unconfirmed: the native recorder did not see that no other fd was made at this number since (it does not watch this process, the process set up an io_uring ring, or a call it did not see made one), so a close --track-fds cannot see may have freed it and this row put the same file there again';

/** A row's result once what it left after its own look is known: `leaks` and `closed` found later fail it. */
function chargeLate(result: ResultRow, leaks: readonly Leak[], closed: readonly Leak[], when: string, ended: readonly ProcessEnded[] = []): ResultRow {
  const undeclared = ended.filter((e) => !e.declared);
  const allEnded = [...(result.ended ?? []), ...ended];
  if (leaks.length === 0 && closed.length === 0 && undeclared.length === 0) return ended.length > 0 ? { ...result, ended: allEnded } : result;
  const lines: string[] = [];
  for (const e of undeclared) lines.push(`after its leak oracle's look, ${when}: ${describeEnded(e)}`);
  if (leaks.length > 0) {
    lines.push(`leaked ${leaks.length} fd(s) that appeared after its leak oracle's look, ${when} (opened by code it left running: a timer, a callback): ${formatEntries(leaks)}`);
  }
  if (closed.length > 0) lines.push(`closed ${closed.length} fd(s) that were open before it, after its leak oracle's look, ${when}: ${formatEntries(closed)}`);
  const before = result.error === undefined ? [] : result.status === 'fail' ? [result.error] : [];
  const otherwise = result.status !== 'fail' && result.status !== 'pass' ? [`(without them: ${result.status}${result.error !== undefined ? `: ${result.error}` : ''})`] : [];
  const allClosed = [...(result.closed ?? []), ...closed];
  return {
    ...result,
    status: 'fail',
    leaks: [...result.leaks, ...leaks],
    error: stripVTControlCharacters([...before, ...lines, ...otherwise].join('\n')),
    ...(allClosed.length > 0 ? { closed: allClosed } : {}),
    ...(allEnded.length > 0 ? { ended: allEnded } : {}),
  };
}

/** A row a RowSession has run whose result may still change: see RowSession.run. */
interface HeldRow {
  row: PlannedRow;
  result: ResultRow;
  after: LeakOracle | undefined;
  /** What of its own it left running, read now (leftRunning). */
  leftRunning: () => string[];
}

/** A row's result, and the leak oracle begun right after its own look (none when the row had no look): what changes from then is the row's. */
interface RowOutcome {
  result: ResultRow;
  after: LeakOracle | undefined;
  /** What of its own it left running, read now (leftRunning). */
  leftRunning: () => string[];
}

/**
 * What keeps the event loop alive now (process.getActiveResourcesInfo:
 * 'Timeout', 'FSReqCallback', 'TCPWrap', ...) that did not at `before`.
 * Whoever made it: a test framework's timer or the harness's own are in it
 * too. For a row whose run() never settled (its code may still run, and
 * make what no hook marks as its).
 */
function activeSince(before: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const r of before) left.set(r, (left.get(r) ?? 0) - 1);
  for (const r of process.getActiveResourcesInfo()) left.set(r, (left.get(r) ?? 0) + 1);
  return [...left].filter(([, n]) => n > 0).map(([r, n]) => (n > 1 ? `${n} ${r}` : r));
}

/**
 * What a row left running, read after it (as the next row begins): the
 * timers, requests and handles whose callbacks are its code and may still
 * open or close fds. A row whose run() (and bench setup) settled: what its
 * code made (RowWork.leftRunning), and nothing of the process's or a test
 * framework's. A row whose run() did not settle (past its time limit):
 * everything more process.getActiveResourcesInfo() lists than as it began,
 * and its own unref'd handles, since its code still running makes what the
 * row's hook no longer marks. Native threads are not seen.
 */
function leftRunning(work: RowWork, before: readonly string[], settled: boolean): string[] {
  return settled ? work.leftRunning(before) : [...activeSince(before), ...work.openHandles()];
}

/**
 * Runs one row: tmpdir, oracle, run() (and bench()), cleanup, verdict. Never
 * throws. `given` is the row's temporary directory when the caller made it
 * (the run's supervisor, which removes it should this process be killed);
 * the row removes it at its end either way. `earlier`: the row that ran
 * before it in this process, charged with the leaks its code opened
 * during this row (sortByOrigin).
 */
async function runRow(row: PlannedRow, env: RowEnvironment, given?: string, earlier?: EarlierRow): Promise<RowOutcome> {
  const { scenario, transport, iteration } = row;
  const started = performance.now();
  const notes: string[] = [];
  const metrics: Record<string, number> = {};
  const peaks: Record<string, number> = {};
  const connections = new Set<Connection>();
  let expired = false;
  const helper = transport === 'helper' ? env.helper : undefined;
  const rowDir = given !== undefined ? removedOnExit(given) : ownTempDir(rowDirPrefix(scenario.name));
  const dir = rowDir.path;
  let error: unknown;
  if (helper && !helper.alive) {
    // A fault scenario (or a crash) took the daemon down: the next helper row gets a fresh one.
    // Its end was charged to the row during which its oracle saw it go (ResultRow.ended), not to this one.
    try {
      await helper.start();
    } catch (err) {
      error = new HarnessError(`harness: the helper daemon could not be restarted: ${errorText(err)}`);
    }
  }
  // Gone from /proc (or a zombie) comes before Node's 'exit' event: its status is waited for, a moment.
  const howEnded = async (pid: number): Promise<string | undefined> => {
    const child = env.helper && env.helper.pid === pid ? env.helper.child : ([...connections].find((c) => c.location.pid === pid) as { child?: unknown } | undefined)?.child;
    if (!(child instanceof ChildProcess)) return undefined;
    await waitForExit(child, EXIT_STATUS_MS);
    return exitText({ code: child.exitCode, signal: child.signalCode });
  };
  const oracle = new LeakOracle({
    settleMs: env.settleMs,
    ledger: env.ledger,
    note: (text) => notes.push(text),
    howEnded,
    ...(scenario.ends ? { ends: scenario.ends } : {}),
    ...(env.helper?.alive ? { helperPid: env.helper.pid } : {}),
  });
  const rng: Rng = createRng(env.seed).fork(rowLabel(scenario.name, transport, iteration));

  const helperControl: HelperControl | undefined = helper && {
    get pid() {
      return helper.pid;
    },
    socketPath: helper.socketPath,
    async restart() {
      const before = helper.pid;
      await helper.restart();
      oracle.helperRestarted(before, helper.pid);
      notes.push(`helper daemon restarted (pid ${helper.pid})`);
    },
  };

  const ctx: ScenarioContext = {
    transport,
    rng,
    tmpdir: dir,
    async connect(command: CommandSpec, options: Omit<Partial<ConnectOptions>, 'command'> = {}): Promise<Connection> {
      if (expired) throw new Error(`ctx.connect: the row ${scenario.name}/${transport} has ended (timed out)`);
      const userHook = options.onCommandClosed;
      const conn = await connect(transport, {
        ...options,
        command,
        ...(options.socketPath === undefined && env.helper ? { socketPath: env.helper.socketPath } : {}),
        ...(transport === 'remote' && options.via === undefined ? LOCAL_REMOTE : {}),
        onCommandClosed: async (location) => {
          await oracle.commandClosed(location);
          await userHook?.(location);
        },
      });
      connections.add(conn);
      oracle.connected(conn, command);
      // Each call's settling reads the command's process again (LeakOracle.callReturned), before the caller goes on;
      // the numbers duplications gave it there are told to the oracle (fdbridge's until the command adopts them).
      // Not async: each wrapper calls the original synchronously, so a bad argument's synchronous throw (TypeError) stays one.
      const pid = conn.location.pid;
      const call = conn.call.bind(conn);
      const dupOne = conn.dupFileDescriptor.bind(conn);
      const dupMany = conn.dupFileDescriptors.bind(conn);
      const dupSync = conn.dupFileDescriptorSync.bind(conn);
      Object.defineProperties(conn, {
        call: { value: <T>(method: string, ...args: unknown[]): Promise<T> => call<T>(method, ...args).finally(() => oracle.callReturned(pid, method)) },
        dupFileDescriptor: { value: (fd: number): Promise<number> => dupOne(fd).then((n) => oracle.given(pid, [n])[0] as number) },
        dupFileDescriptors: { value: (fds: readonly number[]): Promise<number[]> => dupMany(fds).then((ns) => oracle.given(pid, ns)) },
        dupFileDescriptorSync: { value: (fd: number, o?: { timeoutMs?: number }): number => oracle.given(pid, [dupSync(fd, o)])[0] as number },
      });
      if (expired) await conn.close();
      return conn;
    },
    watchProcess(pid: number, role: string): void {
      oracle.watch(pid, role);
    },
    note(text: string): void {
      notes.push(stripVTControlCharacters(String(text)));
    },
    skip(reason: string): never {
      throw new SkipSignal(reason);
    },
    count(name: string, by = 1): void {
      if (!Number.isFinite(by)) throw new RangeError(`ctx.count(${name}, ${by}): not a number`);
      metrics[name] = (metrics[name] ?? 0) + by;
    },
    peak(name: string, value: number): void {
      if (!Number.isFinite(value)) throw new RangeError(`ctx.peak(${name}, ${value}): not a number`);
      peaks[name] = Math.max(peaks[name] ?? value, value);
    },
    ...(helperControl ? { helper: helperControl } : {}),
  };

  let latency: Latency | undefined;
  let leaks: Leak[] = [];
  let closed: Leak[] = [];
  let ended: ProcessEnded[] = [];
  let unsure: Leak[] = [];
  let named: Leak[] = [];
  let after: LeakOracle | undefined;
  let resources: string[] = [];
  // Whether the scenario's run() and bench setup settled (resolved or rejected): if not, its code may still run.
  let settled = true;
  const settling = async <T>(step: () => Promise<T>): Promise<T> => {
    settled = false;
    try {
      return await step();
    } finally {
      settled = true;
    }
  };
  // The callbacks the scenario's code schedules (row-work.ts): the row is not over until they have run.
  const work = RowWork.open();
  let pending: string | undefined;
  const endWork = (why: string): void => {
    if (work.closed) return;
    const left = work.cancel();
    work.close();
    if (left.length > 0) pending = `left ${left.length} callback(s) it scheduled pending ${why}: ${left.join('; ')} (a callback that ran during a later row would have its fd changes counted as that row's)`;
  };
  env.stray.length = 0;
  try {
    if (error !== undefined) throw error;
    resources = process.getActiveResourcesInfo();
    oracle.begin();
    // A scenario that needs what this transport does not preserve is skipped, with that reason.
    const missing = missingCapabilities(transport, scenario.needs);
    // Each step's limit is announced before its code starts: run() may block its thread before its first await.
    const limited = async <T>(step: () => Promise<T>, ms: number, what: string): Promise<T> => {
      env.onDeadline?.(ms, what);
      return withTimeout(step(), ms, what, env.stopped);
    };
    let running: Promise<void> = Promise.resolve();
    const measure = env.bench;
    let benchCase: BenchCase | undefined;
    try {
      await limited(
        // async wrapper: a run() that throws before its first await still becomes a rejection.
        () => (running = missing !== undefined ? Promise.reject(new SkipSignal(missing)) : settling(() => work.run(async () => scenario.run(ctx)))),
        env.timeoutMs,
        `${scenario.name} on ${transport}`,
      );
      if (measure && scenario.bench && (scenario.expect ?? 'pass') === 'pass') {
        benchCase = await limited(() => settling(() => work.run(async () => (scenario.bench as NonNullable<Scenario['bench']>).call(scenario, ctx))), env.timeoutMs, `${scenario.name} bench setup`);
      }
    } catch (err) {
      error = caught(err);
    }
    if (work.waiting && !(error instanceof RowTimeout || error instanceof RowStopped)) {
      // What run() left scheduled (a timer, ref'd or not; an immediate; an fs request) runs now, as part of this
      // row, whose look then sees what it did; what has not run by the row's time limit is cancelled and fails it.
      env.onDeadline?.(env.timeoutMs, `the callbacks ${scenario.name} on ${transport} left scheduled`);
      try {
        await withTimeout(work.drained(), env.timeoutMs, 'the wait for its callbacks', env.stopped);
      } catch (err) {
        if (err instanceof RowStopped) error = err;
      }
    }
    if (!(error instanceof RowTimeout || error instanceof RowStopped)) endWork(`after run() ended, not run within its time limit (${env.timeoutMs} ms)`);
    // run() and the callbacks it scheduled are over: the bench's calls, and the harness's own, are not read.
    oracle.stopReadingCalls();
    if (measure && benchCase !== undefined && error === undefined && pending === undefined) {
      try {
        latency = await limited(() => measure(benchCase as BenchCase), Math.max(env.timeoutMs, 120_000), `${scenario.name} bench`);
      } catch (err) {
        error = caught(err);
      }
    }
    // The steps after run() are the harness's own, each bounded here; they
    // are announced too, so that a watching supervisor knows the row is
    // still making progress (and can tell a row process that lost it).
    if (error instanceof RowTimeout || error instanceof RowStopped) {
      // The scenario is still running: stop it from opening more, close what
      // it has (pending calls reject), and give it a moment to unwind.
      expired = true;
      env.onDeadline?.(CLOSE_MS + UNWIND_MS, `closing the connections of ${scenario.name} on ${transport} after it ended`);
      await Promise.all([...connections].map((c) => withTimeout(c.close(), CLOSE_MS, 'close').catch(() => undefined)));
      await withTimeout(running, UNWIND_MS, 'unwinding').catch(() => undefined);
    }
    endWork(error instanceof RowStopped ? 'when the run was stopped' : 'when it timed out');
    for (const conn of connections) {
      if (conn.closed) continue;
      env.onDeadline?.(CLOSE_MS, `closing a ${transport} connection ${scenario.name} left open`);
      try {
        await withTimeout(conn.close(), CLOSE_MS, `closing a ${transport} connection left open`);
      } catch (err) {
        notes.push(`closing a connection left open failed: ${errorText(err)}`);
      }
    }
    // Before the look: it reads the helper daemon's fds as the session's user, not as one the row switched to.
    putBackProcessState(env, notes, earlier);
    // A stopped run has no verdict to give: no wait for the oracle's settling.
    if (!(error instanceof RowStopped)) {
      env.onDeadline?.(env.settleMs, `the leak oracle's look after ${scenario.name} on ${transport}`);
      const seen = await oracle.finish();
      leaks = env.trackDir === undefined ? seen.leaks : seen.leaks.map((l) => withOrigin(l, env.trackDir as string));
      closed = seen.closed;
      ended = noteDeclaredEnds(seen.ended, notes);
      for (const r of seen.reclaimed) notes.push(`an earlier row's leak was closed: ${describeFdEntry(r)}`);
      // From here on, what changes is this row's doing (RowSession.run): looked at before the next row begins.
      after = new LeakOracle({ settleMs: env.settleMs, ledger: env.ledger, howEnded, ...(scenario.ends ? { ends: scenario.ends } : {}), ...(env.helper?.alive ? { helperPid: env.helper.pid } : {}) });
      after.begin();
      if (earlier && leaks.length > 0) {
        const sorted = sortByOrigin(leaks, row.file, earlier);
        leaks = sorted.mine;
        // An fd in this row's own directory is its own; with nothing of the earlier row's left running, none is that row's.
        unsure = earlier.leftRunning.length > 0 ? sorted.unsure.filter((l) => !l.target.startsWith(`${dir}/`)) : [];
        named = sorted.named;
        if (sorted.theirs.length > 0) {
          earlier.charge(sorted.theirs);
          notes.push(`charged to ${earlier.label}, which ran before it in this process (its scenario's file opened them, after its own run, and the native recorder saw no fd made at their numbers since): ${formatEntries(sorted.theirs)}`);
        }
        if (named.length > 0) earlier.mention(named);
      }
    }
  } catch (err) {
    after?.release();
    after = undefined;
    // The harness itself failed around the scenario (helper restart, oracle).
    if (!(err instanceof HarnessError)) {
      const before = error !== undefined ? ` (the scenario had failed first: ${errorText(error)})` : '';
      err = new HarnessError(`harness: ${errorText(err)}${before}`);
    }
    error = err;
  } finally {
    expired = true;
    endWork('when the harness failed around it');
    const changed = putBackEnvironment(env, notes);
    if (changed.length > 0) {
      const others = earlier && earlier.leftRunning.length > 0 ? ` (or code ${earlier.label}, which ran before it in this process, left running did: ${earlier.leftRunning.join(', ')})` : '';
      notes.push(`${ENVIRONMENT_CHANGED}, put back as the row ended: ${describeChanges(changed)}${others}; ${ENVIRONMENT_WHY}`);
    }
    // Again: what code the row left running changed during the look (or all of it, should the row have ended before it).
    putBackProcessState(env, notes, earlier);
    oracle.release();
    try {
      rowDir.remove();
    } catch (err) {
      // At the fd limit (EMFILE) a recursive removal cannot open the directory: the row says so, and still ends
      // (the process's exit removes it then).
      notes.push(`its temporary directory ${dir} could not be removed: ${errorText(err)}`);
    }
  }
  if (env.stray.length > 0 && error === undefined) {
    error = new BackgroundError(`unhandled in the background: ${env.stray.map(errorText).join('; ')}`);
  } else if (env.stray.length > 0) {
    notes.push(`also unhandled in the background: ${env.stray.map(errorText).join('; ')}`);
  }

  const expect = scenario.expect ?? 'pass';
  const judged = verdict(expect, scenario.failure ?? {}, { error, leaks, closed, ...(pending !== undefined ? { pending } : {}), ended });
  const { status } = judged;
  let why = judged.error;
  if (status === 'fail' && earlier && named.length > 0) {
    const fds = named.map((l) => `fd ${l.fd} (${l.role})`).join(', ');
    why = `${why ?? ''}\n(${fds}: possibly an earlier row's: --track-fds recorded ${earlier.label}'s scenario file (${earlier.file}) opening it, ${UNCONFIRMED_RECORD})`;
  }
  if (status === 'fail' && earlier && unsure.length > 0) {
    const fds = unsure.map((l) => `fd ${l.fd} (${l.role})`).join(', ');
    why =
      `${why ?? ''}\n(${fds}: possibly an earlier row's: ${earlier.label} ran before it in this row process and left running ${earlier.leftRunning.join(', ')}, ` +
      `whose callbacks may open an fd during the next row; ${env.trackDir === undefined ? '--track-fds tells by where each was opened' : "the recorded origin names neither row's scenario file"})`;
  }
  // A close leaves no record of who made it: with the earlier row's handles or requests still running (their
  // callbacks are its code: a child process's exit, a socket's data), an fd of the client closed is possibly theirs.
  const closedUnsure = earlier && earlier.leftRunning.length > 0 ? closed.filter((c) => c.pid === process.pid) : [];
  if (status === 'fail' && earlier && closedUnsure.length > 0) {
    const fds = closedUnsure.map((l) => `fd ${l.fd} (${l.role})`).join(', ');
    why = `${why ?? ''}\n(${fds}: possibly closed by an earlier row's code: ${earlier.label} ran before it in this row process and left running ${earlier.leftRunning.join(', ')}, whose callbacks may close an fd during the next row)`;
  }
  // An end leaves no record of who caused it either: the earlier row's code left running may signal a process (it
  // saw the helper daemon's pid, as every row on helper does) or take what it needs away.
  const endedUnsure = earlier && earlier.leftRunning.length > 0 ? ended.filter((e) => e.declared !== true) : [];
  if (status === 'fail' && earlier && endedUnsure.length > 0) {
    const which = endedUnsure.map((e) => `${e.what} (pid ${e.pid})`).join(', ');
    why = `${why ?? ''}
(${which}: possibly ended by an earlier row's code: ${earlier.label} ran before it in this row process and left running ${earlier.leftRunning.join(', ')}, whose callbacks may end a process during the next row)`;
  }
  const suspect =
    status === 'fail' && earlier && (named.length > 0 || unsure.length > 0 || closedUnsure.length > 0 || endedUnsure.length > 0) ? earlier.row : undefined;
  const result: ResultRow = {
    scenario: scenario.name,
    transport,
    status,
    leaks,
    ...(latency ? { latency } : {}),
    ...(why !== undefined ? { error: stripVTControlCharacters(why) } : {}),
    durationMs: Math.round(performance.now() - started),
    ...(notes.length > 0 ? { notes } : {}),
    ...(Object.keys(metrics).length > 0 ? { metrics } : {}),
    ...(Object.keys(peaks).length > 0 ? { peaks } : {}),
    ...(closed.length > 0 ? { closed } : {}),
    ...(ended.length > 0 ? { ended } : {}),
    expect,
    iteration,
    ...(suspect ? { suspect: { scenario: suspect.scenario.name, transport: suspect.transport, iteration: suspect.iteration } } : {}),
  };
  return { result, after, leftRunning: () => leftRunning(work, resources, settled) };
}

// ---------------------------------------------------------------------------
// running everything

export interface RunnerOptions extends Required<Pick<RunOptions, 'bench' | 'repeat' | 'seed'>> {
  /**
   * Name where each leaked fd was opened. The process must run with the
   * recorders preloaded (`fdbridge run --track-fds` restarts itself so);
   * throws when $FDBRIDGE_FDTRACK_DIR is not set.
   */
  trackFds?: boolean;
  transports?: TransportName[];
  scenario?: string;
  /** Only the scenarios named exactly so (PlanOptions.scenarioNames). */
  scenarioNames?: readonly string[];
  shard?: { index: number; count: number };
  profile?: string;
  timeoutMs?: number;
  settleMs?: number;
  /** Directory of compiled *.scenario.js (default: defaultScenariosDir()). */
  scenariosDir?: string;
  /**
   * Where the rows run. 'process' (the default): in a row process of their
   * own, watched from this one (harness/run-supervisor.ts), so that a row
   * that blocks its thread (a synchronous read that waits, a busy loop)
   * fails at its time limit and the run goes on. 'none': in this process,
   * where such a row hangs the run; for tests that look inside a row.
   */
  isolation?: 'process' | 'none';
  /**
   * With isolation 'process': how long a row process that still answers may
   * stay past the time limit of its last step before it is taken as having
   * lost its row and killed (default STALLED_MS, harness/run-supervisor.ts).
   */
  stalledMs?: number;
  /** measureLatency options (time budgets), passed through. */
  benchOptions?: { time?: number; warmupTime?: number; iterations?: number };
  /**
   * Called as each row starts and ends (progress lines). A row's end comes
   * once the next row in its process has ended (or that process ended):
   * until then what the row left running may still be charged to it
   * (RowSession.run).
   */
  onRowStart?(row: PlannedRow, index: number, total: number): void;
  onRowEnd?(result: ResultRow, index: number, total: number): void;
  /** A line about the run itself (helper started, warm-up problems). */
  onInfo?(line: string): void;
  /**
   * Stops the run: the row running is ended as a timed-out one is (its
   * connections closed, a moment to unwind), no other row starts, the
   * helper daemon is stopped and the temporary directories are removed;
   * then runScenarios rejects with the signal's reason. Should the process
   * exit before that (process.exit()), the daemon is SIGKILLed and the
   * directories removed on the way out (harness/exit-cleanup.ts).
   */
  signal?: AbortSignal;
}

/** Loads a harness module that another part of the project provides, with a clear error if it is not there. */
function optionalModule<T>(id: string, what: string): T {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(id) as T;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'MODULE_NOT_FOUND' && (err as Error).message.includes(id.replace('./', ''))) {
      throw new Error(`${what} is not available: harness/${id.replace('./', '')}.ts is missing from this build`);
    }
    throw err;
  }
}

/**
 * Before the first row, one connection on each selected transport: the
 * first worker, spawn and helper connection create process-wide things
 * lazily (libuv's signal pipe, for one) that are not any scenario's leak.
 */
async function warmUp(transports: readonly TransportName[], helper: HelperProcess | undefined, info: (line: string) => void): Promise<void> {
  // The fds libuv opens lazily and keeps (its EMFILE reserve is opened by
  // the first spawn when stdout is a file, earlier when it is a pipe or a
  // TTY): opened now, so that every row sees the same baseline.
  for (const r of warmRuntimeFds()) info(`leak oracle: set aside ${describeRuntimeFd(r)}`);
  for (const transport of transports) {
    try {
      const conn = await connect(transport, {
        command: PROBE_COMMAND,
        ...(helper ? { socketPath: helper.socketPath } : {}),
        ...(transport === 'remote' ? LOCAL_REMOTE : {}),
      });
      try {
        await conn.call('where');
      } finally {
        await conn.close();
      }
    } catch (err) {
      info(`warm-up on ${transport} failed (its rows will tell): ${errorText(err)}`);
    }
  }
  // Let the warm-up's asynchronous closes finish: the table is quiet for 5 polls.
  let last = openFdTable();
  for (let quiet = 0, i = 0; quiet < 5 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const now = openFdTable();
    const d = diffFdTables(last, now);
    quiet = d.opened.length === 0 && d.closed.length === 0 ? quiet + 1 : 0;
    last = now;
  }
}

/**
 * Counters that results.totals always carries (0 when no row counted them),
 * so that a faults or soak run states them even where nothing happened.
 * Scenarios count them with ctx.count under these names.
 */
export const STANDARD_COUNTERS = [
  'faultsInjected',
  'faultsSurvived',
  'badInputsTried',
  'badInputsRejected',
  'repliesLost',
  'repliesDuplicated',
] as const;

/**
 * Sums each counter (ctx.count) over the rows and keeps the largest of each
 * high-water mark (ctx.peak), plus leaks, failed rows, and the peak memory
 * of the client process (default: this one's) and of the run's helper
 * daemon(s).
 */
export function computeTotals(
  results: readonly ResultRow[],
  helperPeakRss: number | undefined,
  clientPeakRss: number = process.resourceUsage().maxRSS * 1024,
): Record<string, number> {
  const totals: Record<string, number> = {};
  for (const name of STANDARD_COUNTERS) totals[name] = 0;
  for (const r of results) for (const [k, v] of Object.entries(r.metrics ?? {})) totals[k] = (totals[k] ?? 0) + v;
  for (const r of results) for (const [k, v] of Object.entries(r.peaks ?? {})) totals[k] = Math.max(totals[k] ?? v, v);
  totals['leakedFds'] = results.reduce((n, r) => n + r.leaks.length, 0);
  totals['undeclaredLeaks'] = results.filter((r) => r.expect !== 'leak').reduce((n, r) => n + r.leaks.length, 0);
  totals['failedRows'] = results.filter((r) => r.status === 'fail').length;
  // A row may have recorded these too (ctx.peak); the client's maxRSS
  // covers every row, the helper's covers each daemon started.
  totals['clientPeakRssBytes'] = Math.max(totals['clientPeakRssBytes'] ?? 0, clientPeakRss);
  if (helperPeakRss !== undefined) totals['helperPeakRssBytes'] = Math.max(totals['helperPeakRssBytes'] ?? 0, helperPeakRss);
  return totals;
}

/** What a RowSession needs: the run's options that reach its rows, and where the helper daemon lives. */
export interface RowSessionOptions {
  bench: boolean;
  seed: number;
  timeoutMs: number;
  settleMs: number;
  benchOptions?: RunnerOptions['benchOptions'];
  trackFds?: boolean;
  /** Measure the anchors before the first row (with bench). */
  anchors: boolean;
  /** The run's directory (the helper daemon's socket and log), when a row needs the daemon: the caller makes and removes it. */
  runDir?: string;
  /** The rows the session will run: which transports to warm up, the commands the helper serves. */
  rows: readonly PlannedRow[];
  signal?: AbortSignal;
  info(line: string): void;
  /** RowEnvironment.onDeadline. */
  onDeadline?(ms: number, what: string): void;
}

/**
 * The rows of a run, run in this process one after another: open() starts
 * the helper daemon (when a row needs it), measures the anchors (bench) and
 * warms the transports up; run() runs a row under the leak oracle; close()
 * stops the daemon. runScenarios has one in this process (isolation
 * 'none'), or in a row process of its own (harness/run-child.ts).
 */
export class RowSession {
  readonly anchors: ResultsFile['anchors'];
  readonly #env: RowEnvironment;
  readonly #helper: HelperProcess | undefined;
  readonly #unhook: () => void;
  /** The rows the session runs (RowSessionOptions.rows): their scenarios' files name the opener of a leak. */
  readonly #rows: readonly PlannedRow[];
  /** The last row run, until the next begins or the session ends: what appears meanwhile is charged to it. */
  #held: HeldRow | undefined;

  private constructor(anchors: ResultsFile['anchors'], env: RowEnvironment, helper: HelperProcess | undefined, unhook: () => void, rows: readonly PlannedRow[]) {
    this.anchors = anchors;
    this.#rows = rows;
    this.#env = env;
    this.#helper = helper;
    this.#unhook = unhook;
  }

  static async open(o: RowSessionOptions): Promise<RowSession> {
    const info = o.info;
    let measure: RowEnvironment['bench'];
    if (o.bench) {
      const { measureLatency } = optionalModule<{
        measureLatency(c: BenchCase, options?: RunnerOptions['benchOptions']): Promise<Latency>;
      }>('./bench', 'latency measurement (--bench)');
      measure = (c) => measureLatency(c, o.benchOptions ?? {});
    }
    const used = [...new Set(o.rows.map((r) => r.transport))];
    const signal = o.signal;
    signal?.throwIfAborted();
    const stopped = new Promise<never>((_, reject) => {
      const stop = (): void => reject(new RowStopped(`the run was stopped: ${errorText(signal?.reason)}`));
      if (signal?.aborted) stop();
      else signal?.addEventListener('abort', stop, { once: true });
    });
    stopped.catch(() => undefined);
    const helperCommands = o.rows.filter((r) => r.transport === 'helper').flatMap((r) => r.scenario.commands ?? []);
    if (used.includes('helper') && o.runDir === undefined) throw new HarnessError('harness: helper rows need the run directory');
    const helper = used.includes('helper') ? new HelperProcess(o.runDir as string, undefined, helperCommands) : undefined;
    const stray: unknown[] = [];
    const onStray = (err: unknown): void => {
      stray.push(err);
    };
    process.on('unhandledRejection', onStray);
    process.on('uncaughtException', onStray);
    const unhook = (): void => {
      process.off('unhandledRejection', onStray);
      process.off('uncaughtException', onStray);
    };
    try {
      if (helper) {
        o.onDeadline?.(HELPER_START_MS, 'starting the helper daemon');
        await helper.start();
        info(`helper daemon: pid ${helper.pid}, socket ${helper.socketPath}`);
      }
      signal?.throwIfAborted();
      let anchors: ResultsFile['anchors'] = [];
      if (o.bench && o.anchors && o.rows.length > 0) {
        // Anchors first: a missing anchor binary fails the run before the long part.
        const { measureAnchors } = optionalModule<{
          measureAnchors(options: { time?: number; warmupTime?: number; onSkip?(name: string, reason: string): void }): Promise<ResultsFile['anchors']>;
        }>('./anchors', 'anchors (--bench)');
        o.onDeadline?.(Math.max(o.timeoutMs, 120_000), 'measuring the anchors');
        anchors = await measureAnchors({
          ...(o.benchOptions?.time !== undefined ? { time: o.benchOptions.time } : {}),
          ...(o.benchOptions?.warmupTime !== undefined ? { warmupTime: o.benchOptions.warmupTime } : {}),
          onSkip: (name, reason) => info(`anchor ${name} skipped: ${reason}`),
        });
        info(`anchors: ${anchors.map((a) => `${a.name} p50 ${a.latency.p50Us.toFixed(1)} µs`).join(', ')}`);
        signal?.throwIfAborted();
      }
      if (o.rows.length > 0) {
        o.onDeadline?.(o.timeoutMs, 'the warm-up');
        await warmUp(used, helper, info);
      }
      const env: RowEnvironment = {
        seed: o.seed,
        timeoutMs: o.timeoutMs,
        settleMs: o.settleMs,
        helper,
        ledger: new LeakLedger(),
        bench: measure,
        stray,
        trackDir: o.trackFds ? trackingDirectory() : undefined,
        stopped,
        onDeadline: o.onDeadline,
        // After the warm-up and the helper daemon's start: what the harness itself set up is the rows' environment.
        environment: snapshotEnvironment(),
        processState: snapshotProcessState(),
      };
      return new RowSession(anchors, env, helper, unhook, o.rows);
    } catch (err) {
      await helper?.stop();
      unhook();
      throw err;
    }
  }

  /**
   * Runs one row (in `dir` when given: see runRow) and returns its result.
   * Never rejects: should runRow throw all the same (the harness's own
   * defect), the row fails with that error, so that a caller waiting for
   * its result gets one.
   *
   * The row run before it in this session is not done with when its
   * result is returned: code it left running (a timer, a callback) may
   * still open or close fds. So first, just before this row begins, the
   * fds that changed since that row's own look are charged to it; and a
   * leak this row's look finds is charged to it when --track-fds records
   * its scenario's file opening it (runRow). `onEarlier` gets that row's
   * result each time it changes (once it is settled, nothing more comes
   * for it): a caller holds a row's result until the next row's has come
   * (or settle()). `onLeftRunning` gets what that earlier row left running,
   * as this row begins (none: it is not called).
   *
   * With `retireIfLost`: should putting process.env back as this row begins
   * find it cannot be (code the earlier row left running), the row is not
   * run here (undefined): its process is to run no other row.
   */
  async run(row: PlannedRow, dir?: string, onEarlier?: (earlier: ResultRow) => void, onLeftRunning?: (leftRunning: string[]) => Promise<void>): Promise<ResultRow>;
  async run(row: PlannedRow, dir: string | undefined, onEarlier: ((earlier: ResultRow) => void) | undefined, onLeftRunning: ((leftRunning: string[]) => Promise<void>) | undefined, retireIfLost: true): Promise<ResultRow | undefined>;
  async run(row: PlannedRow, dir?: string, onEarlier?: (earlier: ResultRow) => void, onLeftRunning?: (leftRunning: string[]) => Promise<void>, retireIfLost = false): Promise<ResultRow | undefined> {
    const started = performance.now();
    const held = this.#held;
    this.#held = undefined;
    try {
      if (held) {
        const before = held.result;
        held.result = await this.#lookAfter(held, `before the next row began`);
        held.result = this.#putBackEnvironment(held.result, `before the next row (${row.scenario.name} on ${row.transport}) began`);
        if (held.result !== before) onEarlier?.(held.result);
      } else {
        // Before the session's first row, no row's code has run: nobody to tell.
        putBackEnvironment(this.#env, []);
      }
      if (retireIfLost && this.#env.stateLost !== undefined) return undefined;
      const earlier: EarlierRow | undefined = held && {
        label: `${held.row.scenario.name} on ${held.row.transport}`,
        row: held.row,
        file: held.row.file,
        leftRunning: held.leftRunning(),
        charge: (leaks) => {
          held.result = chargeLate(held.result, leaks, [], `during the next row (${row.scenario.name} on ${row.transport}), where --track-fds recorded its scenario's file opening them`);
          onEarlier?.(held.result);
        },
        mention: (leaks) => {
          const note = `--track-fds recorded its scenario's file opening ${formatEntries(leaks)}, found during the next row (${row.scenario.name} on ${row.transport}) and left that row's: the record is ${UNCONFIRMED_RECORD}`;
          held.result = withNotes(held.result, [note]);
          onEarlier?.(held.result);
        },
      };
      // Told before the row's code runs: should the row's process end during the row, its supervisor can still say so.
      if (earlier !== undefined) await onLeftRunning?.(earlier.leftRunning);
      const { result, after, leftRunning: left } = await runRow(row, this.#env, dir, earlier);
      this.#held = { row, result, after, leftRunning: left };
      return result;
    } catch (err) {
      return {
        scenario: row.scenario.name,
        transport: row.transport,
        status: 'fail',
        leaks: [],
        error: stripVTControlCharacters(`harness: the row could not be finished: ${errorText(err)}`),
        durationMs: Math.round(performance.now() - started),
        expect: row.scenario.expect ?? 'pass',
        iteration: row.iteration,
      };
    }
  }

  /** Set once a row changed the process's credentials or process.env and they could not be put back (what they are now): no other row is to run here. */
  get stateLost(): string | undefined {
    return this.#env.stateLost;
  }

  /**
   * The last row's result after a last look at what changed since its own
   * (charged to it), or undefined when no row is waiting for one: before
   * the session ends.
   */
  async settle(): Promise<ResultRow | undefined> {
    const held = this.#held;
    this.#held = undefined;
    if (!held) return undefined;
    return this.#putBackEnvironment(await this.#lookAfter(held, 'before its process ended'), 'before its process ended');
  }

  /**
   * Puts process.env back as the session began, after code a row left
   * running (a callback of a handle, a run() that outlived its time limit)
   * changed it once the row had ended: `result` with a note saying so.
   */
  #putBackEnvironment(result: ResultRow, when: string): ResultRow {
    const notes: string[] = [];
    const changed = putBackEnvironment(this.#env, notes);
    if (changed.length > 0) notes.push(`${ENVIRONMENT_CHANGED} after the row had ended (code it left running), put back ${when}: ${describeChanges(changed)}; ${ENVIRONMENT_WHY}`);
    return withNotes(result, notes);
  }

  /**
   * Compares the tables the row's `after` oracle took right after the row's
   * own look with now: what is new (or closed) is the row's. The look
   * waits for closes as a row's does (the settle time). With no `after`
   * (the row had no look: it was stopped), the result as it was.
   */
  async #lookAfter(held: HeldRow, when: string): Promise<ResultRow> {
    const after = held.after;
    held.after = undefined;
    if (!after) return held.result;
    let seen: OracleVerdict;
    try {
      seen = await after.finish();
    } catch (err) {
      return withNotes(held.result, [`the leak oracle's look after it failed: ${errorText(err)}`]);
    }
    const trackDir = this.#env.trackDir;
    const leaks = trackDir === undefined ? seen.leaks : seen.leaks.map((l) => withOrigin(l, trackDir));
    const notes = seen.reclaimed.map((r) => `after its look, an earlier leak was closed: ${describeFdEntry(r)}`);
    const charged = chargeLate(held.result, leaks, seen.closed, when, noteDeclaredEnds(seen.ended, notes));
    // Charged to this row, the last before; --track-fds may name another scenario's file as the opener.
    const own = held.row.file;
    const elsewhere: string[] = [];
    for (const leak of leaks) {
      const frames = leak.openedAt?.js ?? [];
      if (frames.some((f) => inFile(f, own))) continue;
      const other = this.#rows.find((r) => frames.some((f) => inFile(f, r.file)));
      if (other) {
        const how = leak.openedAt?.nativeCurrent ? 'the native recorder saw no fd made at its number since' : UNCONFIRMED_RECORD;
        elsewhere.push(`fd ${leak.fd} (${leak.role}): possibly an earlier row's: --track-fds recorded scenario ${other.scenario.name}'s file (${other.file}) opening it (${how})`);
      }
    }
    if (elsewhere.length > 0) charged.error = `${charged.error ?? ''}\n(${elsewhere.join('; ')})`;
    return withNotes(charged, notes);
  }

  /** The helper daemons' largest peak RSS so far (HelperProcess.peakRssBytes). */
  get helperPeakRssBytes(): number | undefined {
    return this.#helper?.peakRssBytes;
  }

  /** Stops the helper daemon; idempotent. A row still held (not settled) is let go as it is. */
  async close(): Promise<void> {
    this.#held?.after?.release();
    this.#held = undefined;
    await this.#helper?.stop();
    this.#unhook();
  }
}

/** What running the rows gave: a result per row, and what the totals need. */
export interface RowsOutcome {
  results: ResultRow[];
  anchors: ResultsFile['anchors'];
  helperPeakRss: number | undefined;
  /** Peak RSS of the process(es) the rows ran in. */
  clientPeakRss: number;
}

/** The hooks of RunnerOptions that see rows start and end. */
export type RowHooks = Pick<RunnerOptions, 'onRowStart' | 'onRowEnd'>;

/** Runs the rows in this process (isolation 'none'). */
async function runRowsHere(o: RowSessionOptions, hooks: RowHooks): Promise<RowsOutcome> {
  const session = await RowSession.open(o);
  const results: ResultRow[] = [];
  // A row's result is final once the next row's has come (RowSession.run).
  let held: { result: ResultRow; index: number } | undefined;
  const release = (): void => {
    if (!held) return;
    results.push(held.result);
    hooks.onRowEnd?.(held.result, held.index, o.rows.length);
    held = undefined;
  };
  try {
    for (const [i, row] of o.rows.entries()) {
      o.signal?.throwIfAborted();
      hooks.onRowStart?.(row, i, o.rows.length);
      const result = await session.run(row, undefined, (earlier) => {
        if (held) held.result = earlier;
      });
      o.signal?.throwIfAborted();
      release();
      held = { result, index: i };
    }
    const last = await session.settle();
    if (held && last) held.result = last;
    release();
    return { results, anchors: session.anchors, helperPeakRss: session.helperPeakRssBytes, clientPeakRss: process.resourceUsage().maxRSS * 1024 };
  } finally {
    await session.close();
  }
}

/** Runs the selected rows and returns the results file's content. */
export async function runScenarios(options: RunnerOptions): Promise<{ results: ResultsFile; matched: number }> {
  const info = options.onInfo ?? (() => undefined);
  const profile = profileByName(options.profile ?? 'default');
  const timeoutMs = options.timeoutMs === undefined ? profile.timeoutMs : validateTimeoutMs(options.timeoutMs, 'runScenarios: options.timeoutMs', 1);
  const settleMs = options.settleMs === undefined ? DEFAULT_SETTLE_MS : validateTimeoutMs(options.settleMs, 'runScenarios: options.settleMs');
  const transports = options.transports ?? transportNames();
  const scenariosDir = resolve(options.scenariosDir ?? defaultScenariosDir());
  const loaded = discoverScenarios(scenariosDir);
  const planOptions: PlanOptions = {
    transports,
    profile: profile.name,
    seed: options.seed,
    repeat: options.repeat,
    ...(options.scenario !== undefined ? { scenario: options.scenario } : {}),
    ...(options.scenarioNames !== undefined ? { scenarioNames: options.scenarioNames } : {}),
    ...(options.shard ? { shard: options.shard } : {}),
  };
  const plan = planRows(loaded, planOptions);
  const runOptions: RunOptions = {
    transports: [...transports],
    ...(options.scenario !== undefined ? { scenario: options.scenario } : {}),
    ...(options.scenarioNames !== undefined ? { scenarioNames: [...options.scenarioNames] } : {}),
    bench: options.bench,
    repeat: options.repeat,
    seed: options.seed,
    ...(options.shard ? { shard: options.shard } : {}),
    profile: profile.name,
    timeoutMs,
    settleMs,
    ...(options.trackFds ? { trackFds: true } : {}),
  };
  // Before anything starts: the recorders must be there.
  if (options.trackFds) trackingDirectory();
  const signal = options.signal;
  signal?.throwIfAborted();
  // The helper daemon's socket and log: no directory when no row needs the daemon.
  const runDir = plan.rows.some((r) => r.transport === 'helper') ? ownTempDir('fdbridge-run-') : undefined;
  let outcome: RowsOutcome;
  try {
    const session: RowSessionOptions = {
      bench: options.bench,
      seed: options.seed,
      timeoutMs,
      settleMs,
      ...(options.benchOptions ? { benchOptions: options.benchOptions } : {}),
      ...(options.trackFds ? { trackFds: true } : {}),
      anchors: true,
      ...(runDir ? { runDir: runDir.path } : {}),
      rows: plan.rows,
      ...(signal ? { signal } : {}),
      info,
    };
    const hooks: RowHooks = {
      ...(options.onRowStart ? { onRowStart: options.onRowStart } : {}),
      ...(options.onRowEnd ? { onRowEnd: options.onRowEnd } : {}),
    };
    outcome =
      (options.isolation ?? 'process') === 'none'
        ? await runRowsHere(session, hooks)
        : await superviseRows({ scenariosDir, plan: planOptions, session, hooks, ...(options.stalledMs !== undefined ? { stalledMs: options.stalledMs } : {}) });
  } finally {
    runDir?.remove();
  }
  return {
    results: {
      environment: collectEnvironment(),
      options: runOptions,
      anchors: outcome.anchors,
      results: outcome.results,
      totals: computeTotals(outcome.results, outcome.helperPeakRss, outcome.clientPeakRss),
      plan: { rows: plan.planned },
    },
    matched: plan.matched,
  };
}

/** $FDBRIDGE_FDTRACK_DIR, which a --track-fds run must have been started with. */
function trackingDirectory(): string {
  const dir = process.env['FDBRIDGE_FDTRACK_DIR'];
  if (!dir) throw new Error('--track-fds: this process was not started with the fd recorders (FDBRIDGE_FDTRACK_DIR is not set)');
  return dir;
}
