/**
 * The remote transport's row of the benchmark: MB/s through a relayed pipe,
 * beside two anchors measured in the same run, round by round:
 *
 * - local pipe: `head -c N /dev/zero` writing into a pipe this process
 *   reads (what the bytes would cost with no relay at all);
 * - via alone: N bytes written into `[...via, 'cat']` and read back from
 *   it, through the same kind of channel (the via's stdin and stdout) the
 *   relay uses, with nothing of fdbridge in between;
 * - relay: a remote command has `head -c N /dev/zero` write into the fd it
 *   got from dupFileDescriptor(pipe write end); this process reads the
 *   pipe's read end. The connection is set up before the clock starts.
 *
 * The goal: relay at least RELAY_GOAL of via alone (the median of the
 * per-round ratios).
 */
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';

import { connect, type ConnectOptions } from '../src';
import { closeFd, dupFd, makePipe } from '../src';
import { RELAY_BENCH_COMMAND } from './bench-relay-command';
import { LOCAL_REMOTE } from './local-remote';

export const RELAY_GOAL = 0.5;

export interface RelayThroughput {
  via: string[];
  serve: string[];
  /** Bytes moved per measurement. */
  bytes: number;
  rounds: number;
  /** MB/s (10^6 bytes per second) of each round, in round order. */
  samples: { localPipe: number[]; viaAlone: number[]; relay: number[] };
  /** Medians over the rounds. */
  localPipeMBps: number;
  viaAloneMBps: number;
  relayMBps: number;
  /** Median of the per-round ratios relay / via alone. */
  relayToViaAlone: number;
  goal: number;
  met: boolean;
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Counts what arrives on `fd` (owned: closed at the end) until end of file; resolves with the byte count. */
function countToEnd(fd: number): Promise<number> {
  const sock = new Socket({ fd, readable: true, writable: false });
  let n = 0;
  return new Promise((resolve, reject) => {
    sock.on('data', (c: Buffer) => (n += c.length));
    sock.once('end', () => {
      sock.destroy();
      resolve(n);
    });
    sock.once('error', (err) => {
      sock.destroy();
      reject(err);
    });
  });
}

function mbps(bytes: number, startNs: bigint): number {
  const s = Number(process.hrtime.bigint() - startNs) / 1e9;
  return bytes / 1e6 / s;
}

function check(what: string, got: number, want: number): void {
  if (got !== want) throw new Error(`relay bench, ${what}: ${got} bytes arrived, not ${want}`);
}

async function localPipe(bytes: number): Promise<number> {
  const [r, w] = makePipe();
  const counted = countToEnd(dupFd(r));
  closeFd(r);
  const start = process.hrtime.bigint();
  const head = spawn('head', ['-c', String(bytes), '/dev/zero'], { stdio: ['ignore', w, 'ignore'] });
  closeFd(w);
  const exited = new Promise((resolve) => head.once('exit', resolve));
  check('local pipe', await counted, bytes);
  const rate = mbps(bytes, start);
  await exited;
  return rate;
}

async function viaAlone(via: readonly string[], bytes: number): Promise<number> {
  const [file, ...args] = [...via, 'cat'] as unknown as [string, ...string[]];
  const cat = spawn(file, args, { stdio: ['pipe', 'pipe', 'ignore'] });
  const stdin = cat.stdin as NonNullable<typeof cat.stdin>;
  const stdout = cat.stdout as NonNullable<typeof cat.stdout>;
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    stdout.on('data', (c: Buffer) => (got += c.length));
    stdout.once('end', resolve);
    cat.once('error', reject);
  });
  const chunk = Buffer.alloc(256 * 1024);
  const start = process.hrtime.bigint();
  for (let sent = 0; sent < bytes; ) {
    const n = Math.min(chunk.length, bytes - sent);
    sent += n;
    if (!stdin.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => stdin.once('drain', r));
  }
  stdin.end();
  await done;
  const rate = mbps(bytes, start);
  check('via alone', got, bytes);
  await new Promise((r) => (cat.exitCode !== null || cat.signalCode !== null ? r(null) : cat.once('exit', r)));
  return rate;
}

async function relay(options: Pick<ConnectOptions, 'via' | 'serve'>, bytes: number): Promise<number> {
  const conn = await connect('remote', { ...options, command: RELAY_BENCH_COMMAND });
  const [r, w] = makePipe();
  try {
    const counted = countToEnd(dupFd(r));
    const start = process.hrtime.bigint();
    const far = await conn.dupFileDescriptor(w);
    closeFd(w);
    await conn.call('pump', far, bytes);
    check('relay', await counted, bytes);
    return mbps(bytes, start);
  } finally {
    closeFd(r);
    try {
      closeFd(w);
    } catch {
      // closed above
    }
    await conn.close();
  }
}

/** Measures the three in turn, `rounds` times, `bytes` each. */
export async function measureRelayThroughput(options: {
  bytes?: number;
  rounds?: number;
  via?: readonly string[];
  serve?: readonly string[];
}): Promise<RelayThroughput> {
  const bytes = options.bytes ?? 64 << 20;
  const rounds = options.rounds ?? 3;
  const via = [...(options.via ?? LOCAL_REMOTE.via ?? [])];
  const serve = [...(options.serve ?? LOCAL_REMOTE.serve ?? [])];
  const samples = { localPipe: [] as number[], viaAlone: [] as number[], relay: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    samples.localPipe.push(await localPipe(bytes));
    samples.viaAlone.push(await viaAlone(via, bytes));
    samples.relay.push(await relay({ via, serve }, bytes));
  }
  const ratio = median(samples.relay.map((r, i) => r / (samples.viaAlone[i] as number)));
  return {
    via,
    serve,
    bytes,
    rounds,
    samples,
    localPipeMBps: median(samples.localPipe),
    viaAloneMBps: median(samples.viaAlone),
    relayMBps: median(samples.relay),
    relayToViaAlone: ratio,
    goal: RELAY_GOAL,
    met: ratio >= RELAY_GOAL,
  };
}

/** The row and its anchors, as the bench prints them. */
export function formatRelayThroughput(t: RelayThroughput): string {
  const f = (x: number): string => x.toFixed(0).padStart(7);
  return [
    '',
    `remote relay throughput (${t.bytes / (1 << 20)} MiB x ${t.rounds} rounds; via: ${t.via.join(' ')}), MB/s, median of rounds:`,
    `  local pipe (anchor)      ${f(t.localPipeMBps)}`,
    `  via alone, cat (anchor)  ${f(t.viaAloneMBps)}`,
    `  relayed pipe             ${f(t.relayMBps)}`,
    `  relay / via alone        ${t.relayToViaAlone.toFixed(2)} (goal >= ${t.goal}: ${t.met ? 'met' : 'NOT met'})`,
    '',
  ].join('\n');
}
