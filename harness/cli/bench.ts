/**
 * `fdbridge bench [--json FILE] [--transport list] [--time MS] [--rounds N] [--count N] [--no-python]`
 *
 * Per transport: the latency of one dupFileDescriptor round trip, batch
 * duplication at 253 fds per message, pipelining (64 in flight against one
 * at a time) and a long run on one connection (fd counts and RSS); per
 * anchor (harness/anchors.ts): the same round trip done without fdbridge.
 * Then the ratios the project sets as goals, all from this one run, because on a
 * shared machine only ratios measured together mean anything.
 *
 * Rounds: the anchors and the transports are measured in turn, N times over
 * (each measurement gets MS / N), and every ratio is the median of its
 * per-round values. The machine's load changes by the second (a C round trip
 * here went from 8 µs to 50 µs between two runs while other jobs started);
 * measured in one block each, an anchor and a transport could see different
 * machines. The latencies reported pool the samples of all rounds.
 *
 * Exit status: 0 when every transport ran (or was skipped as unsupported
 * here) and every long run gave its fds back; 1 otherwise. Goals not met do
 * not change it: they are measurements, reported as such.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { connect, isFdBridgeError, transportNames, type Connection, type TransportName } from '../../src';
import { MAX_FDS_PER_MESSAGE } from '../../src/connection';
import { closeFd, dupFd } from '../../src/fd';
import { requireDistFile } from '../../src/paths';
import { AnchorSession, type Anchor } from '../anchors';
import { measureLatencySamples, summarizeSamples } from '../bench';
import { BENCH_PEER_COMMAND, usageAfterGc, type Usage } from '../bench-peer';
import { helperCommandArgs } from '../helper-process';
import { collectEnvironment } from '../environment';
import type { BenchCase, Environment, Latency } from '../types';
import { EXIT, parseCommandArgs, parseInteger, UsageError } from './usage';

/** Requests in flight in the pipelined measurement (the goal's figure). */
export const PIPELINE_DEPTH = 64;
/** The far side's duplicates are closed (untimed) once this many piled up. */
const CLOSE_BATCH = 256;
/** Duplications per timed segment of the pipelining measurement. */
const SEGMENT = 1024;

export interface PipeliningResult {
  depth: number;
  /** Duplications per second, one awaited before the next. */
  sequentialOpsPerSec: number;
  /** Duplications per second with `depth` in flight. */
  pipelinedOpsPerSec: number;
  /** pipelined / sequential. */
  gain: number;
  duplications: number;
}

export interface LongRunResult {
  duplications: number;
  durationMs: number;
  /** Open fds of the client process before and after (must be equal). */
  clientFdsStart: number;
  clientFdsEnd: number;
  /** Open fds of the command's process (for direct and worker: the client's own). */
  commandFdsStart: number;
  commandFdsEnd: number;
  /** RSS growth in MB (2^20 bytes) over the run, each read after a full GC. */
  clientRssGrowthMB: number;
  commandRssGrowthMB: number;
  /**
   * RSS growth over the second half alone: a leak keeps growing there, while
   * V8 sizing its young generation up (heapTotal, not heapUsed) is done early.
   */
  clientRssGrowthSecondHalfMB: number;
  commandRssGrowthSecondHalfMB: number;
  /** Live JS heap growth (heapUsed after a full GC): what a JS-side leak would show. */
  clientHeapUsedGrowthMB: number;
  commandHeapUsedGrowthMB: number;
  /** Both fd counts returned to their start. */
  fdsReturned: boolean;
}

export interface TransportBench {
  transport: TransportName;
  /** Set when the transport failed. */
  error?: string;
  /** Set when the transport cannot run here (UnsupportedError: e.g. pidfd without ptrace permission). */
  skipped?: string;
  /** One dupFileDescriptor round trip. */
  latency?: Latency;
  /**
   * Separate processes only: the fraction of sampled round trips after which
   * the command's process had last run on this process's CPU (see the C
   * anchor's sameCpuFraction).
   */
  sameCpuFraction?: number;
  /** One dupFileDescriptors call of 253 fds; fdsPerSec = 253 x opsPerSec. */
  batch?: { fdsPerMessage: number; latency: Latency; fdsPerSec: number };
  pipelining?: PipeliningResult;
  longRun?: LongRunResult;
}

