/**
 * A worker thread that uses fdbridge and ends without closing its
 * connections (worker.terminate(): a pool shrinking, a test runner's
 * timeout; or process.exit() inside it) runs none of its closes. What
 * fdbridge made for those connections in this process (the duplicates given
 * to a direct or worker command and not adopted, the pins of a pidfd
 * connection, its sockets) is still this process's, since threads share the
 * fd table, and the processes it started are still this process's children.
 * None may outlive the worker's environment: the fd table goes back to what
 * it was, and no child process is left (one that exited and was never
 * reaped stays a zombie for the life of this process). And nothing may go
 * too early: a pidfd command process pulls pins by number for as long as it
 * lives, and an fd the worker was handed by another thread stays that
 * thread's.
 *
 * Each test waits for the teardown to be done (reapsPending,
 * backgroundClosesPending: each step has its own bound, the reaper's grace
 * then SIGKILL), then checks the table exactly, with no settling time.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { closeFd, diffFdTables, fdIdentity, formatFdTableDiff, makeMemfd, openFdTable, type FdTable } from '../../src/fd';
import { backgroundClosesPending, ownedFdCount, reapsPending } from '../../src/test-hooks';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { DIST_SRC } from '../util/nobody';
import { childrenOf, startHelperProcess, type HelperProcess } from '../util/processes';

/** What the worker's requests name: one memfd, so that its copies are told apart in the fd table. */
const TARGET = 'worker-terminated-target';

const BLOCKING = { name: 'blocking', module: join(__dirname, '..', 'fixtures', 'blocking-command.js'), export: 'BlockingCommand' };

interface Job {
  transport: string;
  socketPath: string;
  /** How the worker ends: terminated, or process.exit() when told. */
  end: 'terminate' | 'exit';
  /** The fd its requests name, the main thread's (handed over by number); else a memfd of its own, closed once named. */
  fd?: number;
  /** With the blocking command: block(fifo) first, then the duplications, none answered. */
  fifo?: string;
  remote?: typeof LOCAL_REMOTE;
}

const WORKER = `
const { parentPort, workerData: job } = require('node:worker_threads');
const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const { closeFd, makeMemfd } = require(${JSON.stringify(join(DIST_SRC, 'fd.js'))});
(async () => {
  const blocking = job.fifo !== undefined;
  const c = await connect(job.transport, { command: blocking ? ${JSON.stringify(BLOCKING)} : LOG_COMMAND, socketPath: job.socketPath, ...job.remote });
  const fd = job.fd ?? makeMemfd(${JSON.stringify(TARGET)});
  if (blocking) c.call('block', job.fifo).catch(() => undefined);
  // Requests in flight, fds given and not adopted: nothing of it is ever awaited.
  for (let i = 0; i < 50; i++) c.dupFileDescriptor(fd).catch(() => undefined);
  if (blocking) {
    await new Promise((resolve) => setImmediate(resolve));
  } else {
    for (let i = 0; i < 50; i++) c.call('where').catch(() => undefined);
    await c.dupFileDescriptor(fd);
  }
  if (job.fd === undefined) closeFd(fd);
  parentPort.on('message', () => process.exit(0));
  parentPort.postMessage({ pid: c.location.pid });
})().catch((err) => parentPort.postMessage({ error: String(err) }));`;

/** This process's children, over all its threads (a worker's spawn is the process's). */
function children(): string[] {
  return childrenOf(process.pid).map(String);
}

/** A process's state letter (R, S, Z...), or 'gone'. */
function processState(pid: number | string): string {
  try {
    return /State:\s+(\S)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return 'gone';
  }
}

async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setTimeout(r, 10));
}

/**
 * The state of a blocking command's process once it is no longer on its
 * way: it writes its pid just before it opens the FIFO, so for a moment it
 * may still be running (R, or D in the file system) after the pid can be read.
 */
async function settledState(pid: number): Promise<string> {
  await until(() => !['R', 'D'].includes(processState(pid)));
  return processState(pid);
}

/** Waits until every ended environment's teardown has reaped its processes and closed what it held. */
function teardownsDone(): Promise<void> {
  return until(() => reapsPending() === 0 && backgroundClosesPending() === 0);
}

/** Runs a worker through its job and ends it; resolves with the command's pid once it has ended. */
async function runWorker(job: Job, beforeEnd?: () => Promise<void>): Promise<number> {
  const worker = new Worker(WORKER, { eval: true, workerData: job });
  const made = await new Promise<{ pid?: number; error?: string }>((resolve) => worker.once('message', resolve));
  expect(made.error).toBeUndefined();
  await beforeEnd?.();
  if (job.end === 'exit') {
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.postMessage('exit');
    await exited;
  } else {
    await worker.terminate();
  }
  return made.pid as number;
}

