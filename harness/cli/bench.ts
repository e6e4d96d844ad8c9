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
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';

import { connect, isFdBridgeError, transportNames, type Connection, type TransportName } from '../../src';
import { MAX_FDS_PER_MESSAGE } from '../../src/connection';
import { closeFd, dupFd } from '../../src/fd';
import { AnchorSession, type Anchor } from '../anchors';
import { measureLatencySamples, summarizeSamples } from '../bench';
import { BENCH_PEER_COMMAND, usageAfterGc, type Usage } from '../bench-peer';
import { formatRelayThroughput, measureRelayThroughput, type RelayThroughput } from '../bench-relay';
import { collectEnvironment } from '../environment';
import { exitOnSignals, ownTempDir } from '../exit-cleanup';
import { HelperProcess } from '../helper-process';
import {
  CFrameServer,
  DEFAULT_CLIENT_COUNTS,
  frameBench,
  GOAL_CLIENTS,
  measureThroughput,
  pointKey,
  type ThroughputMode,
  type ThroughputPoint,
  type ThroughputSample,
  type ThroughputServer,
} from '../throughput';
import { writeBenchHtml } from '../bench-html';
import type { BenchCase, Environment, Latency } from '../types';
import { EXIT, parseSubcommandArgs, parseInteger, UsageError } from './usage';

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
  /** The same gain from each mode's slow segments (p99 of the segments' times; with few segments, near the slowest). */
  gainP99: number;
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
  /** child and helper: one dupFileDescriptorSync round trip (blocking on the socket). */
  syncLatency?: Latency;
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
  /**
   * The same ratio with every latency taken at its p99 instead of its p50
   * (a rate from 1e6 / p99 instead of the mean): what the slow 1% of
   * operations see. Absent where the goal is not about latency (RSS).
   */
  p99?: { value: number; rounds: number[] };
  /** Throughput goals: the concurrent clients measured. */
  clients?: number;
  comparison: '<=' | '>=';
  target: number;
  /** null: computed for the record, no goal set for this transport (pidfd, or direct/worker pipelining). */
  met: boolean | null;
}

export interface BenchFile {
  environment: Environment;
  options: { transports: TransportName[]; timeMs: number; rounds: number; count: number; fdsPerMessage: number; pipelineDepth: number; clients: number[] };
  /**
   * The machine's load average (1, 5, 15 min) before and after: on a shared
   * machine it says what the numbers were measured against.
   */
  loadAverage: { start: number[]; end: number[] };
  /** The CPUs this process (and so every process it starts) may run on (Cpus_allowed_list; taskset changes it). */
  cpusAllowed: string;
  anchors: Anchor[];
  transports: TransportBench[];
  /**
   * The helper daemon's throughput against the C frame server with N
   * concurrent clients (harness/throughput.ts); absent when the helper was
   * not measured or --no-throughput was given.
   */
  throughput?: { clients: number[]; points: ThroughputPoint[]; error?: string };
  ratios: Ratio[];
  /**
   * Latency ratios use p50 (the median round trip): on a noisy machine the
   * mean follows a few stalls. Throughput ratios use ops/s (1e6 / mean).
   */
  ratioBasis: 'p50Us';
  /** The remote transport's row: MB/s through a relayed pipe, beside a local pipe and the via alone (bench-relay.ts). */
  relay?: RelayThroughput;
  /** Why the relay row could not be measured. */
  relayError?: string;
}

/** Latency quantile a ratio is computed from. */
type Quantile = 'p50Us' | 'p99Us';

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
 * dupFileDescriptorSync round trips, each timed alone (performance.now()
 * around the call: it blocks, so there is no promise or loop turn to time),
 * for about `timeMs` after `warmupMs`; the duplicates are closed on the far
 * side every 256, untimed, as in dupCase.
 */