export interface Ratio {
  /** Stable key, e.g. 'roundTripVsC'. */
  goal: string;
  /** The transport measured ('c-anchor': a ratio between anchors). */
  transport: TransportName | 'c-anchor';
  /** What is divided by what, in words. */
  description: string;
  /** The median of `rounds` (or the single measurement, for pipelining and RSS). */
  value: number;
  /** Per-round values. */
  rounds: number[];
  comparison: '<=' | '>=';
  target: number;
  /** null: computed for the record, no goal set for this transport (pidfd, or direct/worker pipelining). */
  met: boolean | null;
}

export interface BenchFile {
  environment: Environment;
  options: { transports: TransportName[]; timeMs: number; rounds: number; count: number; fdsPerMessage: number; pipelineDepth: number };
  /**
   * The machine's load average (1, 5, 15 min) before and after: on a shared
   * machine it says what the numbers were measured against.
   */
  loadAverage: { start: number[]; end: number[] };
  /** The CPUs this process (and so every process it starts) may run on (Cpus_allowed_list; taskset changes it). */
  cpusAllowed: string;
  anchors: Anchor[];
  transports: TransportBench[];
  ratios: Ratio[];
  /**
   * Latency ratios use p50 (the median round trip): on a noisy machine the
   * mean follows a few stalls. Throughput ratios use ops/s (1e6 / mean).
   */
  ratioBasis: 'p50Us';
}

// ---------------------------------------------------------------------------
// measurements on one connection

/**
 * Adopts and closes, on the far side, duplicates the bench made: one call
 * per batch. Untimed in every measurement.
 */
async function closeRemote(conn: Connection, fds: number[]): Promise<void> {
  for (let i = 0; i < fds.length; i += 4096) await conn.call('closeGiven', fds.slice(i, i + 4096));
}

/**
 * One dupFileDescriptor per sample. What the duplicate costs on the far side
 * is closed in batches of 256 by `afterEach`, outside the timed region:
 * closing each one inside fn would time two round trips, and leaving them
 * all to close()'s sweep would pile up tens of thousands of fds in the far
 * process (the soft limit here is 20000) and grow its fd table, which
 * changes the very cost being measured.
 */
function dupCase(conn: Connection, fd: number, placement?: CpuPlacement): BenchCase {
  const made: number[] = [];
  let n = 0;
  return {
    fn: async () => {
      made.push(await conn.dupFileDescriptor(fd));
    },
    afterEach: () => {
      if (placement && ++n % 32 === 0) placement.sample();
      return made.length >= CLOSE_BATCH ? closeRemote(conn, made.splice(0)) : undefined;
    },
    teardown: () => closeRemote(conn, made.splice(0)),
  };
}

/** The CPU a process last ran on: field 39 of /proc/<pid>/stat (after the parenthesized comm). */
function lastCpu(pid: number | 'self'): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const cpu = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[36]);
    return Number.isInteger(cpu) ? cpu : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples, between round trips (untimed), whether the command's process last
 * ran on the CPU this one runs on: the transports' counterpart of the C
 * anchor's sameCpuFraction, so that a ratio between them can be read knowing
 * whether both paid cross-CPU wake-ups.
 */
class CpuPlacement {
  #same = 0;
  #total = 0;
  constructor(readonly pid: number) {}

  sample(): void {
    const mine = lastCpu('self');
    const theirs = lastCpu(this.pid);
    if (mine === undefined || theirs === undefined) return;
    this.#total++;
    if (mine === theirs) this.#same++;
  }

  get fraction(): number | undefined {
    return this.#total === 0 ? undefined : this.#same / this.#total;
  }
}

/**
 * One 253-fd dupFileDescriptors per sample; closed after each, untimed. The
 * reply is checked there too (253 distinct fds): a benchmark of a batch that
 * lost some would flatter it.
 */
