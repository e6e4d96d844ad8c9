/**
 * worker.terminate() of a worker thread blocked in dupFileDescriptorSync
 * on a helper daemon that does not answer (SIGSTOPped): terminate()'s
 * promise resolves, though the call's timeoutMs (2^31 - 1 ms) would keep the
 * thread asleep in the kernel for weeks, and the process's fd table is what
 * it was before the workers started (each worker's own fds gone with it:
 * its loop's, its connection's socket, its wake-up). The same for a worker
 * a worker terminates, and for a process that exits (process.exit(): Node
 * stops and joins every worker) while one of its workers is blocked.
 *
 * A worker is terminated only once its thread is seen in the wait's system
 * call (its /proc/self/task/TID/syscall: poll(2) or ppoll(2), or the
 * blocking recvmsg(2) it used to wait in), so a terminate() that only
 * stops JavaScript between calls cannot pass. A worker's own process.exit()
 * wakes no other worker. No pass/fail check here is a
 * time: a hang is caught by a guard far above what any of it takes.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { ClosedError, connect, LOG_COMMAND } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import * as frameChannel from '../../src/frame-channel';
import { backgroundClosesPending, reapsPending } from '../../src/test-hooks';
import { DIST_SRC } from '../util/nobody';
import { exitOf, startHelperProcess, type HelperProcess } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

/** The calls a thread blocked in dupFileDescriptorSync sleeps in, by process.arch: poll, ppoll, recvmsg (asm/unistd.h). */
const WAIT_CALLS: ReadonlyMap<string, readonly number[]> = new Map([
  ['x64', [7, 271, 47]],
  ['arm64', [73, 212]],
]);
const WAITS = WAIT_CALLS.get(process.arch);

/** A hang guard for each step, far above what any takes (a worker's start: 0.1 s here, at a load of 4). */
const GUARD_MS = scaled(20_000);

/**
 * A worker on the helper daemon at workerData.socketPath, whose requests
 * name workerData.fd (the main thread's). It reports its
 * thread id (/proc/thread-self) once connected; at the first message it
 * does its `kind`: 'sync' blocks in dupFileDescriptorSync with a timeout of
 * 2^31 - 1 ms (and reports what it returned or threw), 'async' leaves a
 * dupFileDescriptor pending, 'exits' calls process.exit(), 'idle' nothing;
 * 'parent' starts a worker of this same script ('sync'), relays its
 * reports, and terminates it when told, reporting when that resolved.
 */
const WORKER = `
const { parentPort, workerData: job, Worker } = require('node:worker_threads');
const { readlinkSync } = require('node:fs');
const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const tid = () => Number(readlinkSync('/proc/thread-self').split('/').pop());
if (job.kind === 'parent') {
  const child = new Worker(job.script, { eval: true, workerData: { ...job, kind: 'sync' } });
  child.on('message', (m) => parentPort.postMessage(m));
  child.on('error', (err) => parentPort.postMessage({ error: String(err) }));
  parentPort.on('message', (m) => {
    if (m === 'terminate') child.terminate().then((code) => parentPort.postMessage({ terminated: code }));
    else child.postMessage(m);
  });
} else {
  (async () => {
    const c = await connect('helper', { command: LOG_COMMAND, socketPath: job.socketPath });
    const fd = job.fd;
    parentPort.once('message', () => {
      if (job.kind === 'sync') {
        let outcome;
        try {
          outcome = { dup: c.dupFileDescriptorSync(fd, { timeoutMs: 0x7fffffff }) };
        } catch (err) {
          outcome = { threw: String(err) };
        }
        parentPort.postMessage(outcome);
      } else if (job.kind === 'async') {
        c.dupFileDescriptor(fd).catch(() => undefined);
      } else if (job.kind === 'exits') {
        process.exit(0);
      }
    });
    parentPort.postMessage({ tid: tid() });
  })().catch((err) => parentPort.postMessage({ error: String(err) }));
}`;

type Kind = 'sync' | 'async' | 'idle' | 'exits' | 'parent';

interface Started {
  worker: Worker;
  kind: Kind;
  /** The thread that waits ('sync', or a 'parent''s child). */
  tid: number;
}

async function start(kind: Kind, socketPath: string, fd: number): Promise<Started> {
  const worker = new Worker(WORKER, { eval: true, workerData: { kind, socketPath, fd, script: WORKER } });
  const m = await within(
    new Promise<{ tid?: number; error?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    }),
    GUARD_MS,
    `the ${kind} worker's start`,
  );
  expect(m.error).toBeUndefined();
  return { worker, kind, tid: m.tid as number };
}