async function measureSync(conn: Connection, fd: number, timeMs: number, warmupMs: number): Promise<{ latency: Latency; samplesUs: number[] }> {
  const made: number[] = [];
  const samplesUs: number[] = [];
  const run = async (ms: number, keep: boolean): Promise<void> => {
    const deadline = performance.now() + ms;
    for (let n = 0; n < 64 || performance.now() < deadline; n++) {
      const t0 = performance.now();
      made.push(conn.dupFileDescriptorSync(fd));
      const t1 = performance.now();
      if (keep) samplesUs.push((t1 - t0) * 1000);
      if (made.length >= CLOSE_BATCH) await closeRemote(conn, made.splice(0));
    }
  };
  try {
    await run(warmupMs, false);
    await run(timeMs, true);
  } finally {
    await closeRemote(conn, made.splice(0));
  }
  return { latency: summarizeSamples(samplesUs), samplesUs };
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
  const total = { seq: { ms: 0, n: 0, segments: [] as number[] }, pipe: { ms: 0, n: 0, segments: [] as number[] } };
  // Warm-up: one untimed segment of each.
  for (const depth of [1, PIPELINE_DEPTH]) await closeRemote(conn, (await dupWindow(conn, fd, SEGMENT, depth)).made);
  while (total.seq.ms < timeMs || total.pipe.ms < timeMs || total.seq.n < 2 * SEGMENT) {
    for (const [key, depth] of [['seq', 1], ['pipe', PIPELINE_DEPTH]] as const) {
      const { ms, made } = await dupWindow(conn, fd, SEGMENT, depth);
      total[key].ms += ms;
      total[key].n += made.length;
      total[key].segments.push(ms);
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
    // Every segment is SEGMENT duplications: the rate ratio is the inverse time ratio.
    gainP99: summarizeSamples(total.seq.segments).p99Us / summarizeSamples(total.pipe.segments).p99Us,
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
  sync: Map<TransportName, Latency>;
  /** By pointKey(server, mode, clients). */
  throughput: Map<string, ThroughputSample>;
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
 * measured right after it) and their median is the value judged; each is
 * computed once more from p99s (Ratio.p99), reported beside it.
 */
export function computeRatios(
  rounds: readonly RoundView[],
  transports: readonly TransportBench[],
  fdsPerMessage: number,
  clientCounts: readonly number[] = [],
): Ratio[] {
  const out: Ratio[] = [];
  const judge = (value: number, comparison: '<=' | '>=', target: number): boolean =>
    comparison === '<=' ? value <= target : value >= target;
  const perRounds = (perRound: (v: RoundView, q: Quantile) => number | undefined, q: Quantile): number[] =>
    rounds.map((v) => perRound(v, q)).filter((x): x is number => x !== undefined && Number.isFinite(x));
  /** Adds a ratio from per-round values (skipped when no round has its inputs). */
  const add = (
    r: Omit<Ratio, 'met' | 'value' | 'rounds' | 'p99'>,
    perRound: (v: RoundView, q: Quantile) => number | undefined,
    applies: boolean,
  ): void => {
    const values = perRounds(perRound, 'p50Us');
    if (values.length === 0) return;
    const value = median(values);
    const tail = perRounds(perRound, 'p99Us');
    out.push({
      ...r,
      value,
      rounds: values,
      ...(tail.length > 0 ? { p99: { value: median(tail), rounds: tail } } : {}),
      met: applies ? judge(value, r.comparison, r.target) : null,
    });
  };
  const single = (r: Omit<Ratio, 'met' | 'value' | 'rounds' | 'p99'>, value: number, applies: boolean, p99?: number): void => {
    out.push({ ...r, value, rounds: [value], ...(p99 !== undefined ? { p99: { value: p99, rounds: [p99] } } : {}), met: applies ? judge(value, r.comparison, r.target) : null });
  };
  const at = (m: Map<string, Latency>, k: string, q: Quantile): number | undefined => m.get(k)?.[q];
  /** Operations per second: from the mean at p50 (the rate over the whole measurement), from 1e6 / p99 at p99. */
  const rate = (m: Map<string, Latency>, k: string, q: Quantile): number | undefined => {
    const l = m.get(k);
    if (!l) return undefined;
    return q === 'p50Us' ? l.opsPerSec : l.p99Us > 0 ? 1e6 / l.p99Us : undefined;
  };
  for (const t of transports) {
    if (!t.latency || !t.batch || !t.pipelining || !t.longRun) continue;
    const transport = t.transport;
    const isSocket = !IN_PROCESS_GOAL_TRANSPORTS.includes(transport);
    const socketGoal = SOCKET_GOAL_TRANSPORTS.includes(transport);
    const dup = (v: RoundView, q: Quantile): number | undefined => at(v.dup, transport, q);
    const batchFdsPerSec = (v: RoundView, q: Quantile): number | undefined => mul(rate(v.batch, transport, q), fdsPerMessage);
    if (isSocket) {
      add(
        { goal: 'roundTripVsC', transport, description: `${transport} round trip / C ping-pong (p50)`, comparison: '<=', target: 1.35 },
        (v, q) => ratio(dup(v, q), at(v.anchors, 'c-scm-rights', q)),
        socketGoal,
      );
      add(
        { goal: 'nodeHandleVsRoundTrip', transport, description: `Node handle passing / ${transport} round trip (p50)`, comparison: '>=', target: 4 },
        (v, q) => ratio(at(v.anchors, 'node-handle-passing', q), dup(v, q)),
        socketGoal,
      );
      add(
        { goal: 'batchFdsPerSec', transport, description: `${transport} fds/s at ${fdsPerMessage} fds per message`, comparison: '>=', target: 1_000_000 },
        batchFdsPerSec,
        socketGoal,
      );
      add(
        { goal: 'batchVsC', transport, description: `${transport} batch fds/s / C batch fds/s`, comparison: '>=', target: 0.85 },
        (v, q) => ratio(batchFdsPerSec(v, q), mul(rate(v.anchors, 'c-scm-rights-batch', q), fdsPerMessage)),
        socketGoal,
      );
      // Like for like: the C peer keeps the fds until an untimed close, as
      // the batch case's far side does (the row above times C's closes).
      add(
        {
          goal: 'batchVsCKeep',
          transport,
          description: `${transport} batch fds/s / C batch fds/s, the C peer keeping the fds until an untimed close (like for like)`,
          comparison: '>=',
          target: 0.85,
        },
        (v, q) => ratio(batchFdsPerSec(v, q), mul(rate(v.anchors, 'c-scm-rights-batch-keep', q), fdsPerMessage)),
        socketGoal,
      );
      if (transport === 'pidfd') {
        add(
          {
            goal: 'batchVsCPull',
            transport,
            description: `${transport} batch fds/s / C pidfd_getfd batch fds/s (the kernel's floor for pulling)`,
            comparison: '>=',
            target: 0.7,
          },
          (v, q) => ratio(batchFdsPerSec(v, q), mul(rate(v.anchors, 'c-pidfd-batch', q), fdsPerMessage)),
          false,
        );
      }
      add(
        { goal: 'syncRoundTripVsC', transport, description: `${transport} dupFileDescriptorSync / C ping-pong (p50)`, comparison: '<=', target: 1.1 },
        (v, q) => ratio(at(v.sync, transport, q), at(v.anchors, 'c-scm-rights', q)),
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
      t.pipelining.gainP99,
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
  // The helper's throughput against the C frame server, per point of the
  // curve; judged at GOAL_CLIENTS, recorded elsewhere. At p99: the C
  // server's p99 request latency over the helper's (higher is better, as
  // for the rate).
  for (const mode of ['dup', 'call'] as const) {
    for (const clients of clientCounts) {
      const get = (v: RoundView, server: ThroughputServer): ThroughputSample | undefined => v.throughput.get(pointKey(server, mode, clients));
      add(
        {
          goal: 'helperThroughputVsC',
          transport: 'helper',
          clients,
          description: `helper ${mode === 'dup' ? 'dups' : 'calls'}/s / C frame server's, ${clients} client${clients === 1 ? '' : 's'}`,
          comparison: '>=',
          target: 0.7,
        },
        (v, q) => {
          const h = get(v, 'helper');
          const c = get(v, 'c-frame-server');
          if (!h || !c) return undefined;
          return q === 'p50Us' ? ratio(h.opsPerSec, c.opsPerSec) : ratio(c.p99Us, h.p99Us);
        },
        clients === GOAL_CLIENTS,
      );
    }
  }
  // Not a goal: the ceiling of the handle-passing goal on this machine. A
  // transport at the C anchor's speed gets exactly this ratio against Node.
  add(
    { goal: 'nodeHandleVsC', transport: 'c-anchor', description: 'Node handle passing / C ping-pong (p50): the best any transport can reach against Node', comparison: '>=', target: 4 },
    (v, q) => ratio(at(v.anchors, 'node-handle-passing', q), at(v.anchors, 'c-scm-rights', q)),
    false,
  );
  // Not goals either: what the two latency goals leave for Node and
  // fdbridge once the far side (dupFileDescriptorSync), or both sides (a
  // round trip), wait in an event loop instead of a blocking read.
  add(
    {
      goal: 'peerLoopFloorVsC',
      transport: 'c-anchor',
      description: 'C ping-pong with the far side on an event loop / C ping-pong (p50): the floor of dupFileDescriptorSync / C',
      comparison: '<=',
      target: 1.1,
    },
    (v, q) => ratio(at(v.anchors, 'c-scm-rights-peer-loop', q), at(v.anchors, 'c-scm-rights', q)),
    false,
  );
  add(
    {
      goal: 'loopFloorVsC',
      transport: 'c-anchor',
      description: 'C ping-pong with both sides on event loops / C ping-pong (p50): the floor of a round trip / C',
      comparison: '<=',
      target: 1.35,
    },
    (v, q) => ratio(at(v.anchors, 'c-scm-rights-loop', q), at(v.anchors, 'c-scm-rights', q)),
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
      '-',
    ]);
  }
  for (const t of file.transports) {
    if (t.error || t.skipped) {
      rows.push([t.transport, `(${t.error ? 'failed' : 'skipped'}: ${t.error ?? t.skipped})`, '', '', '', '', '', '', '', '', '']);
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
      t.syncLatency ? `${fmt(t.syncLatency.p50Us)} / ${fmt(t.syncLatency.p99Us)}` : '-',
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
      r.p99 ? fmt(r.p99.value, digits) : '-',
      `${r.comparison} ${r.target < 10 ? String(r.target) : fmt(r.target, 0)}`,
      r.met === null ? 'info' : r.met ? 'met' : 'NOT MET',
      r.rounds.length > 1 ? r.rounds.map((v) => fmt(v, digits)).join(' ') : '',
      r.p99 && r.p99.rounds.length > 1 ? r.p99.rounds.map((v) => fmt(v, digits)).join(' ') : '',
    ];
  });
  const curve = file.throughput ? throughputTable(file.throughput) : [];
  return [
    `fdbridge bench: node ${e.node}, Linux ${e.kernel}, ${e.cpuModel} x ${e.cores}, commit ${e.gitCommit.slice(0, 12)}; ` +
      `load average ${file.loadAverage.start.map((v) => v.toFixed(2)).join(' ')} -> ${file.loadAverage.end.map((v) => v.toFixed(2)).join(' ')}; ` +
      `CPUs allowed ${file.cpusAllowed}`,
    `${file.options.timeMs} ms per measurement over ${file.options.rounds} rounds; long run ${file.options.count} dups; ` +
      'latency ratios from p50, median of rounds (one run: only ratios count)',
    '',
    table(
      ['', 'mean µs', 'p50 µs', 'p99 µs', 'samples', 'ops/s', `fds/s @${file.options.fdsPerMessage}`, 'sync p50 / p99 µs', `x${file.options.pipelineDepth} gain`, 'fds start->end client / command', 'RSS +MB client / command'],
      rows,
    ),
    '',
    ...curve,
    table(['goal', 'value', 'at p99', 'target', '', 'per round', 'per round at p99'], goals),
    '',
  ].join('\n');
}

/** The throughput curve as text: one row per mode and client count, helper beside C. */
function throughputTable(t: NonNullable<BenchFile['throughput']>): string[] {
  if (t.error !== undefined) return [`throughput curve: not measured (${t.error})`, ''];
  const find = (server: ThroughputServer, mode: ThroughputMode, clients: number): ThroughputPoint | undefined =>
    t.points.find((p) => p.server === server && p.mode === mode && p.clients === clients);
  const rows: string[][] = [];
  for (const mode of ['dup', 'call'] as const) {
    for (const clients of t.clients) {
      const h = find('helper', mode, clients);
      const c = find('c-frame-server', mode, clients);
      rows.push([
        `${mode === 'dup' ? 'dups' : 'calls'}/s, ${clients} client${clients === 1 ? '' : 's'}`,
        fmt(h?.opsPerSec, 0),
        fmt(c?.opsPerSec, 0),
        h && c ? fmt(h.opsPerSec / c.opsPerSec, 2) : '-',
        `${fmt(h?.p50Us)} / ${fmt(h?.p99Us)}`,
        `${fmt(c?.p50Us)} / ${fmt(c?.p99Us)}`,
      ]);
    }
  }
  return [
    'helper throughput against the C frame server (same C load generator; one request in flight per client; median of rounds):',
    table(['', 'helper', 'C server', 'helper / C', 'helper p50 / p99 µs', 'C p50 / p99 µs'], rows),
    '',
  ];
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

export const USAGE = `bench [--json FILE] [--html FILE] [--transport a,b] [--time MS] [--rounds N] [--count N]
      [--clients N,N...] [--no-throughput] [--no-python] [--relay-mib N | --no-relay]
      Per transport: the latency of one duplication round trip, batch duplication at 253 fds
      per message, 64 duplications in flight against one at a time, and a long run on one
      connection (fd counts and RSS of both processes). Beside them, anchors measured in the
      same run: Node's handle passing and JSON IPC, a C sendmsg/recvmsg ping-pong, Python's
      socket.send_fds; and the ratios between them, at p50 and at p99. With the helper: its
      throughput (dups/s, calls/s) with N concurrent clients against a C epoll server serving
      the same frames. Pin it (taskset -c 0) to compare like with like.

  --transport a,b    transports to measure (default: all of ${transportNames().filter((t) => t !== 'remote').join(', ')})
  --time MS          latency measuring time per case, split over the rounds (default 500)
  --rounds N         anchors and transports measured in turn N times; ratios are medians (default 3)
  --count N          duplications in the long run (default 100000)
  --clients N,N...   concurrent clients of the throughput curve (default ${DEFAULT_CLIENT_COUNTS.join(',')})
  --no-throughput    leave out the throughput curve
  --no-python        leave out the Python anchor
  --relay-mib N      the remote transport's row: N MiB through a relayed pipe per round, beside a local
                     pipe and the via alone (cat) as anchors (default 64)
  --no-relay         leave that row out
  --json FILE        write everything, with the environment and the load average
  --html FILE        write the same as an HTML page (tables and the throughput curve)

exit status: 0 every transport ran (or is unsupported here) and gave its fds back; 1 one failed
or kept fds; 2 usage error; 3 error. Goals not met are reported, not failed.`;

/** `--clients 1,8,64`: distinct positive counts, ascending. */
function parseClientCounts(text: string | undefined): number[] {
  if (text === undefined) return [...DEFAULT_CLIENT_COUNTS];
  const counts = text.split(',').map((v) => parseInteger('--clients', v.trim()));
  if (counts.length === 0 || counts.some((n) => n < 1 || n > 4096)) throw new UsageError(`--clients takes counts from 1 to 4096, not ${text}`);
  return [...new Set(counts)].sort((a, b) => a - b);
}

/**
 * One round of the throughput curve: per mode and client count, the C
 * server then the helper, one right after the other (so that both see the
 * same machine), each for `timeMs` after a short warm-up.
 */
async function measureCurve(
  exe: string,
  sockets: Record<ThroughputServer, string>,
  clientCounts: readonly number[],
  timeMs: number,
  into: Map<string, ThroughputSample>,
): Promise<void> {
  for (const mode of ['dup', 'call'] as const) {
    for (const clients of clientCounts) {
      for (const server of ['c-frame-server', 'helper'] as const) {
        const m = await measureThroughput(exe, sockets[server], { clients, mode, timeMs, warmupMs: Math.max(20, timeMs / 5), command: BENCH_PEER_COMMAND.name ?? 'bench' });
        into.set(pointKey(server, mode, clients), m);
      }
    }
  }
}

/** The curve's points: per server, mode and client count, the round with the median rate (and every round). */
function curvePoints(rounds: readonly RoundView[], clientCounts: number[], error: string | undefined): NonNullable<BenchFile['throughput']> {
  const points: ThroughputPoint[] = [];
  for (const server of ['helper', 'c-frame-server'] as const) {
    for (const mode of ['dup', 'call'] as const) {
      for (const clients of clientCounts) {
        const all = rounds.map((v) => v.throughput.get(pointKey(server, mode, clients))).filter((x): x is ThroughputSample => x !== undefined);
        if (all.length === 0) continue;
        const mid = [...all].sort((a, b) => a.opsPerSec - b.opsPerSec)[(all.length - 1) >> 1] as ThroughputSample;
        points.push({ server, mode, clients, ...mid, rounds: all });
      }
    }
  }
  return { clients: clientCounts, points, ...(error !== undefined ? { error } : {}) };
}

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
  const { values } = parseSubcommandArgs(argv, {
    json: { type: 'string' },
    html: { type: 'string' },
    clients: { type: 'string' },
    'no-throughput': { type: 'boolean' },
    transport: { type: 'string' },
    time: { type: 'string' },
    rounds: { type: 'string' },
    count: { type: 'string' },
    'no-python': { type: 'boolean' },
    'relay-mib': { type: 'string' },
    'no-relay': { type: 'boolean' },
  });
  const known = transportNames();
  // remote relays bytes instead of passing fds: its row is the relay throughput (bench-relay.ts), not these.
  const transports = (values.transport?.split(',').filter((s) => s !== '') ?? known.filter((t) => t !== 'remote')) as TransportName[];
  if (transports.length === 0) throw new UsageError(`--transport needs at least one of ${known.join(', ')}`);
  for (const t of transports) {
    if (!known.includes(t)) throw new UsageError(`--transport: ${t} is not one of ${known.join(', ')}`);
  }
  const timeMs = optionalInt('time', values.time, 500);
  const roundCount = optionalInt('rounds', values.rounds, 3);
  const count = optionalInt('count', values.count, 100_000);
  const clientCounts = values['no-throughput'] || !transports.includes('helper') ? [] : parseClientCounts(values.clients);
  const relayMib = optionalInt('relay-mib', values['relay-mib'], 64);
  const perRound = Math.max(1, Math.round(timeMs / roundCount));
  const warmupTime = Math.max(10, Math.round(perRound / 5));
  const log = (line: string): void => void process.stderr.write(`fdbridge bench: ${line}\n`);

  const environment = collectEnvironment();
  const loadStart = loadavg();
  // Removed at exit; one a SIGKILLed bench left (its daemon's and frame
  // server's sockets with it) goes with the next bench's start (ownTempDir).
  const benchDir = ownTempDir('fdbridge-bench-');
  const dir = benchDir.path;
  // SIGINT/SIGTERM: exit 128 + the signal's number, the daemon, the servers and dir gone (exit-cleanup).
  const stopExitingOnSignals = exitOnSignals();
  // 253 distinct open fds (each its own dup of one /dev/null open, close-on-
  // exec): the batch sends them all, the single round trips the first.
  const devnull = openSync('/dev/null', 'r');
  const fds: number[] = [];
  let helper: HelperProcess | undefined;
  let session: AnchorSession | undefined;
  let frameServer: CFrameServer | undefined;
  let frameExe: string | undefined;
  let throughputError: string | undefined;
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
    session = await AnchorSession.open({
      python: !values['no-python'],
      pidfd: transports.includes('pidfd'),
      onSkip: (n, why) => log(`${n} skipped: ${why}`),
    });
    // Room for every client of the throughput curve, and the bench's own connection.
    if (transports.includes('helper')) {
      helper = new HelperProcess(dir);
      const room = String(Math.max(256, (clientCounts.at(-1) ?? 0) + 16));
      await helper.start({ args: ['--max-connections', room, '--max-connections-per-uid', room] });
    }
    if (clientCounts.length > 0) {
      try {
        frameExe = await frameBench(dir);
        frameServer = await CFrameServer.start(frameExe, dir);
      } catch (err) {
        throughputError = describe(err);
        log(`throughput curve skipped: ${throughputError}`);
      }
    }
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
      const view: RoundView = { anchors: new Map(), dup: new Map(), batch: new Map(), sync: new Map(), throughput: new Map() };
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
          if (SOCKET_GOAL_TRANSPORTS.includes(t)) {
            const sync = await measureSync(conn, fd, perRound, warmupTime);
            view.sync.set(t, sync.latency);
            pool(`${t} sync`, sync.samplesUs);
          }
        } catch (err) {
          await fail(t, err);
        }
      }
      if (frameExe && frameServer && helper && throughputError === undefined) {
        try {
          await measureCurve(frameExe, { helper: helper.socketPath, 'c-frame-server': frameServer.socketPath }, clientCounts, perRound, view.throughput);
        } catch (err) {
          throughputError = describe(err);
          log(`throughput curve: ${throughputError}`);
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
        const sync = pools.get(`${t} sync`);
        if (sync) res.syncLatency = summarizeSamples(sync);
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
    let relay: RelayThroughput | undefined;
    let relayError: string | undefined;
    if (!values['no-relay']) {
      log('remote: relay throughput');
      try {
        relay = await measureRelayThroughput({ bytes: relayMib * (1 << 20), rounds: roundCount });
      } catch (err) {
        relayError = describe(err);
        log(`remote: ${relayError}`);
      }
    }

    const transportResults = [...results.values()];
    const file: BenchFile = {
      environment,
      options: { transports, timeMs, rounds: roundCount, count, fdsPerMessage: MAX_FDS_PER_MESSAGE, pipelineDepth: PIPELINE_DEPTH, clients: clientCounts },
      loadAverage: { start: loadStart, end: loadavg() },
      cpusAllowed: cpusAllowed(),
      anchors,
      transports: transportResults,
      ...(clientCounts.length > 0 ? { throughput: curvePoints(rounds, clientCounts, throughputError) } : {}),
      ratios: computeRatios(rounds, transportResults, MAX_FDS_PER_MESSAGE, throughputError === undefined ? clientCounts : []),
      ratioBasis: 'p50Us',
      ...(relay ? { relay } : {}),
      ...(relayError !== undefined ? { relayError } : {}),
    };
    process.stdout.write(formatReport(file));
    if (relay) process.stdout.write(formatRelayThroughput(relay));
    if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(file, null, 2)}\n`);
    if (values.html !== undefined) writeBenchHtml(values.html, file);
    const broken = transportResults.filter((r) => r.error !== undefined || r.longRun?.fdsReturned === false);
    // A server that answered the load generator wrongly is a failure, as a failed transport is.
    return broken.length === 0 && throughputError === undefined && relayError === undefined ? EXIT.ok : EXIT.failed;
  } finally {
    for (const conn of conns.values()) await conn.close().catch(() => undefined);
    await session?.close();
    await frameServer?.stop();
    await helper?.stop();
    for (const fd of fds) closeFd(fd);
    closeFd(devnull);
    benchDir.remove();
    stopExitingOnSignals();
  }
}
