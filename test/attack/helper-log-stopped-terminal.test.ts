/**
 * A client of a helper daemon redirects its log into a terminal whose
 * output it stopped (tcflow(TCOOFF) on a pty, as ^S does): the log lane's
 * write(2) into it waits in the kernel until the output starts again, and
 * nothing the daemon does can cancel it. The daemon must still stop when
 * told to: on SIGTERM it exits (the process's exit ends the write), and
 * HelperDaemon.close() resolves in a process that goes on, its event loop
 * (a worker's) free to end. The thread left in the write touches nothing of
 * an environment gone meanwhile once the write returns (the sanitizer run
 * covers this file), and closes its copy of the fd.
 *
 * The client is a node process that python3 started with a pty's two ends
 * (os.openpty, its output stopped): it holds both, so that the write
 * returns (EIO) once it is killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { openFdTable } from '../../src/fd';
import { laneWriterFds } from '../../src/test-hooks';
import { hasPython, PYTHON } from '../util/linger-attacker';
import { DIST_SRC } from '../util/nobody';
import { exitOf, fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

/** python3: a pty whose output is stopped, then exec node with both ends (argv: node, client script, socket path). */
const STOPPED_PTY = `
import os, sys, termios
m, s = os.openpty()
termios.tcflow(s, termios.TCOOFF)
os.set_inheritable(m, True)
os.set_inheritable(s, True)
os.execv(sys.argv[1], [sys.argv[1], '-e', sys.argv[2], sys.argv[3], str(s), str(m)])
`;

/** The client: its log into the pty's stopped end, three lines logged (the first stuck in write(2)). */
const CLIENT = `
const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
const [socketPath, slave] = [process.argv[1], Number(process.argv[2])];
(async () => {
  const c = await L.connect('helper', { command: L.LOG_COMMAND, socketPath });
  await c.call('redirectLogToFd', await c.dupFileDescriptor(slave));
  for (let k = 0; k < 3; k++) c.call('log', 'z'.repeat(20000)).catch(() => {});
  console.log('ready');
  setInterval(() => {}, 1000);
})().catch((e) => console.log('failed: ' + String(e)));
`;

/**
 * Starts the client against `socketPath`; resolves once its lines are
 * logged. Past `guard`: a TimeoutError with what the client printed.
 */
async function stoppedTerminalClient(socketPath: string, guard: HangGuard): Promise<ChildProcess> {
  const child = spawn(PYTHON, ['-c', STOPPED_PTY, process.execPath, CLIENT, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
      else if (out.includes('failed')) reject(new Error(out));
    });
    child.once('exit', () => reject(new Error(`the client exited: ${out}`)));
  });
  try {
    await guard.within(ready, 'the client logging its lines', () => `pid ${String(child.pid)} printed ${JSON.stringify(out)}`);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return child;
}

/** write(2)'s number on this machine (the lane thread's system call while it is stuck). */
const SYS_WRITE = process.arch === 'arm64' ? 64 : 1;

