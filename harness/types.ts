/**
 * The harness's shared vocabulary: what a scenario is, what it gets to run
 * with, and the shape of results.json (other tools read it; keep it stable).
 *
 * Dependencies point one way: scenarios -> the public connection interface
 * (src/index.ts) and these types; never a concrete transport.
 */
import type { Capability, CommandSpec, Connection, ConnectOptions, TransportName } from '../src';
import type { FdOrigin } from '../src/fd-track';
import type { Rng } from './rng';

/**
 * What a scenario is expected to do:
 * - 'pass': run() completes and the leak oracle sees no leak;
 * - 'leak': an expected failure (a known bug reproduced on purpose): the
 *   oracle MUST see a leak matching `failure.leaks`, and no other leak;
 * - 'fail': an expected failure: run() MUST throw the error `failure.error`
 *   names (a wrong file written, a wrong result: see harness/check.ts), and
 *   leak nothing.
 * A scenario that behaves as declared for 'leak' or 'fail' is 'expected-fail';
 * any other outcome (another error, another leak, none) is 'fail'.
 */
export type Expectation = 'pass' | 'leak' | 'fail';

/** One leak a 'leak' scenario declares: the file the fd names, and optionally whose table it is in. */
export interface LeakMatcher {
  /** The fd's target (`/memfd:name (deleted)`, a path, `pipe:[...]`): equal to a string, or matching a RegExp. */
  target: string | RegExp;
  /** The role of the process (client, child, helper, worker, ...); any when absent. */
  role?: string;
}

/** Which error a 'fail' scenario must end with; every given field must match. */
export interface ErrorMatcher {
  /** The error's class name (err.name), e.g. 'PeerExitedError', 'CheckFailure'. */
  name?: string;
  /** Its `code`, e.g. 'ERR_FDBRIDGE_TRUNCATED'. */
  code?: string;
  /** A CheckFailure's check name (harness/check.ts). */
  check?: string;
}

/** What an expected-failure scenario declares must go wrong. */
export interface ExpectedFailure {
  /** 'leak': every leak the oracle sees must match one of these (and it must see one). */
  leaks?: readonly LeakMatcher[];
  /** 'fail': the error run() throws. */
  error?: ErrorMatcher;
}

export interface Scenario {
  /** kebab-case and unique; the file is scenarios/<name>.scenario.ts. */
  name: string;
  /** What it proves, in one sentence. */
  description: string;
  /** The transports it applies to (default: all of them). */
  transports?: readonly TransportName[];
  /**
   * What it needs a transport to preserve of the fds it duplicates (see
   * src/capabilities.ts): on a transport that lacks one (remote lacks them
   * all) its row is skipped, with that reason.
   */
  needs?: readonly Capability[];
  /** Default 'pass'. */
  expect?: Expectation;
  /** Required with expect 'leak' (leaks) and 'fail' (error): which check must fail. */
  failure?: ExpectedFailure;
  /** Free-form tags ('conformance', 'seed-bug', 'fault', 'soak', ...); profiles select by tag. */
  tags?: readonly string[];
  /**
   * Processes run() ends on purpose (a fault scenario's kill, a command
   * told to exit): 'command', the process a child, pidfd or remote
   * connection's command runs in; 'helper', the run's helper daemon. The
   * oracle cannot read such a process's fds again once it is gone; an end
   * declared here is noted, one not declared fails the row (ResultRow.ended),
   * whatever `expect` says: a 'leak' or 'fail' scenario declares it too.
   */
  ends?: readonly ('command' | 'helper')[];
  /**
   * Commands of its own that it connects to (each with a name and a
   * module): the run's helper daemon is started with them, since a helper
   * client can only name a command its daemon was started with.
   */
  commands?: readonly CommandSpec[];
  /** Does the work and checks it; throws (node:assert) on failure. */
  run(ctx: ScenarioContext): Promise<void>;
  /**
   * Optional latency case: the operation tinybench repeats. Set up here
   * (connections, fds) and give back the timed function and a teardown.
   */
  bench?(ctx: ScenarioContext): Promise<BenchCase>;
}

export interface BenchCase {
  /** One operation (e.g. one dupFileDescriptor round trip, and closing what it made). */
  fn(): Promise<void> | void;
  /**
   * Optional, untimed: runs after each call of fn (warm-up included), e.g.
   * to close in batches, outside the timed region, what fn made.
   */
  afterEach?(): Promise<void> | void;
  teardown?(): Promise<void> | void;
}