/** What this process holds now against a baseline: fds opened or closed, children left (with their states), fds registered. */
function leftSince(before: { table: FdTable; children: string[]; owned: number }): unknown {
  const diff = formatFdTableDiff(diffFdTables(before.table, openFdTable()));
  return {
    fds: diff === '' ? [] : diff.split('\n'),
    children: children()
      .filter((p) => !before.children.includes(p))
      .map((p) => `${p} ${processState(p)}`),
    owned: ownedFdCount() - before.owned,
  };
}

function baseline(): { table: FdTable; children: string[]; owned: number } {
  return { table: openFdTable(), children: children(), owned: ownedFdCount() };
}

const NOTHING_LEFT = { fds: [], children: [], owned: 0 };

let dir: string;
let helper: HelperProcess;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-worker-terminated-'));
  helper = await startHelperProcess(join(dir, 'helper.sock'));
});

afterAll(async () => {
  await helper.stop();
  rmSync(dir, { recursive: true, force: true });
});

const TRANSPORTS = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'];

describe.each(['terminate', 'exit'] as const)('a worker that ends (%s) with requests in flight', (end) => {
  test.each(TRANSPORTS)('%s: leaves no fd, no registration and no child process behind', async (transport) => {
    const before = baseline();
    await runWorker({ transport, socketPath: join(dir, 'helper.sock'), end, ...(transport === 'remote' ? { remote: LOCAL_REMOTE } : {}) });
    await teardownsDone();
    expect(leftSince(before)).toEqual(NOTHING_LEFT);
  });
});

test.each(['direct', 'worker'])('%s: an fd the main thread handed to the terminated worker stays open, the same file', async (transport) => {
  const fd = makeMemfd('main-thread-fd');
  try {
    const identity = fdIdentity(fd);
    const before = baseline();
    await runWorker({ transport, socketPath: join(dir, 'helper.sock'), end: 'terminate', fd });
    await teardownsDone();
    expect(leftSince(before)).toEqual(NOTHING_LEFT);
    expect(fdIdentity(fd)).toEqual(identity);
  } finally {
    closeFd(fd);
  }
});

/**
 * A process whose main thread never loads fdbridge: its worker is the only
 * environment that did, so Node unloads the addon when the worker ends,
 * while the addon's own threads (the child reaper, the background closers)
 * still have work to do. Terminated with a child or pidfd connection open,
 * then waits until its command process is reaped and exits: 0, or the
 * signal that killed it.
 */
const ONLY_THE_WORKER_LOADS = (transport: string): string => {
  const worker = `
    const { parentPort } = require('node:worker_threads');
    const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
    connect(${JSON.stringify(transport)}, { command: LOG_COMMAND }).then(() => parentPort.postMessage('connected'));`;
  return `
    const { readdirSync, readFileSync } = require('node:fs');
    const { Worker } = require('node:worker_threads');
    // A thread may end between the listing and the read: its entry is skipped.
    const childrenOf = (t) => { try { return readFileSync('/proc/self/task/' + t + '/children', 'utf8'); } catch (err) { if (err.code === 'ENOENT') return ''; throw err; } };
    const children = () => readdirSync('/proc/self/task').flatMap((t) => childrenOf(t).split(' ').filter(Boolean));
    const w = new Worker(${JSON.stringify(worker)}, { eval: true });
    w.once('message', async () => {
      await w.terminate();
      const poll = () => (children().length > 0 ? setTimeout(poll, 20) : console.log('reaped'));
      poll();
    });`;
};

test.each(['child', 'pidfd'])('%s: a worker that was the only thread to load fdbridge ends, and the process goes on', (transport) => {
  const before = openFdTable();
  const run = spawnSync(process.execPath, ['-e', ONLY_THE_WORKER_LOADS(transport)], { encoding: 'utf8', timeout: 60000 });
  const outcome = run.status === 0 && run.signal === null ? run.stdout.trim() : `status ${run.status}, signal ${run.signal}: ${run.stderr}`;
  expect(outcome).toBe('reaped');
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});

/** The copies of the worker's memfd open in this process now. */
function targetCopies(): number {
  return [...openFdTable().values()].filter((target) => target.startsWith(`/memfd:${TARGET}`)).length;
}