/** The system call thread `tid` of this process is in now (-1: running; NaN: gone). */
function syscallOf(tid: number): number {
  try {
    return Number(readFileSync(`/proc/self/task/${tid}/syscall`, 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
}

/** Resolves once thread `tid` sleeps in one of the wait's calls. */
async function blockedInWait(tid: number): Promise<void> {
  const waits = WAITS as readonly number[];
  await within(
    (async () => {
      while (!waits.includes(syscallOf(tid))) await new Promise((r) => setTimeout(r, 10));
    })(),
    GUARD_MS,
    `thread ${tid} waiting in dupFileDescriptorSync`,
  );
}

function teardownsDone(): Promise<void> {
  return within(
    (async () => {
      while (reapsPending() !== 0 || backgroundClosesPending() !== 0) await new Promise((r) => setTimeout(r, 10));
    })(),
    GUARD_MS,
    "the workers' teardowns",
  );
}

const SKIP = WAITS === undefined ? ` (skipped: the wait's system call numbers on ${process.arch} are not in this file)` : '';
const maybe = WAITS === undefined ? describe.skip : describe;

maybe(`worker.terminate() of a worker blocked in dupFileDescriptorSync on a stopped peer${SKIP}`, () => {
  let dir: string;
  let helper: HelperProcess;
  let socketPath: string;
  let source: number;
  beforeAll(async () => {
    source = makeMemfd('worker-terminate-sync-dup');
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-terminate-sync-'));
    socketPath = join(dir, 'helper.sock');
    helper = await startHelperProcess(socketPath);
  });
  afterAll(async () => {
    process.kill(helper.pid, 'SIGCONT');
    await helper.stop('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    closeFd(source);
  });

  test('several workers, some blocked, terminated in any order: each terminate() resolves, the fd table is as before', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom<Kind>('sync', 'async', 'idle'), { minLength: 1, maxLength: 4 }).filter((kinds) => kinds.includes('sync')),
        fc.infiniteStream(fc.nat()),
        async (kinds, picks) => {
          const before = openFdTable();
          const started: Started[] = [];
          let stopped = false;
          try {
            for (const kind of kinds) started.push(await start(kind, socketPath, source));
            process.kill(helper.pid, 'SIGSTOP');
            stopped = true;
            for (const s of started) s.worker.postMessage('go');
            for (const s of started) if (s.kind === 'sync') await blockedInWait(s.tid);
            const left = [...started];
            while (left.length > 0) {
              const [s] = left.splice((picks.next().value as number) % left.length, 1) as [Started];
              expect(await within(s.worker.terminate(), GUARD_MS, `terminate() of a ${s.kind} worker`)).toBe(1);
            }
          } finally {
            // Answered, a wait that was not woken ends too.
            if (stopped) process.kill(helper.pid, 'SIGCONT');
            await Promise.all(started.map((s) => s.worker.terminate()));
          }
          await teardownsDone();
          expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
        },
      ),
      { numRuns: 5, seed: 1204, endOnFailure: true },
    );
  }, scaled(300_000));

  test('a worker terminates its own worker, blocked: terminate() resolves there, the fd table is as before', async () => {
    const before = openFdTable();
    const parent = await start('parent', socketPath, source);
    process.kill(helper.pid, 'SIGSTOP');
    try {
      parent.worker.postMessage('go');
      await blockedInWait(parent.tid);
      // The blocked worker's own report (what its call threw) may come first.
      const terminated = new Promise<{ terminated?: number }>((resolve) => {
        const onMessage = (m: { terminated?: number }): void => {
          if (m.terminated === undefined) return;
          parent.worker.off('message', onMessage);
          resolve(m);
        };
        parent.worker.on('message', onMessage);
      });
      parent.worker.postMessage('terminate');
      expect(await within(terminated, GUARD_MS, "the parent worker's terminate() of its blocked worker")).toEqual({ terminated: 1 });
    } finally {
      process.kill(helper.pid, 'SIGCONT');
      await parent.worker.terminate();
    }
    await teardownsDone();
    expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
  }, scaled(120_000));

  test("a worker's own process.exit() wakes no other worker: one blocked there gets its reply once the daemon answers", async () => {
    const before = openFdTable();
    const blocked = await start('sync', socketPath, source);
    const exits = await start('exits', socketPath, source);
    process.kill(helper.pid, 'SIGSTOP');
    let stopped = true;
    try {
      blocked.worker.postMessage('go');
      await blockedInWait(blocked.tid);
      const exited = new Promise((resolve) => exits.worker.once('exit', resolve));
      exits.worker.postMessage('go');
      expect(await within(exited, GUARD_MS, "the other worker's process.exit()")).toBe(0);
      const outcome = new Promise((resolve) => blocked.worker.once('message', resolve));
      process.kill(helper.pid, 'SIGCONT');
      stopped = false;
      expect(await within(outcome, GUARD_MS, 'the reply')).toEqual({ dup: expect.any(Number) });
    } finally {
      if (stopped) process.kill(helper.pid, 'SIGCONT');
      await Promise.all([blocked.worker.terminate(), exits.worker.terminate()]);
    }
    await teardownsDone();
    expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
  }, scaled(120_000));

  // What the addon's dupSync gives when its wait ends after worker.terminate()
  // of the thread has been asked for (a wait that ran out, or was woken a
  // moment too late): nothing, since Node-API makes no value then and the
  // error that says so cannot be thrown either. That race cannot be staged where
  // anything sees the call's outcome (the thread's JavaScript stops at its
  // next call), so the channel's answer is staged here, on this thread.
  test("a dupSync that gives nothing (its thread's termination asked for during the wait): ClosedError, not a TypeError; the connection goes on", async () => {
    const before = openFdTable();
    const open = frameChannel.openFrameChannel;
    const spy = jest.spyOn(frameChannel, 'openFrameChannel').mockImplementation((socket, callbacks) => {
      const channel = open(socket, callbacks);
      Object.defineProperty(channel, 'dupSync', { value: (): undefined => undefined });
      return channel;
    });
    let conn;
    try {
      conn = await connect('helper', { command: LOG_COMMAND, socketPath });
    } finally {
      spy.mockRestore();
    }
    try {
      let thrown: unknown;
      try {
        conn.dupFileDescriptorSync(source, { timeoutMs: 0x7fffffff });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ClosedError);
      expect((thrown as Error).message).toBe(
        `dupFileDescriptorSync(${source}) failed: this worker thread is being terminated (worker.terminate()) ` +
          `before the helper (pid ${conn.location.pid}) answered; the connection closes with the thread`,
      );
      // Nothing was sent: the connection serves on.
      const far = await conn.dupFileDescriptor(source);
      expect(typeof far).toBe('number');
    } finally {
      await conn.close();
    }
    expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
  });

  test('process.exit() while a worker is blocked: the process exits', async () => {
    // A process of its own (this one cannot exit): it starts the worker,
    // says its thread, lets it ask when told (once the daemon is stopped:
    // else its reply may come first), and exits when told.
    const script = join(dir, 'exit-while-blocked.js');
    writeFileSync(
      script,
      `const { Worker } = require('node:worker_threads');
       const { readFileSync } = require('node:fs');
       require(${JSON.stringify(DIST_SRC)});
       const worker = new Worker(${JSON.stringify(WORKER)}, { eval: true, workerData: { kind: 'sync', socketPath: ${JSON.stringify(socketPath)}, fd: require('node:fs').openSync('/dev/null', 'r') } });
       worker.once('message', (m) => {
         process.stdout.write(JSON.stringify(m) + '\\n');
         process.stdin.once('data', () => {
           worker.postMessage('go');
           process.stdin.once('data', () => process.exit(0));
         });
       });`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = exitOf(child);
    try {
      const first = await within(
        new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString()))),
        GUARD_MS,
        "the exiting process's worker start",
      );
      const { tid } = JSON.parse(first) as { tid: number };
      process.kill(helper.pid, 'SIGSTOP');
      child.stdin.write('go\n');
      await within(
        (async () => {
          const waits = WAITS as readonly number[];
          const call = (): number => {
            try {
              return Number(readFileSync(`/proc/${child.pid}/task/${tid}/syscall`, 'utf8').split(' ')[0]);
            } catch {
              return NaN;
            }
          };
          while (!waits.includes(call())) await new Promise((r) => setTimeout(r, 10));
        })(),
        GUARD_MS,
        "the exiting process's worker waiting",
      );
      child.stdin.write('exit\n');
      expect(await within(exited, GUARD_MS, 'the process exit')).toEqual({ code: 0, signal: null });
    } finally {
      process.kill(helper.pid, 'SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
  }, scaled(120_000));
});
