/**
 * Anchors: what the same job costs without fdbridge, measured in the same
 * run as fdbridge itself, so that ratios to them mean something on a shared,
 * noisy machine where absolute numbers drift.
 *
 * - node-handle-passing: `child.send(msg, server)` to a forked child that
 *   closes the server it got and replies; one handle per round trip.
 * - node-ipc-json: the same round trip without a handle (Node's JSON IPC).
 * - c-scm-rights: raw C sendmsg(1 fd) + recvmsg(ack) on a SEQPACKET
 *   socketpair between two processes (native/bench/scm_pingpong.c; see
 *   ./anchor-build: skipped, with the reason, where it cannot be built).
 * - c-scm-rights-peer-loop: the same with the peer waiting as an event loop
 *   does (scm_pingpong --peer-event-loop: epoll as libuv with Node's
 *   idle-time metrics, a non-blocking read a wake-up), the parent blocking:
 *   the floor of dupFileDescriptorSync, whose far side serves from its loop.
 * - c-scm-rights-loop: both sides so (scm_pingpong --event-loop, reads until
 *   EAGAIN): the floor of a round trip between two event loops.
 * - c-scm-rights-batch: the same with 253 fds per message; the peer closes
 *   them after its ack (inside the round trip when both ends share a CPU,
 *   overlapping the parent's next send when they do not).
 * - c-scm-rights-batch-keep: the same, but the peer keeps the fds until a
 *   close request the parent sends after taking its sample, untimed
 *   (scm_pingpong --keep): what the bench's batch case times, whose far
 *   side's duplicates are closed by an untimed call. The like-for-like
 *   anchor of the batch rows.
 * - c-pidfd-batch: 253 fds per message moved as the pidfd transport moves
 *   them, by number: the peer pulls each with pidfd_getfd(2) (scm_pingpong
 *   --pidfd). The kernel's floor for pulling, beside the pidfd transport
 *   (only when it is measured, and where pidfd_getfd is allowed).
 * - python-send-fds: socket.send_fds / recv_fds (optional: python3 >= 3.9).
 *
 * Imports tinybench through ./bench: never load this from jest.
 */
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { MAX_FDS_PER_MESSAGE } from '../src/connection';
import { killIfSpawned } from '../src/child-process';
import { requireDistFile } from '../src/paths';
import { scmPingpong } from './anchor-build';
import { measureLatencySamples, summarizeSamples } from './bench';
import { cleanupOnExit } from './exit-cleanup';
import type { Latency } from './types';

const execFileAsync = promisify(execFile);

export interface Anchor {
  name: string;
  /** One line: what one sample is. */
  description: string;
  /** fds moved per round trip (0 for the JSON-only message). */
  fdsPerMessage: number;
  /** Per round trip; opsPerSec counts round trips (messages), not fds. */
  latency: Latency;
  /**
   * C anchors: the fraction of round trips whose two sides ran on the same
   * CPU. On a VM a wake-up of the other vCPU costs tens of µs, one on the
   * same CPU a few: this number says which regime the anchor measured.
   */
  sameCpuFraction?: number;
}

export interface AnchorOptions {
  /** Measured time per anchor in ms (default 500). */
  time?: number;
  /** Warm-up time per anchor in ms (default 100). */
  warmupTime?: number;
  /** Include the Python anchor when python3 has socket.send_fds (default true). */
  python?: boolean;
  /** Include c-pidfd-batch when the kernel lets the C peer pull (default false). */
  pidfd?: boolean;
  /** Called with a line when an optional anchor is skipped (default: ignored). */
  onSkip?: (name: string, reason: string) => void;
}

interface ExternalResult {
  samplesUs?: number[];
  skip?: string;
  sameCpuFraction?: number;
}

/** A measurement of one anchor: its latency and every sample (µs), for pooling rounds. */
export interface AnchorMeasurement {
  latency: Latency;
  samplesUs: number[];
  /** See Anchor.sameCpuFraction. */
  sameCpuFraction?: number;
}