describe('a command process that outlives its terminated worker', () => {
  let fifo: string;

  beforeEach(() => {
    fifo = join(dir, `release-${Date.now()}`);
    execFileSync('mkfifo', [fifo]);
  });

  afterEach(() => {
    // A process still blocked on the FIFO (the test failed) is let go, so
    // that it exits with its socket closed instead of outliving the run.
    try {
      closeSync(openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK));
    } catch {
      // ENXIO: nobody is waiting on it
    }
    rmSync(fifo, { force: true });
    rmSync(`${fifo}.blocking`, { force: true });
    rmSync(`${fifo}.blocked`, { force: true });
  });

  test('pidfd: the pins of requests it has not read stay open while it lives (it pulls them by number), and close once it is reaped', async () => {
    const before = baseline();
    let pid = 0;
    let pinsWhileBlocked = -1;
    await runWorker({ transport: 'pidfd', socketPath: '', end: 'terminate', fifo }, async () => {
      await until(() => existsSync(`${fifo}.blocked`));
    });
    pid = Number(readFileSync(`${fifo}.blocked`, 'utf8'));
    // The worker is gone; its command's process waits on the FIFO, so it is
    // alive (and has read none of the 50 duplications) until we open it.
    await settledState(pid);
    pinsWhileBlocked = targetCopies();
    expect({ pins: pinsWhileBlocked, state: processState(pid), reapsPending: reapsPending() }).toEqual({
      pins: 50,
      state: 'S',
      reapsPending: 1,
    });
    // Released, it reads the duplications, pulls the pins, finds its socket
    // closed and exits; the teardown reaps it, then closes the pins.
    writeFileSync(fifo, '');
    await teardownsDone();
    expect(leftSince(before)).toEqual(NOTHING_LEFT);
    expect(processState(pid)).toBe('gone');
  });

  test('child: one that does not exit when its socket closes is killed after the grace, and reaped', async () => {
    const before = baseline();
    await runWorker({ transport: 'child', socketPath: '', end: 'terminate', fifo }, async () => {
      await until(() => existsSync(`${fifo}.blocked`));
    });
    const pid = Number(readFileSync(`${fifo}.blocked`, 'utf8'));
    expect(await settledState(pid)).toBe('S');
    // Never released: the reaper's SIGKILL ends it.
    await teardownsDone();
    expect(leftSince(before)).toEqual(NOTHING_LEFT);
    expect(processState(pid)).toBe('gone');
  });
});

/**
 * Starting a connection, the worker spawns the command's process (or the
 * via), then watches it. Terminated between the two (worker.terminate()
 * stops its JavaScript at the next function call), Node closes the
 * process's handle without waiting for it: the teardown must find the
 * process all the same. The hook stops the worker exactly there: it tells
 * the pid, then waits until it is terminated.
 */
const TERMINATED_AFTER_SPAWN = `
const { parentPort, workerData: job } = require('node:worker_threads');
const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const { afterCommandProcessSpawn } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
afterCommandProcessSpawn((pid) => {
  parentPort.postMessage({ pid });
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
});
connect(job.transport, { command: LOG_COMMAND, ...job.remote }).catch((err) => parentPort.postMessage({ error: String(err) }));`;

test.each(['child', 'pidfd', 'remote'])('%s: a worker terminated between its spawn of the process and the watch on it leaves no child behind', async (transport) => {
  const before = baseline();
  const worker = new Worker(TERMINATED_AFTER_SPAWN, { eval: true, workerData: { transport, ...(transport === 'remote' ? { remote: LOCAL_REMOTE } : {}) } });
  const spawned = await new Promise<{ pid?: number; error?: string }>((resolve) => worker.once('message', resolve));
  expect(spawned.error).toBeUndefined();
  await worker.terminate();
  await teardownsDone();
  expect(leftSince(before)).toEqual(NOTHING_LEFT);
  expect(processState(spawned.pid as number)).toBe('gone');
});

/**
 * The teardown takes the spawn's process from the thread's children, by
 * what changed since the spawn began: a child the worker's own code
 * spawned before is not fdbridge's, and is left running. In a process of
 * its own, which ends (with that child killed) once it has told the states.
 */
const OWN_CHILD_LEFT_ALONE = (): string => {
  const worker = `
    const { spawn } = require('node:child_process');
    const { parentPort } = require('node:worker_threads');
    const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
    const { afterCommandProcessSpawn } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    const own = spawn('sleep', ['600'], { stdio: 'ignore' });
    afterCommandProcessSpawn((command) => {
      parentPort.postMessage({ own: own.pid, command });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    });
    connect('child', { command: LOG_COMMAND });`;
  return `
    const { readFileSync } = require('node:fs');
    const { Worker } = require('node:worker_threads');
    const { reapsPending } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    const state = (pid) => { try { return /State:\\s+(\\S)/.exec(readFileSync('/proc/' + pid + '/status', 'utf8'))[1]; } catch { return 'gone'; } };
    const w = new Worker(${JSON.stringify(worker)}, { eval: true });
    w.once('message', async ({ own, command }) => {
      await w.terminate();
      const poll = () => {
        if (reapsPending() > 0) return setTimeout(poll, 10);
        console.log(JSON.stringify({ own: state(own), command: state(command) }));
        process.kill(own, 'SIGKILL');
      };
      poll();
    });`;
};

test('a child the terminated worker spawned itself, before the connection, is left running', async () => {
  const before = openFdTable();
  const run = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['-e', OWN_CHILD_LEFT_ALONE()], (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
  expect(run.status === 0 ? JSON.parse(run.stdout) : run).toEqual({ own: 'S', command: 'gone' });
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});