/** The system call each log lane thread of `pid` is in now (its number; -1 for none). */
function laneThreads(pid: number): number[] {
  const calls: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'fdbridge-log') continue;
      calls.push(Number(readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').split(' ')[0]));
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return calls;
}

/** Whether a log lane thread of `pid` is inside write(2) now. */
function laneInWrite(pid: number): boolean {
  return laneThreads(pid).includes(SYS_WRITE);
}

/** What `pid`'s log lane threads are doing, for a wait's report: each one's system call and wait channel, and the fds the lanes hold when it is this process. */
function lanesState(pid: number): string {
  const threads: string[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'fdbridge-log') continue;
      const call = readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').split(' ')[0];
      threads.push(`${tid}: syscall ${call}, wchan ${readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8')}`);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  const here = pid === process.pid ? `; the fds the lanes hold here: ${JSON.stringify(laneWriterFds())}` : '';
  return `log lane threads of pid ${pid}: [${threads.join('; ')}]${here}`;
}

const describeWithPython = hasPython() ? describe : describe.skip;

/**
 * The hang guards: the waits of a test share WAIT_MS (HangGuard), its
 * clean-up's share CLEAN_UP_MS, together below the test's limit (LIMIT_MS),
 * so that a wait that never ends fails with what it waited for and the
 * last state it saw, and the clean-up still runs. All scaled
 * (time-scale.ts).
 */
const WAIT_MS = scaled(80_000);
const CLEAN_UP_MS = scaled(20_000);
const LIMIT_MS = scaled(120_000);

describeWithPython('a log line stuck in a write into a stopped terminal', () => {
  test('the daemon (its own process) exits 0 on SIGTERM', async () => {
    const before = openFdTable(process.pid);
    const guard = new HangGuard(WAIT_MS);
    const socketPath = `@fdbridge-stopped-terminal-${process.pid}`;
    let daemon: HelperProcess | undefined = await guard.within(startHelperProcess(socketPath), 'the daemon listening');
    let client: ChildProcess | undefined;
    try {
      client = await stoppedTerminalClient(socketPath, guard);
      const pid = daemon.pid;
      await guard.until(`a log lane thread of the daemon (pid ${pid}) in write(2)`, () => lanesState(pid), () => laneInWrite(pid), { describe: (s) => s });
      const stopped = daemon;
      // Fails (TimeoutError) where the stuck write keeps the daemon alive until the terminal takes the line.
      expect(await guard.within(stopped.stop('SIGTERM'), 'the daemon exiting after SIGTERM', () => `${lanesState(stopped.pid)}; its stderr: ${stopped.stderr()}`)).toEqual({
        code: 0,
        signal: null,
      });
      daemon = undefined;
    } finally {
      const cleanUp = new HangGuard(CLEAN_UP_MS);
      if (daemon) await cleanUp.within(daemon.stop('SIGKILL'), 'the daemon exiting after SIGKILL');
      if (client) {
        client.kill('SIGKILL');
        await cleanUp.within(exitOf(client), 'the client exiting after SIGKILL');
      }
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, LIMIT_MS);

  test("in a worker: HelperDaemon.close() resolves, the worker's loop ends, and the write, once it returns, closes its copy", async () => {
    const before = openFdTable(process.pid);
    const guard = new HangGuard(WAIT_MS);
    const socketPath = `@fdbridge-stopped-terminal-worker-${process.pid}`;
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const { HelperDaemon } = require(${JSON.stringify(join(DIST_SRC, 'transports', 'helper-daemon.js'))});
      const daemon = HelperDaemon.start({ socketPath: workerData.socketPath });
      parentPort.once('message', () => daemon.close().then(() => parentPort.postMessage('closed')));
      parentPort.postMessage('listening');
      `,
      { eval: true, workerData: { socketPath } },
    );
    let exitCode: number | undefined;
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve)).then((code) => (exitCode = code));
    // The worker's own failure (its daemon's start) ends the waits on it with what it was.
    const failed = new Promise<never>((_, reject) => worker.once('error', reject));
    failed.catch(() => undefined);
    const workerState = (): string => `the worker ${exitCode === undefined ? 'running' : `exited ${exitCode}`}; ${lanesState(process.pid)}`;
    let client: ChildProcess | undefined;
    try {
      await guard.within(Promise.race([new Promise((resolve) => worker.once('message', resolve)), failed]), 'the daemon in the worker listening', workerState);
      client = await stoppedTerminalClient(socketPath, guard);
      await guard.until('a log lane thread of this process in write(2)', () => lanesState(process.pid), () => laneInWrite(process.pid), { describe: (s) => s });
      const closed = new Promise((resolve) => worker.once('message', resolve));
      worker.postMessage('close');
      expect(await guard.within(Promise.race([closed, failed]), 'HelperDaemon.close() in the worker', workerState)).toBe('closed');
      // Nothing keeps the worker's loop alive: it ends by itself (no terminate()).
      expect(await guard.within(exited, "the worker's exit once its daemon closed", workerState)).toBe(0);
      expect(laneInWrite(process.pid)).toBe(true);
    } finally {
      const cleanUp = new HangGuard(CLEAN_UP_MS);
      if (client) {
        // Its end of the pty gone, the write returns (EIO); the lane thread
        // closes its copy and hands the result to an environment that has ended.
        client.kill('SIGKILL');
        await cleanUp.within(exitOf(client), 'the client exiting after SIGKILL');
      }
      if (exitCode === undefined) await worker.terminate();
      // The lane thread ends once its lane is empty.
      await cleanUp.until('no log lane thread left in this process', () => lanesState(process.pid), () => laneThreads(process.pid).length === 0, { describe: (s) => s });
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, LIMIT_MS);
});