export interface ScenarioContext {
  readonly transport: TransportName;
  /** Seeded from (run seed, scenario, transport): the same seed gives the same inputs. */
  readonly rng: Rng;
  /** A private directory for this run of the scenario, removed afterwards. */
  readonly tmpdir: string;
  /**
   * connect() on this scenario's transport. The harness fills in what the
   * transport needs (the helper's socket path) and watches the command's
   * process with the leak oracle. Connections still open when run() ends
   * are closed by the harness.
   */
  connect(command: CommandSpec, options?: Omit<Partial<ConnectOptions>, 'command'>): Promise<Connection>;
  /** Adds a process (e.g. one the scenario spawned) to the leak oracle. */
  watchProcess(pid: number, role: string): void;
  /** A line for the report. */
  note(text: string): void;
  /** Ends this run as 'skip' with a reason (e.g. the kernel lacks a feature). */
  skip(reason: string): never;
  /**
   * Adds `by` (default 1) to the counter `name` of this row (results:
   * ResultRow.metrics; summed over rows into ResultsFile.totals), e.g.
   * 'faultsInjected', 'badInputsRejected', 'repliesLost'.
   */
  count(name: string, by?: number): void;
  /**
   * Records a high-water mark (results: ResultRow.peaks, the largest value
   * given in the row; ResultsFile.totals keeps the largest over rows), e.g.
   * 'clientPeakRssBytes', 'commandRssGrowthBytes'. Use names that no
   * counter uses.
   */
  peak(name: string, value: number): void;
  /**
   * The run's helper daemon, on 'helper' rows only: a fault scenario may
   * kill it (`process.kill(ctx.helper.pid, 'SIGKILL')`) and restart it.
   * The harness restarts a dead daemon before the next helper row anyway.
   */
  readonly helper?: HelperControl;
}

/** The run's helper daemon, as a scenario sees it. */
export interface HelperControl {
  /** Its current pid (changes on restart). */
  readonly pid: number;
  /** The socket it listens on (the same after a restart). */
  readonly socketPath: string;
  /**
   * Stops the daemon if it still runs (SIGTERM, then SIGKILL) and starts a
   * new one on the same socket; the new process is watched by the leak
   * oracle from then on. Resolves once it listens.
   */
  restart(): Promise<void>;
}

// ---------------------------------------------------------------------------
// results.json

export interface Leak {
  pid: number;
  /** 'client', 'child', 'helper', 'worker', or a role given to watchProcess. */
  role: string;
  fd: number;
  target: string;
  /** With --track-fds: the call and the JS and native stacks that opened it (call 'unseen' when no recorder saw it, 'untracked' when none ran in its process). */
  openedAt?: FdOrigin;
  /** Who opened it, when the oracle knows: the constructor of a command whose process it read only after connect. */
  openedBy?: string;
  /**
   * Set when the process ended before its look: the fd was open, and not
   * in its baseline, at the last read made of that process (after a call);
   * the read named here is the first that showed it (same number, same
   * target): where the leak appeared. It may have been closed after the last.
   */
  seenAt?: string;
}

/**
 * A process whose fds the oracle had to read again and could not: it was
 * gone before its look (harness/oracle.ts). Its leaks cannot be checked
 * past its last read; a row with one fails unless the scenario declares
 * that it ends such a process (Scenario.ends).
 */
export interface ProcessEnded {
  pid: number;
  /** 'child' (child, pidfd), 'remote', 'helper'. */
  role: string;
  /** "the child command's process", "the run's helper daemon". */
  what: string;
  /** How it ended, when known: 'exit code 0', 'signal SIGKILL'. */
  how?: string;
  /** Its last read after a call: none made, one showing nothing new ('clean'), or one showing fds not in its baseline ('leaks', reported with `seenAt`). */
  lastRead: 'none' | 'clean' | 'leaks';
  /** The scenario declared such an end (Scenario.ends): a note, not a failure. */
  declared?: boolean;
}

/** Latency in microseconds, as tinybench measures it. */
export interface Latency {
  meanUs: number;
  p50Us: number;
  p99Us: number;
  samples: number;
  opsPerSec: number;
}

export type Status = 'pass' | 'fail' | 'skip' | 'expected-fail';