function fromExternal(r: ExternalResult, what: string): AnchorMeasurement {
  const samplesUs = r.samplesUs;
  if (!Array.isArray(samplesUs) || samplesUs.length === 0 || !samplesUs.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new Error(`${what}: its output has no samples`);
  }
  const m: AnchorMeasurement = { latency: summarizeSamples(samplesUs), samplesUs };
  if (typeof r.sameCpuFraction === 'number') m.sameCpuFraction = r.sameCpuFraction;
  return m;
}

/** Runs the C ping-pong `exe` with `fds` per message for about `timeMs` (`extra`: its mode, e.g. --pidfd). */
async function measureC(exe: string, fds: number, timeMs: number, warmupMs: number, extra: string[] = []): Promise<AnchorMeasurement> {
  // Warm-up is counted in iterations there; at ~25 µs a round trip,
  // warmupMs * 40 is about the asked warm-up time (with a floor).
  const { stdout } = await execFileAsync(
    exe,
    [
      ...extra,
      '--samples',
      '--fds',
      String(fds),
      '--time',
      String(Math.round(timeMs)),
      '--iterations',
      '64',
      '--warmup',
      String(Math.max(100, Math.round(warmupMs * 40))),
    ],
    { timeout: 60_000 + timeMs * 4, maxBuffer: 256 * 1024 * 1024 },
  );
  return fromExternal(JSON.parse(stdout) as ExternalResult, 'scm_pingpong');
}

/**
 * The Python anchor's program: the same shape as the C one (fork, SEQPACKET
 * socketpair, ack, then close), timed per round trip with perf_counter_ns.
 */
const PYTHON_PINGPONG = String.raw`
import json, os, socket, sys, time
time_ms, warm = int(sys.argv[1]), int(sys.argv[2])
if not hasattr(socket, "send_fds"):
    print(json.dumps({"skip": "socket.send_fds needs Python 3.9+"})); sys.exit(0)
if time_ms == 0:
    print(json.dumps({"skip": ""})); sys.exit(0)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
pid = os.fork()
if pid == 0:
    a.close()
    while True:
        msg, fds, _, _ = socket.recv_fds(b, 1, 253, socket.MSG_CMSG_CLOEXEC)
        if not msg:
            os._exit(0)
        b.send(b"k")
        for fd in fds:
            os.close(fd)
b.close()
fds = [os.open("/dev/null", os.O_RDONLY)]
for _ in range(warm):
    socket.send_fds(a, [b"x"], fds); a.recv(1)
pc = time.perf_counter_ns
samples = []
deadline = pc() + time_ms * 1000000
while True:
    t0 = pc(); socket.send_fds(a, [b"x"], fds); a.recv(1); t1 = pc()
    samples.append(round((t1 - t0) / 1000.0, 3))
    if len(samples) >= 64 and t1 >= deadline:
        break
a.close(); os.waitpid(pid, 0)
print(json.dumps({"samplesUs": samples}))
`;

