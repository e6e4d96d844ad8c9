/**
 * A helper daemon under a low hard RLIMIT_NOFILE (1024, as many containers
 * and service units set it). Its own fds (sockets, pidfds) are numbered at
 * or above the fd floor (512 here, half the limit), its clients' fds at the
 * lowest free numbers: by default it serves fewer connections, as many as
 * fit above the floor, and as many client fds as fit below it; given more
 * connections than fit, it refuses to start, naming the limit. At its
 * limits it refuses, typed, and never meets EMFILE itself, even with a log
 * line stuck on every connection (each holds a copy of its log fd above
 * the floor until written).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, LOG_COMMAND, makeMemfd, type Connection, type HelperLimits, type HelperStatus } from '../../src';
import { closeFd, closeFds } from '../../src/fd';
import { FrameType, MAX_FDS_PER_FRAME } from '../../src/protocol';
import { rawConnect, receiveNow } from '../../src/testing';
import { fullPipe } from '../util/full-pipe';
import { CLI, exitOf } from '../util/processes';
import { scaled } from '../util/time-scale';

const NOFILE = 1024;

/** `fdbridge helper --socket PATH ARGS` with RLIMIT_NOFILE NOFILE (soft and hard), and what it prints. */
function helperUnderLimit(socketPath: string, args: string[] = []) {
  const child = spawn('prlimit', [`--nofile=${NOFILE}`, process.execPath, CLI, 'helper', '--socket', socketPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = exitOf(child);
  const listening = new Promise<boolean>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening on')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  return { child, exited, listening, stderr: () => err };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-nofile-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('by default it serves, with fewer connections, and keeps room for client fds', async () => {
  const socketPath = join(dir, 'helper.sock');
  const daemon = helperUnderLimit(socketPath);
  try {
    expect(await daemon.listening).toBe(true);
    const conn = await connect('helper', { command: { name: 'status' }, socketPath });
    const memfd = makeMemfd('nofile');
    try {
      expect(await conn.dupFileDescriptor(memfd)).toEqual(expect.any(Number));
      const { limits } = await conn.call<HelperStatus>('status');
      // Above the floor (512 numbers): 214 kept (listener, parent watch, 64
      // refused sockets held, 128 closer copies: the shared threads and the
      // reserve, 2 log fd copies for each of its 2 lane owners, 16 in
      // passing), 3 a connection (socket, watch, log fd copy).
      expect(limits.maxConnections).toBe(Math.floor((512 - 214) / 3));
      // Below it (512 numbers): 64 for Node's own and 253 for a message being received.
      expect(limits.maxFdsTotal).toBe(512 - 64 - MAX_FDS_PER_FRAME);
      expect(limits.maxFdsPerUid).toBe(limits.maxFdsTotal); // it serves its own uid alone
    } finally {
      closeFd(memfd);
      await conn.close();
    }
  } finally {
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  }
});

/**
 * Makes `conn`'s log go into a pipe that takes nothing more and logs a
 * line there: the line stays in the daemon, written into a copy of the
 * pipe's write end made as it was handed over, until the connection ends.
 * Resolves once the line has been handed over (a later call answered).
 */
async function stuckLine(conn: Connection, pipes: number[]): Promise<void> {
  const [r, w] = fullPipe();
  pipes.push(r, w);
  await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
  void conn.call('log', 'stuck').catch(() => undefined); // ClosedError once the connection ends
  await conn.call('where');
}

/**
 * Holds every connection and client fd `limits` allow at once, each
 * connection with a log line stuck in a pipe, then asks for one of each
 * more: both are refused by their quota; then 64 more connections at
 * once, each refused. `conns` gets the connections to close, `pipes` the
 * fds to close after them.
 */
async function fillToLimits(socketPath: string, limits: HelperLimits, memfd: number, conns: Connection[], pipes: number[]): Promise<void> {
  while (conns.length < limits.maxConnections) {
    const conn = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
    conns.push(conn);
    await stuckLine(conn, pipes);
  }
  const first = conns[0] as Connection;
  // Each connection's log command adopted its pipe's write end: one client fd each, held until the command closes it.
  for (let held = conns.length; held < limits.maxFdsTotal; held += MAX_FDS_PER_FRAME) {
    await first.dupFileDescriptors(new Array<number>(Math.min(MAX_FDS_PER_FRAME, limits.maxFdsTotal - held)).fill(memfd));
  }
  // A whole frame's fds arrive before the quota can refuse them (its uid's, the total for a daemon serving its own uid alone).
  await expect(first.dupFileDescriptors(new Array<number>(MAX_FDS_PER_FRAME).fill(memfd))).rejects.toMatchObject({ quota: 'uidFds' });
  await expect(connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 })).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_REFUSED', quota: 'connections' });
  // Refused peers that do not hang up: the daemon holds up to 64 of their
  // sockets at once (each until its peer reads REFUSED and goes).
  const refused = Array.from({ length: 64 }, () => rawConnect('seqpacket', socketPath));
  try {
    const answers = await Promise.all(refused.map(answerOf));
    expect(answers).toEqual(new Array(64).fill(FrameType.REFUSED));
  } finally {
    closeFds(refused);
  }
}