function batchCase(conn: Connection, fds: number[]): BenchCase {
  const made: number[] = [];
  return {
    fn: async () => {
      made.push(...(await conn.dupFileDescriptors(fds)));
    },
    afterEach: async () => {
      const got = made.splice(0);
      await closeRemote(conn, got);
      if (got.length !== fds.length || new Set(got).size !== fds.length) {
        throw new Error(`dupFileDescriptors(${fds.length} fds) returned ${got.length} fds, ${new Set(got).size} distinct`);
      }
    },
    teardown: () => closeRemote(conn, made.splice(0)),
  };
}

/**
 * `n` duplications of `fd` with `depth` requests in flight (a sliding
 * window: a new one starts as soon as one completes). Returns the elapsed
 * time and what was made (the caller closes it, untimed).
 */
async function dupWindow(conn: Connection, fd: number, n: number, depth: number): Promise<{ ms: number; made: number[] }> {
  const made: number[] = [];
  let started = 0;
  const lane = async (): Promise<void> => {
    while (started < n) {
      started++;
      made.push(await conn.dupFileDescriptor(fd));
    }
  };
  const t0 = performance.now();
  try {
    await Promise.all(Array.from({ length: Math.min(depth, n) }, lane));
  } catch (err) {
    // Whatever other lanes still make is the connection's to sweep at close().
    await closeRemote(conn, made.splice(0)).catch(() => undefined);
    throw err;
  }
  return { ms: performance.now() - t0, made };
}

/**
 * Throughput with 64 in flight against one at a time. The two alternate, one
 * segment of 1024 each, until each has run `timeMs`, so that the machine's
 * drift (other tenants) falls on both alike.
 */
async function measurePipelining(conn: Connection, fd: number, timeMs: number): Promise<PipeliningResult> {
  const total = { seq: { ms: 0, n: 0 }, pipe: { ms: 0, n: 0 } };
  // Warm-up: one untimed segment of each.
  for (const depth of [1, PIPELINE_DEPTH]) await closeRemote(conn, (await dupWindow(conn, fd, SEGMENT, depth)).made);
  while (total.seq.ms < timeMs || total.pipe.ms < timeMs || total.seq.n < 2 * SEGMENT) {
    for (const [key, depth] of [['seq', 1], ['pipe', PIPELINE_DEPTH]] as const) {
      const { ms, made } = await dupWindow(conn, fd, SEGMENT, depth);
      total[key].ms += ms;
      total[key].n += made.length;
      await closeRemote(conn, made);
    }
  }
  const sequentialOpsPerSec = (total.seq.n / total.seq.ms) * 1000;
  const pipelinedOpsPerSec = (total.pipe.n / total.pipe.ms) * 1000;
  return {
    depth: PIPELINE_DEPTH,
    sequentialOpsPerSec,
    pipelinedOpsPerSec,
    gain: pipelinedOpsPerSec / sequentialOpsPerSec,
    duplications: total.seq.n + total.pipe.n,
  };
}

const MB = 1024 * 1024;

/**
 * `count` duplications on one connection, 64 in flight, the far side's
 * duplicates closed every 1024 (one call each). Counts open fds and RSS in
 * both processes before and after (RSS after a full GC on each side); the
 * fd counts must come back to their start.
 */