export interface ResultRow {
  scenario: string;
  transport: TransportName;
  status: Status;
  leaks: Leak[];
  latency?: Latency;
  /** Why it failed or was skipped, or (expected-fail) what was caught. */
  error?: string;
  durationMs?: number;
  notes?: string[];
  /** Counters a profile records (faults injected, bad inputs rejected, ...): ctx.count. */
  metrics?: Record<string, number>;
  /** High-water marks (peak RSS, ...): ctx.peak. */
  peaks?: Record<string, number>;
  /**
   * fds that were open before the scenario and closed during it (a wrong-fd
   * close; any entry fails the row). Absent when empty.
   */
  closed?: Leak[];
  /**
   * Command processes and the run's helper daemon that ended before their
   * look (harness/oracle.ts); one not `declared` fails the row. Absent
   * when none did.
   */
  ended?: ProcessEnded[];
  /** The scenario's declared expectation (default 'pass'). */
  expect?: Expectation;
  /** With --repeat N: which pass this row belongs to (1..N). */
  iteration?: number;
  /**
   * Present when its failure may be an earlier row's doing (its `error`
   * says `possibly ... an earlier row's`): that row, which ran before it in
   * the same row process. The rerun command printed for it runs both.
   */
  suspect?: { scenario: string; transport: TransportName; iteration: number };
  /** In a merged file (`fdbridge merge`): the shard that ran this row. */
  shard?: number;
  /**
   * Present when the row's process did not end the row itself: 'killed',
   * past the row's time limit with its thread blocked (a synchronous wait, a
   * busy loop); 'exited' during the row (process.exit(), a crash);
   * 'channel-closed', its channel to the run ended (a scenario closed that
   * fd) and it was killed at once. `held`:
   * the fds it had opened during the row and still held then (the kernel
   * closed them with the process: not leaks, and not the harness's).
   */
  rowProcess?: RowProcessEnd;
}

/** How a row's process ended when it could not end the row itself (harness/run-supervisor.ts). */
export interface RowProcessEnd {
  pid: number;
  /** 'channel-closed': its channel to the run ended while it ran (the scenario closed that fd); it was killed then. */
  ended: 'killed' | 'exited' | 'channel-closed';
  /** 'exited': its exit status, or the signal that ended it. */
  code?: number | null;
  signal?: string | null;
  held: Leak[];
}

export interface Environment {
  node: string;
  kernel: string;
  cpuModel: string;
  cores: number;
  gitCommit: string;
  platform: string;
  hostname?: string;
  date: string;
}

export interface RunOptions {
  transports: TransportName[];
  /** --scenario: a pattern. */
  scenario?: string;
  /** --scenario-name: the exact names selected. */
  scenarioNames?: string[];
  bench: boolean;
  repeat: number;
  seed: number;
  shard?: { index: number; count: number };
  profile?: string;
  /** Per-row time limit (ms); a row that runs longer fails. */
  timeoutMs?: number;
  /** How long the leak oracle waits for asynchronous closes (ms). */
  settleMs?: number;
  /** --track-fds: each leak's `openedAt` says who opened it. */
  trackFds?: boolean;
}

export interface ResultsFile {
  environment: Environment;
  options: RunOptions;
  anchors: Array<{ name: string; latency: Latency }>;
  results: ResultRow[];
  /**
   * Counters summed over rows (always: faultsInjected, faultsSurvived,
   * badInputsTried, badInputsRejected, repliesLost, repliesDuplicated, 0 if
   * no row counted them), high-water marks as the largest over rows,
   * leakedFds, undeclaredLeaks, failedRows, clientPeakRssBytes and (when a
   * helper daemon ran) helperPeakRssBytes.
   */
  totals?: Record<string, number>;
  /**
   * Every row of the unsharded run (one pass, "<scenario>/<transport>",
   * sorted), whatever --shard this run took: `fdbridge merge` checks that
   * its shards agree on it and together hold each of its rows once.
   */
  plan?: { rows: string[] };
  /**
   * A merged file only: the shards it was made from, in shard order. Then
   * `environment` and `anchors` are the first shard's, and each row's
   * `shard` says which one ran it.
   */
  shards?: ShardRecord[];
}

/** One shard of a merged run, as `fdbridge merge` found it. */
export interface ShardRecord {
  index: number;
  count: number;
  /** The results file it came from, as given to merge. */
  file: string;
  environment: Environment;
  anchors: Array<{ name: string; latency: Latency }>;
  rows: number;
  failedRows: number;
  /** That shard's totals (peak RSS of its own processes, its counters). */
  totals?: Record<string, number>;
}