/** The type of the first frame that arrives on raw socket `fd`, or the error code of its end (waiting for it: no time limit of its own). */
async function answerOf(fd: number): Promise<number | string> {
  for (;;) {
    try {
      const m = receiveNow(fd, 65536, 0);
      if (m) return m.data[0] as number;
    } catch (err) {
      return (err as { code?: string }).code ?? String(err);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('whatever connections it is given, it refuses to start naming the limit, or holds all its limits allow and refuses past them, never meeting EMFILE', async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 260 }), async (maxConnections) => {
      const socketPath = join(dir, `helper-${run++}.sock`);
      const daemon = helperUnderLimit(socketPath, ['--verbose', '--max-connections', String(maxConnections)]);
      const memfd = makeMemfd('nofile');
      const conns: Connection[] = [];
      const pipes: number[] = [];
      try {
        if (!(await daemon.listening)) {
          expect(await daemon.exited).toEqual({ code: 3, signal: null });
          expect(daemon.stderr()).toMatch(new RegExp(`RLIMIT_NOFILE ${NOFILE} leaves room for (\\d+) connections, not ${maxConnections} .*or lower maxConnections`));
          const fit = Number(/leaves room for (\d+) connections/.exec(daemon.stderr())?.[1]);
          expect(maxConnections).toBeGreaterThan(fit);
          return;
        }
        const status = await connect('helper', { command: { name: 'status' }, socketPath, timeoutMs: 20000 });
        const { limits } = await status.call<HelperStatus>('status');
        await status.close();
        expect(limits.maxConnections).toBe(maxConnections);
        await fillToLimits(socketPath, limits, memfd, conns, pipes);
        expect(daemon.stderr().split('\n').filter((l) => /EMFILE|cannot watch/.test(l))).toEqual([]);
      } finally {
        for (const c of conns) await c.close();
        closeFds(pipes);
        closeFd(memfd);
        daemon.child.kill('SIGTERM');
        await daemon.exited;
      }
    }),
    // The most that fit at 1024, one more, the most that fit when a
    // connection's log fd copy went uncounted, and the most the arithmetic once allowed.
    { numRuns: 3, examples: [[99], [100], [151], [255]] },
  );
}, scaled(240000));

test('given more connections than the limit leaves room for, it refuses to start (exit 3), naming the limit', async () => {
  const daemon = helperUnderLimit(join(dir, 'helper.sock'), ['--max-connections', '256']);
  const listened = await daemon.listening;
  if (listened) daemon.child.kill('SIGTERM');
  expect(listened).toBe(false);
  expect(await daemon.exited).toEqual({ code: 3, signal: null });
  expect(daemon.stderr()).toMatch(/RLIMIT_NOFILE 1024 leaves room for 99 connections, not 256 \(the daemon's own fds take numbers at or above the fd floor, 512: .*\): raise the limit .* or lower maxConnections/);
});