async function longRun(conn: Connection, fd: number, count: number): Promise<LongRunResult> {
  // For direct and worker the command's process is this one: one reading.
  const inProcess = conn.location.pid === process.pid;
  const read = async (): Promise<{ client: Usage; command: Usage }> => {
    const command = inProcess ? undefined : await conn.call<Usage>('usage');
    const client = await usageAfterGc();
    return { client, command: command ?? client };
  };
  const { client: clientStart, command: commandStart } = await read();
  let commandMid = commandStart;
  let clientMid = clientStart;
  const half = Math.floor(count / 2);
  const t0 = performance.now();
  let pausedMs = 0;
  for (let done = 0; done < count; ) {
    const n = Math.min(SEGMENT, count - done, done < half ? half - done : count - done);
    const { made } = await dupWindow(conn, fd, n, PIPELINE_DEPTH);
    await closeRemote(conn, made);
    // All of a segment's duplicates are open at once on the far side, so
    // their numbers must differ: a reply paired with the wrong request
    // would show up here (and closeGiven would fail on a number twice).
    if (made.length !== n || new Set(made).size !== n) {
      throw new Error(`pipelined duplications: ${n} asked, ${made.length} returned, ${new Set(made).size} distinct`);
    }
    done += n;
    if (done === half) {
      const p0 = performance.now();
      ({ client: clientMid, command: commandMid } = await read());
      pausedMs += performance.now() - p0;
    }
  }
  const durationMs = performance.now() - t0 - pausedMs;
  const { client: clientEnd, command: commandEnd } = await read();
  return {
    duplications: count,
    durationMs,
    clientFdsStart: clientStart.fds,
    clientFdsEnd: clientEnd.fds,
    commandFdsStart: commandStart.fds,
    commandFdsEnd: commandEnd.fds,
    clientRssGrowthMB: (clientEnd.rss - clientStart.rss) / MB,
    commandRssGrowthMB: (commandEnd.rss - commandStart.rss) / MB,
    clientRssGrowthSecondHalfMB: (clientEnd.rss - clientMid.rss) / MB,
    commandRssGrowthSecondHalfMB: (commandEnd.rss - commandMid.rss) / MB,
    clientHeapUsedGrowthMB: (clientEnd.heapUsed - clientStart.heapUsed) / MB,
    commandHeapUsedGrowthMB: (commandEnd.heapUsed - commandStart.heapUsed) / MB,
    fdsReturned: clientEnd.fds === clientStart.fds && commandEnd.fds === commandStart.fds,
  };
}

