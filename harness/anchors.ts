/**
 * Anchors: what the same job costs without fdbridge, measured in the same
 * run as fdbridge itself, so that ratios to them mean something on a shared,
 * noisy machine where absolute numbers drift.
 *
 * - node-handle-passing: `child.send(msg, server)` to a forked child that
 *   closes the server it got and replies; one handle per round trip.
 * - node-ipc-json: the same round trip without a handle (Node's JSON IPC).
 * - c-scm-rights: raw C sendmsg(1 fd) + recvmsg(ack) on a SEQPACKET
 *   socketpair between two processes (build/Release/scm_pingpong).
 * - c-scm-rights-batch: the same with 253 fds per message.
 * - python-send-fds: socket.send_fds / recv_fds (optional: python3 >= 3.9).
 *
 * Imports tinybench through ./bench: never load this from jest.
 */
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { MAX_FDS_PER_MESSAGE } from '../src/connection';
import { packageRoot } from '../src/native';
import { requireDistFile } from '../src/paths';
import { measureLatency } from './bench';
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
}

export interface AnchorOptions {
  /** Measured time per anchor in ms (default 500). */
  time?: number;
  /** Warm-up time per anchor in ms (default 100). */
  warmupTime?: number;
  /** Include the Python anchor when python3 has socket.send_fds (default true). */
  python?: boolean;
  /** Called with a line when an optional anchor is skipped (default: ignored). */
  onSkip?: (name: string, reason: string) => void;
}

/** Path of the C ping-pong built by binding.gyp. */
export function scmPingpongPath(): string {
  return join(packageRoot, 'build', 'Release', 'scm_pingpong');
}

interface ExternalResult {
  samples: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  opsPerSec: number;
}

function toLatency(r: ExternalResult, what: string): Latency {
  for (const key of ['samples', 'meanUs', 'p50Us', 'p99Us', 'opsPerSec'] as const) {
    if (typeof r[key] !== 'number' || !Number.isFinite(r[key])) throw new Error(`${what}: output has no numeric ${key}`);
  }
  return { meanUs: r.meanUs, p50Us: r.p50Us, p99Us: r.p99Us, samples: r.samples, opsPerSec: r.opsPerSec };
}

/** Runs the C ping-pong with `fds` per message for about `timeMs`. */
async function measureC(fds: number, timeMs: number, warmupMs: number): Promise<Latency> {
  const exe = scmPingpongPath();
  if (!existsSync(exe)) {
    throw new Error(`${exe} is missing; build it with \`npx node-gyp rebuild\` (npm ci does)`);
  }
  // Warm-up is counted in iterations there; ~25 µs a round trip makes
  // warmupMs * 40 about the asked warm-up time, with a floor.
  const { stdout } = await execFileAsync(
    exe,
    ['--fds', String(fds), '--time', String(Math.round(timeMs)), '--iterations', '200', '--warmup', String(Math.max(100, Math.round(warmupMs * 40)))],
    { timeout: 60_000 + timeMs * 4 },
  );
  return toLatency(JSON.parse(stdout) as ExternalResult, 'scm_pingpong');
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
    samples.append((t1 - t0) / 1000.0)
    if len(samples) >= 200 and t1 >= deadline:
        break
a.close(); os.waitpid(pid, 0)
samples.sort()
def q(p):
    pos = p * (len(samples) - 1); lo = int(pos); hi = min(lo + 1, len(samples) - 1)
    return samples[lo] + (samples[hi] - samples[lo]) * (pos - lo)
mean = sum(samples) / len(samples)
print(json.dumps({"samples": len(samples), "meanUs": mean, "p50Us": q(0.5), "p99Us": q(0.99), "opsPerSec": 1e6 / mean}))
`;

async function measurePython(timeMs: number, warmupMs: number): Promise<Latency | string> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(
      'python3',
      ['-c', PYTHON_PINGPONG, String(Math.round(timeMs)), String(Math.max(100, Math.round(warmupMs * 30)))],
      { timeout: 60_000 + timeMs * 4 },
    ));
  } catch (err) {
    return `python3 failed: ${(err as Error).message.split('\n')[0]}`;
  }
  const out = JSON.parse(stdout) as ExternalResult & { skip?: string };
  return out.skip ?? toLatency(out, 'python send_fds');
}

/** A forked anchor child, ready to answer. */
async function forkAnchorChild(): Promise<ChildProcess> {
  const child = fork(requireDistFile('harness/anchor-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('anchor child: not ready within 10 s')), 10_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => reject(new Error(`anchor child exited (${signal ?? code}) before it was ready`)));
  });
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

/** Node's handle passing (`child.send(msg, server)`) and Node's JSON-only IPC, one round trip per sample. */
async function measureNode(timeMs: number, warmupMs: number): Promise<{ handle: Latency; json: Latency }> {
  const child = await forkAnchorChild();
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    let n = 0;
    const opts = { time: timeMs, warmupTime: warmupMs };
    const json = await measureLatency({ fn: () => roundTrip(child, ++n) }, opts);
    const handle = await measureLatency({ fn: () => roundTrip(child, ++n, server) }, opts);
    return { handle, json };
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await stopChild(child);
  }
}

/**
 * Measures every anchor, one after the other (never two at once: on two
 * cores they would share them and slow each other). The C and Python
 * anchors run as their own processes; their samples come from their own
 * clocks.
 */
export async function measureAnchors(options: AnchorOptions = {}): Promise<Anchor[]> {
  const time = options.time ?? 500;
  const warmupTime = options.warmupTime ?? 100;
  const node = await measureNode(time, warmupTime);
  const anchors: Anchor[] = [
    {
      name: 'node-handle-passing',
      description: 'child.send(msg, net.Server) to a forked child, which closes it and replies',
      fdsPerMessage: 1,
      latency: node.handle,
    },
    {
      name: 'node-ipc-json',
      description: "Node's JSON-only IPC message round trip (no handle)",
      fdsPerMessage: 0,
      latency: node.json,
    },
    {
      name: 'c-scm-rights',
      description: 'raw C sendmsg(1 fd) + recvmsg(1-byte ack), SEQPACKET socketpair, two processes',
      fdsPerMessage: 1,
      latency: await measureC(1, time, warmupTime),
    },
    {
      name: 'c-scm-rights-batch',
      description: `raw C, ${MAX_FDS_PER_MESSAGE} fds per message; opsPerSec counts messages`,
      fdsPerMessage: MAX_FDS_PER_MESSAGE,
      latency: await measureC(MAX_FDS_PER_MESSAGE, time, warmupTime),
    },
  ];
  if (options.python ?? true) {
    const py = await measurePython(time, warmupTime);
    if (typeof py === 'string') {
      options.onSkip?.('python-send-fds', py);
    } else {
      anchors.push({
        name: 'python-send-fds',
        description: 'Python socket.send_fds(1 fd) + recv(ack), SEQPACKET socketpair, two processes',
        fdsPerMessage: 1,
        latency: py,
      });
    }
  }
  return anchors;
}