/** Runs the Python program; a string says why it cannot run here. */
async function runPython(timeMs: number, warmupMs: number): Promise<ExternalResult | string> {
  try {
    const { stdout } = await execFileAsync(
      'python3',
      ['-c', PYTHON_PINGPONG, String(Math.round(timeMs)), String(Math.max(100, Math.round(warmupMs * 30)))],
      { timeout: 60_000 + timeMs * 4, maxBuffer: 256 * 1024 * 1024 },
    );
    const out = JSON.parse(stdout) as ExternalResult;
    return out.skip ? out.skip : out;
  } catch (err) {
    return `python3 failed: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** A forked anchor child, ready to answer. */
async function forkAnchorChild(): Promise<ChildProcess> {
  const child = fork(requireDistFile('harness/anchor-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('anchor child: not ready within 10 s')), 10_000);
      child.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`anchor child exited (${signal ?? code}) before it was ready`)));
    });
  } catch (err) {
    killIfSpawned(child);
    throw err;
  }
  child.removeAllListeners('exit');
  child.removeAllListeners('error');
  return child;
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    // The child exits on disconnect; a kill is the fallback.
    if (child.connected) child.disconnect();
    setTimeout(() => child.kill('SIGKILL'), 2000).unref();
  });
}

/**
 * One round trip to an anchor child: send, wait for the echo. `server`
 * travels as a handle when given.
 */
function roundTrip(child: ChildProcess, n: number, server?: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown): void => {
      if (m !== n) return;
      child.off('message', onMessage);
      resolve();
    };
    child.on('message', onMessage);
    child.send(n, server, (err) => {
      if (err) {
        child.off('message', onMessage);
        reject(err);
      }
    });
  });
}

const DESCRIPTIONS: Record<string, { description: string; fdsPerMessage: number }> = {
  'node-handle-passing': { description: 'child.send(msg, net.Server) to a forked child, which closes it and replies', fdsPerMessage: 1 },
  'node-ipc-json': { description: "Node's JSON-only IPC message round trip (no handle)", fdsPerMessage: 0 },
  'c-scm-rights': { description: 'raw C sendmsg(1 fd) + recv(1-byte ack), SEQPACKET socketpair, two processes', fdsPerMessage: 1 },
  'c-scm-rights-peer-loop': {
    description: 'raw C as c-scm-rights, the peer waiting in epoll as an event loop does, the parent blocking (the floor of a blocking client against a far side on an event loop)',
    fdsPerMessage: 1,
  },
  'c-scm-rights-loop': {
    description: 'raw C as c-scm-rights, both sides waiting in epoll as an event loop does (the floor of a round trip between two event loops)',
    fdsPerMessage: 1,
  },
  'c-scm-rights-batch': {
    description: `raw C, ${MAX_FDS_PER_MESSAGE} fds per message; opsPerSec counts messages`,
    fdsPerMessage: MAX_FDS_PER_MESSAGE,
  },
  'c-scm-rights-batch-keep': {
    description: `raw C, ${MAX_FDS_PER_MESSAGE} fds per message, kept by the peer until an untimed close request after each sample (as the batch case closes its duplicates); opsPerSec counts messages`,
    fdsPerMessage: MAX_FDS_PER_MESSAGE,
  },
  'c-pidfd-batch': {
    description: `raw C, ${MAX_FDS_PER_MESSAGE} fd numbers per message, each pulled by the peer with pidfd_getfd; opsPerSec counts messages`,
    fdsPerMessage: MAX_FDS_PER_MESSAGE,
  },
  'python-send-fds': { description: 'Python socket.send_fds(1 fd) + recv(ack), SEQPACKET socketpair, two processes', fdsPerMessage: 1 },
};

/**
 * The anchors, ready to be measured any number of times (in rounds
 * interleaved with other measurements): the Node child stays forked and the
 * server open between measurements.
 */
export class AnchorSession {
  /** The anchors this session can measure, in the order they are measured. */
  readonly names: string[];
  readonly #child: ChildProcess;
  readonly #server: Server;
  readonly #dir: string;
  readonly #forgetDir: () => void;
  readonly #cExe: string | undefined;
  #n = 0;

  /** Forks the Node anchor child, opens its server and checks for python3 (unless `python: false`). */
  static async open(options: Pick<AnchorOptions, 'python' | 'pidfd' | 'onSkip'> = {}): Promise<AnchorSession> {
    const names = ['node-handle-passing', 'node-ipc-json'];
    // Holds the C anchor when it has to be compiled for this session.
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-anchors-'));
    // Should the process exit first: the child ends with its IPC channel, the directory is ours to remove.
    const forgetDir = cleanupOnExit(() => rmSync(dir, { recursive: true, force: true }));
    let cExe: string | undefined;
    try {
      cExe = await scmPingpong(dir);
      names.push('c-scm-rights', 'c-scm-rights-peer-loop', 'c-scm-rights-loop', 'c-scm-rights-batch', 'c-scm-rights-batch-keep');
    } catch (err) {
      options.onSkip?.('c-scm-rights', (err as Error).message);
    }
    if (cExe !== undefined && options.pidfd === true) {
      // One pull first: the kernel (5.6+) and ptrace access to the parent decide.
      try {
        await execFileAsync(cExe, ['--pidfd', '--fds', '1', '--iterations', '1', '--warmup', '0'], { timeout: 30_000 });
        names.push('c-pidfd-batch');
      } catch (err) {
        options.onSkip?.('c-pidfd-batch', (err as Error).message);
      }
    }
    if (options.python ?? true) {
      const py = await runPython(0, 0);
      if (typeof py === 'string' && py !== '') options.onSkip?.('python-send-fds', py);
      else names.push('python-send-fds');
    }
    let child: ChildProcess | undefined;
    const server = createServer();
    try {
      child = await forkAnchorChild();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    } catch (err) {
      if (child) await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
      forgetDir();
      throw err;
    }
    return new AnchorSession(names, child, server, dir, forgetDir, cExe);
  }

  private constructor(names: string[], child: ChildProcess, server: Server, dir: string, forgetDir: () => void, cExe: string | undefined) {
    this.names = names;
    this.#child = child;
    this.#server = server;
    this.#dir = dir;
    this.#forgetDir = forgetDir;
    this.#cExe = cExe;
  }

  /** What one sample of anchor `name` is, and how many fds it moves. */
  static describe(name: string): { description: string; fdsPerMessage: number } {
    const d = DESCRIPTIONS[name];
    if (!d) throw new RangeError(`no anchor named ${name}`);
    return d;
  }

  /** Measures anchor `name` once (about `time` ms after `warmupTime` ms of warm-up). */
  async measure(name: string, options: { time: number; warmupTime: number }): Promise<AnchorMeasurement> {
    const { time, warmupTime } = options;
    switch (name) {
      case 'node-handle-passing':
        return measureLatencySamples({ fn: () => roundTrip(this.#child, ++this.#n, this.#server) }, { time, warmupTime });
      case 'node-ipc-json':
        return measureLatencySamples({ fn: () => roundTrip(this.#child, ++this.#n) }, { time, warmupTime });
      case 'c-scm-rights':
      case 'c-scm-rights-batch':
        if (this.#cExe === undefined) throw new RangeError(`${name} is not available in this session`);
        return measureC(this.#cExe, name === 'c-scm-rights' ? 1 : MAX_FDS_PER_MESSAGE, time, warmupTime);
      case 'c-scm-rights-peer-loop':
      case 'c-scm-rights-loop':
        if (this.#cExe === undefined) throw new RangeError(`${name} is not available in this session`);
        return measureC(this.#cExe, 1, time, warmupTime, [name === 'c-scm-rights-loop' ? '--event-loop' : '--peer-event-loop']);
      case 'c-scm-rights-batch-keep':
        if (this.#cExe === undefined) throw new RangeError(`${name} is not available in this session`);
        return measureC(this.#cExe, MAX_FDS_PER_MESSAGE, time, warmupTime, ['--keep']);
      case 'c-pidfd-batch':
        if (this.#cExe === undefined) throw new RangeError(`${name} is not available in this session`);
        return measureC(this.#cExe, MAX_FDS_PER_MESSAGE, time, warmupTime, ['--pidfd']);
      case 'python-send-fds': {
        const r = await runPython(time, warmupTime);
        if (typeof r === 'string') throw new Error(`python-send-fds: ${r}`);
        return fromExternal(r, 'python send_fds');
      }
      default:
        throw new RangeError(`no anchor named ${name}`);
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await stopChild(this.#child);
    rmSync(this.#dir, { recursive: true, force: true });
    this.#forgetDir();
  }
}

/**
 * Measures every anchor once, one after the other (never two at once: on two
 * cores they would share them and slow each other). The C and Python
 * anchors run as processes of their own, timed by their own clocks.
 */
export async function measureAnchors(options: AnchorOptions = {}): Promise<Anchor[]> {
  const time = options.time ?? 500;
  const warmupTime = options.warmupTime ?? 100;
  const session = await AnchorSession.open(options);
  try {
    const anchors: Anchor[] = [];
    for (const name of session.names) {
      const { latency, sameCpuFraction } = await session.measure(name, { time, warmupTime });
      anchors.push({ name, ...AnchorSession.describe(name), latency, ...(sameCpuFraction !== undefined ? { sameCpuFraction } : {}) });
    }
    return anchors;
  } finally {
    await session.close();
  }
}