/** Opens a connection to the bench command; an UnsupportedError (pidfd without ptrace rights) is a skip. */
async function open(transport: TransportName, socketPath: string | undefined): Promise<Connection | Pick<TransportBench, 'error' | 'skipped'>> {
  try {
    return await connect(transport, { command: BENCH_PEER_COMMAND, ...(socketPath ? { socketPath } : {}) });
  } catch (err) {
    const why = describe(err);
    return isFdBridgeError(err) && err.code === 'ERR_FDBRIDGE_UNSUPPORTED' ? { skipped: why } : { error: why };
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** What one round measured: latency per anchor, and per transport its round trip and its batch. */
interface RoundView {
  anchors: Map<string, Latency>;
  dup: Map<TransportName, Latency>;
  batch: Map<TransportName, Latency>;
}

// ---------------------------------------------------------------------------
// the helper daemon

/** Starts `fdbridge helper --socket <tmp>/helper.sock` and waits until it listens. */
async function startHelper(dir: string): Promise<{ socketPath: string; stop(): Promise<void> }> {
  const socketPath = join(dir, 'helper.sock');
  const child: ChildProcess = spawn(process.execPath, [requireDistFile('harness/cli.js'), 'helper', '--socket', socketPath, ...helperCommandArgs()], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the helper daemon did not start within 10 s')), 10_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the helper daemon exited (${signal ?? code}) before listening`));
    });
  });
  child.stdout?.resume();
  return {
    socketPath,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

// ---------------------------------------------------------------------------
// ratios and goals

/** Transports the socket goals are set for; pidfd is reported beside them. */
const SOCKET_GOAL_TRANSPORTS: readonly TransportName[] = ['child', 'helper'];
const IN_PROCESS_GOAL_TRANSPORTS: readonly TransportName[] = ['direct', 'worker'];

function median(values: readonly number[]): number {
  const v = [...values].sort((x, y) => x - y);
  const mid = v.length >> 1;
  return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

/**
 * Every goal ratio, for every transport it can be computed for.
 * Latency ratios are computed per round (an anchor against the transports
 * measured right after it) and their median is the value judged.
 */
export function computeRatios(rounds: readonly RoundView[], transports: readonly TransportBench[], fdsPerMessage: number): Ratio[] {
  const out: Ratio[] = [];
  const judge = (value: number, comparison: '<=' | '>=', target: number): boolean =>
    comparison === '<=' ? value <= target : value >= target;
  /** Adds a ratio from per-round values (skipped when a round lacks an input). */
  const add = (
    r: Omit<Ratio, 'met' | 'value' | 'rounds'>,
    perRound: (v: RoundView) => number | undefined,
    applies: boolean,
  ): void => {
    const values = rounds.map(perRound).filter((x): x is number => x !== undefined && Number.isFinite(x));
    if (values.length === 0) return;
    const value = median(values);
    out.push({ ...r, value, rounds: values, met: applies ? judge(value, r.comparison, r.target) : null });
  };
  const single = (r: Omit<Ratio, 'met' | 'value' | 'rounds'>, value: number, applies: boolean): void => {
    out.push({ ...r, value, rounds: [value], met: applies ? judge(value, r.comparison, r.target) : null });
  };
  const p50 = (m: Map<string, Latency>, k: string): number | undefined => m.get(k)?.p50Us;
  const rate = (m: Map<string, Latency>, k: string): number | undefined => m.get(k)?.opsPerSec;
  for (const t of transports) {
    if (!t.latency || !t.batch || !t.pipelining || !t.longRun) continue;
    const transport = t.transport;
    const isSocket = !IN_PROCESS_GOAL_TRANSPORTS.includes(transport);
    const socketGoal = SOCKET_GOAL_TRANSPORTS.includes(transport);
    const dup = (v: RoundView): number | undefined => p50(v.dup, transport);
    const batchFdsPerSec = (v: RoundView): number | undefined => {
      const r = rate(v.batch, transport);
      return r === undefined ? undefined : r * fdsPerMessage;
    };
    if (isSocket) {
      add(
        { goal: 'roundTripVsC', transport, description: `${transport} round trip / C ping-pong (p50)`, comparison: '<=', target: 1.5 },
        (v) => ratio(dup(v), p50(v.anchors, 'c-scm-rights')),
        socketGoal,
      );
      add(
        { goal: 'nodeHandleVsRoundTrip', transport, description: `Node handle passing / ${transport} round trip (p50)`, comparison: '>=', target: 4 },
        (v) => ratio(p50(v.anchors, 'node-handle-passing'), dup(v)),
        socketGoal,
      );
      add(
        { goal: 'batchFdsPerSec', transport, description: `${transport} fds/s at ${fdsPerMessage} fds per message`, comparison: '>=', target: 1_000_000 },
        batchFdsPerSec,
        socketGoal,
      );
      add(
        { goal: 'batchVsC', transport, description: `${transport} batch fds/s / C batch fds/s`, comparison: '>=', target: 0.7 },
        (v) => ratio(batchFdsPerSec(v), mul(rate(v.anchors, 'c-scm-rights-batch'), fdsPerMessage)),
        socketGoal,
      );
    } else {
      add({ goal: 'usPerDup', transport, description: `${transport} µs per duplication (p50)`, comparison: '<=', target: 5 }, dup, true);
    }
    // In-process transports have nothing to pipeline (each dup completes
    // synchronously): their gain is recorded, not judged.
    single(
      { goal: 'pipeliningGain', transport, description: `${transport} ${t.pipelining.depth} in flight / 1 at a time (dups/s)`, comparison: '>=', target: 3 },
      t.pipelining.gain,
      socketGoal,
    );
    single(
      {
        goal: 'longRunRssGrowthMB',
        transport,
        description: `${transport} RSS growth over ${t.longRun.duplications} dups, MB (client${isSocket ? ' + command' : ''})`,
        comparison: '<=',
        target: 10,
      },
      t.longRun.clientRssGrowthMB + (isSocket ? t.longRun.commandRssGrowthMB : 0),
      true,
    );
  }
  // Not a goal: the ceiling of the handle-passing goal on this machine. A
  // transport at the C anchor's speed gets exactly this ratio against Node.
  add(
    { goal: 'nodeHandleVsC', transport: 'c-anchor', description: 'Node handle passing / C ping-pong (p50): the best any transport can reach against Node', comparison: '>=', target: 4 },
    (v) => ratio(p50(v.anchors, 'node-handle-passing'), p50(v.anchors, 'c-scm-rights')),
    false,
  );
  return out;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function mul(a: number | undefined, b: number): number | undefined {
  return a === undefined ? undefined : a * b;
}

// ---------------------------------------------------------------------------
// output

function fmt(n: number | undefined, digits = 1): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(digits);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The human-readable report: environment, latency/throughput table, goals table. */
export function formatReport(file: BenchFile): string {
  const e = file.environment;
  const rows: string[][] = [];
  for (const a of file.anchors) {
    rows.push([
      `anchor ${a.name}${a.sameCpuFraction !== undefined ? ` (${Math.round(a.sameCpuFraction * 100)}% same CPU)` : ''}`,
      fmt(a.latency.meanUs),
      fmt(a.latency.p50Us),
      fmt(a.latency.p99Us),
      String(a.latency.samples),
      fmt(a.latency.opsPerSec, 0),
      a.fdsPerMessage > 1 ? fmt(a.latency.opsPerSec * a.fdsPerMessage, 0) : '-',
      '-',
      '-',
      '-',
    ]);
  }
  for (const t of file.transports) {
    if (t.error || t.skipped) {
      rows.push([t.transport, `(${t.error ? 'failed' : 'skipped'}: ${t.error ?? t.skipped})`, '', '', '', '', '', '', '', '']);
      continue;
    }
    const lr = t.longRun;
    rows.push([
      `${t.transport}${t.sameCpuFraction !== undefined ? ` (${Math.round(t.sameCpuFraction * 100)}% same CPU)` : ''}`,
      fmt(t.latency?.meanUs),
      fmt(t.latency?.p50Us),
      fmt(t.latency?.p99Us),
      String(t.latency?.samples ?? '-'),
      fmt(t.latency?.opsPerSec, 0),
      fmt(t.batch?.fdsPerSec, 0),
      t.pipelining ? `${fmt(t.pipelining.gain, 2)}x` : '-',
      lr ? `${lr.clientFdsStart}->${lr.clientFdsEnd} / ${lr.commandFdsStart}->${lr.commandFdsEnd}` : '-',
      lr
        ? `${fmt(lr.clientRssGrowthMB, 1)} / ${fmt(lr.commandRssGrowthMB, 1)} (2nd half ${fmt(lr.clientRssGrowthSecondHalfMB, 1)} / ${fmt(lr.commandRssGrowthSecondHalfMB, 1)})`
        : '-',
    ]);
  }
  const goals = file.ratios.map((r) => {
    const digits = r.goal === 'batchFdsPerSec' ? 0 : 2;
    return [
      r.description,
      fmt(r.value, digits),
      `${r.comparison} ${fmt(r.target, r.target < 10 ? 1 : 0)}`,
      r.met === null ? 'info' : r.met ? 'met' : 'NOT MET',
      r.rounds.length > 1 ? r.rounds.map((v) => fmt(v, digits)).join(' ') : '',
    ];
  });
  return [
    `fdbridge bench: node ${e.node}, Linux ${e.kernel}, ${e.cpuModel} x ${e.cores}, commit ${e.gitCommit.slice(0, 12)}; ` +
      `load average ${file.loadAverage.start.map((v) => v.toFixed(2)).join(' ')} -> ${file.loadAverage.end.map((v) => v.toFixed(2)).join(' ')}; ` +
      `CPUs allowed ${file.cpusAllowed}`,
    `${file.options.timeMs} ms per measurement over ${file.options.rounds} rounds; long run ${file.options.count} dups; ` +
      'latency ratios from p50, median of rounds (one run: only ratios count)',
    '',
    table(
      ['', 'mean µs', 'p50 µs', 'p99 µs', 'samples', 'ops/s', `fds/s @${file.options.fdsPerMessage}`, `x${file.options.pipelineDepth} gain`, 'fds start->end client / command', 'RSS +MB client / command'],
      rows,
    ),
    '',
    table(['goal', 'value', 'target', '', 'per round'], goals),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------

/** Cpus_allowed_list of this process ('unknown' when /proc says nothing). */
function cpusAllowed(): string {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export const USAGE = `bench [--json FILE] [--transport a,b] [--time MS] [--rounds N] [--count N] [--no-python]
      Per transport: the latency of one duplication round trip, batch duplication at 253 fds
      per message, 64 duplications in flight against one at a time, and a long run on one
      connection (fd counts and RSS of both processes). Beside them, anchors measured in the
      same run: Node's handle passing and JSON IPC, a C sendmsg/recvmsg ping-pong, Python's
      socket.send_fds; and the ratios between them. Pin it (taskset -c 0) to compare like with like.

  --transport a,b    transports to measure (default: all of ${transportNames().join(', ')})
  --time MS          latency measuring time per case, split over the rounds (default 500)
  --rounds N         anchors and transports measured in turn N times; ratios are medians (default 3)
  --count N          duplications in the long run (default 100000)
  --no-python        leave out the Python anchor
  --json FILE        write everything, with the environment and the load average

exit status: 0 every transport ran (or is unsupported here) and gave its fds back; 1 one failed
or kept fds; 2 usage error; 3 error. Goals not met are reported, not failed.`;

/** An optional integer option's value, or its default. */
function optionalInt(name: string, text: string | undefined, fallback: number): number {
  return text === undefined ? fallback : parseInteger(`--${name}`, text);
}

/**
 * Runs the benchmark (see the top of this file), prints the tables and,
 * with --json, writes a BenchFile. Starts and stops its own helper daemon
 * when 'helper' is among the transports. Returns the exit status.
 */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    json: { type: 'string' },
    transport: { type: 'string' },
    time: { type: 'string' },
    rounds: { type: 'string' },
    count: { type: 'string' },
    'no-python': { type: 'boolean' },
  });
  const known = transportNames();
  const transports = (values.transport?.split(',').filter((s) => s !== '') ?? known) as TransportName[];
  if (transports.length === 0) throw new UsageError(`--transport needs at least one of ${known.join(', ')}`);
  for (const t of transports) {
    if (!known.includes(t)) throw new UsageError(`--transport: ${t} is not one of ${known.join(', ')}`);
  }
  const timeMs = optionalInt('time', values.time, 500);
  const roundCount = optionalInt('rounds', values.rounds, 3);
  const count = optionalInt('count', values.count, 100_000);
  const perRound = Math.max(1, Math.round(timeMs / roundCount));
  const warmupTime = Math.max(10, Math.round(perRound / 5));
  const log = (line: string): void => void process.stderr.write(`fdbridge bench: ${line}\n`);

  const environment = collectEnvironment();
  const loadStart = loadavg();
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-bench-'));
  // 253 distinct open fds (each its own dup of one /dev/null open, close-on-
  // exec): the batch sends them all, the single round trips the first.
  const devnull = openSync('/dev/null', 'r');
  const fds: number[] = [];
  let helper: Awaited<ReturnType<typeof startHelper>> | undefined;
  let session: AnchorSession | undefined;
  const conns = new Map<TransportName, Connection>();
  const results = new Map<TransportName, TransportBench>(transports.map((t) => [t, { transport: t }]));
  const fail = async (t: TransportName, err: unknown): Promise<void> => {
    (results.get(t) as TransportBench).error = describe(err);
    log(`${t}: ${describe(err)}`);
    const conn = conns.get(t);
    conns.delete(t);
    await conn?.close();
  };
  try {
    for (let i = 0; i < MAX_FDS_PER_MESSAGE; i++) fds.push(dupFd(devnull));
    const fd = fds[0] as number;
    session = await AnchorSession.open({ python: !values['no-python'], onSkip: (n, why) => log(`${n} skipped: ${why}`) });
    if (transports.includes('helper')) helper = await startHelper(dir);
    for (const t of transports) {
      const c = await open(t, helper?.socketPath);
      if ('close' in c) conns.set(t, c);
      else {
        Object.assign(results.get(t) as TransportBench, c);
        log(`${t}: ${c.error ?? c.skipped}`);
      }
    }

    // Latency: rounds of (every anchor, then every transport's round trip and batch).
    const pools = new Map<string, number[]>();
    const sameCpu = new Map<string, number[]>();
    const pool = (key: string, samples: readonly number[]): void => {
      const p = pools.get(key) ?? [];
      for (const v of samples) p.push(v);
      pools.set(key, p);
    };
    const rounds: RoundView[] = [];
    const placements = new Map<TransportName, CpuPlacement>();
    for (const [t, conn] of conns) {
      if (conn.location.pid !== process.pid) placements.set(t, new CpuPlacement(conn.location.pid));
    }
    for (let r = 0; r < roundCount; r++) {
      log(`round ${r + 1}/${roundCount}`);
      const view: RoundView = { anchors: new Map(), dup: new Map(), batch: new Map() };
      for (const name of session.names) {
        const m = await session.measure(name, { time: perRound, warmupTime });
        view.anchors.set(name, m.latency);
        pool(`anchor ${name}`, m.samplesUs);
        if (m.sameCpuFraction !== undefined) sameCpu.set(name, [...(sameCpu.get(name) ?? []), m.sameCpuFraction]);
      }
      for (const [t, conn] of conns) {
        try {
          const dup = await measureLatencySamples(dupCase(conn, fd, placements.get(t)), { time: perRound, warmupTime });
          const batch = await measureLatencySamples(batchCase(conn, fds), { time: perRound, warmupTime });
          view.dup.set(t, dup.latency);
          view.batch.set(t, batch.latency);
          pool(`${t} dup`, dup.samplesUs);
          pool(`${t} batch`, batch.samplesUs);
        } catch (err) {
          await fail(t, err);
        }
      }
      rounds.push(view);
    }

    // Throughput and the long run: once per transport (the pipelining
    // measurement alternates its two modes itself).
    for (const [t, conn] of conns) {
      log(`${t}: pipelining, long run of ${count}`);
      try {
        const res = results.get(t) as TransportBench;
        res.pipelining = await measurePipelining(conn, fd, timeMs);
        res.longRun = await longRun(conn, fd, count);
        res.latency = summarizeSamples(pools.get(`${t} dup`) ?? []);
        const fraction = placements.get(t)?.fraction;
        if (fraction !== undefined) res.sameCpuFraction = fraction;
        const batch = summarizeSamples(pools.get(`${t} batch`) ?? []);
        res.batch = { fdsPerMessage: fds.length, latency: batch, fdsPerSec: batch.opsPerSec * fds.length };
      } catch (err) {
        await fail(t, err);
      }
    }

    const anchors: Anchor[] = session.names.map((name) => {
      const fractions = sameCpu.get(name);
      return {
        name,
        ...AnchorSession.describe(name),
        latency: summarizeSamples(pools.get(`anchor ${name}`) ?? []),
        ...(fractions ? { sameCpuFraction: fractions.reduce((a, b) => a + b, 0) / fractions.length } : {}),
      };
    });
    const transportResults = [...results.values()];
    const file: BenchFile = {
      environment,
      options: { transports, timeMs, rounds: roundCount, count, fdsPerMessage: MAX_FDS_PER_MESSAGE, pipelineDepth: PIPELINE_DEPTH },
      loadAverage: { start: loadStart, end: loadavg() },
      cpusAllowed: cpusAllowed(),
      anchors,
      transports: transportResults,
      ratios: computeRatios(rounds, transportResults, MAX_FDS_PER_MESSAGE),
      ratioBasis: 'p50Us',
    };
    process.stdout.write(formatReport(file));
    if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(file, null, 2)}\n`);
    const broken = transportResults.filter((r) => r.error !== undefined || r.longRun?.fdsReturned === false);
    return broken.length === 0 ? EXIT.ok : EXIT.failed;
  } finally {
    for (const conn of conns.values()) await conn.close().catch(() => undefined);
    await session?.close();
    await helper?.stop();
    for (const fd of fds) closeFd(fd);
    closeFd(devnull);
    rmSync(dir, { recursive: true, force: true });
  }
}
