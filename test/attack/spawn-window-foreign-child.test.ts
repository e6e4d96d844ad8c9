/**
 * A worker terminated while it starts a child connection: its teardown reaps
 * the processes its thread forked inside the spawn window (spawnBegins ..
 * watchChild) and SIGKILLs those still running after the grace. The window
 * is not only fdbridge's spawn: Node runs other code synchronously inside
 * spawn(), after the fork, on the same thread — the 'child_process'
 * diagnostics channel's subscribers (tracing / APM libraries) and
 * async_hooks init hooks. A child such code forks there belongs to that
 * library, not to the connection, and must be left running, as a child the
 * worker spawned before the connection is (worker-terminated.test.ts).
 *
 * Deterministic: the worker is held inside the window by the test hook
 * (afterCommandProcessSpawn) and terminated there; the run waits for the
 * reaper (reapsPending() 0), then reads the library child's state. In a
 * process of its own, which kills that child before it exits.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';

import { diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { DIST_SRC } from '../util/nobody';

const SCRIPT = (): string => {
  const worker = `
    const dc = require('node:diagnostics_channel');
    const { spawn } = require('node:child_process');
    const { parentPort } = require('node:worker_threads');
    const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
    const { afterCommandProcessSpawn } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    // A tracing library: for the first process this thread spawns, it starts a sidecar of its own.
    let started = false;
    let sidecar;
    dc.subscribe('child_process', () => {
      if (started) return;
      started = true; // its own spawn publishes too
      sidecar = spawn('sleep', ['600'], { stdio: 'ignore' });
    });
    afterCommandProcessSpawn((command) => {
      parentPort.postMessage({ sidecar: sidecar.pid, command });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    });
    connect('child', { command: LOG_COMMAND });`;
  return `
    const { readFileSync } = require('node:fs');
    const { Worker } = require('node:worker_threads');
    const { reapsPending } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    const state = (pid) => { try { return /State:\\s+(\\S)/.exec(readFileSync('/proc/' + pid + '/status', 'utf8'))[1]; } catch { return 'gone'; } };
    const w = new Worker(${JSON.stringify(worker)}, { eval: true });
    w.once('message', async ({ sidecar, command }) => {
      await w.terminate();
      const poll = () => {
        if (reapsPending() > 0) return setTimeout(poll, 10);
        console.log(JSON.stringify({ sidecar: state(sidecar), command: state(command) }));
        try { process.kill(sidecar, 'SIGKILL'); } catch {}
      };
      poll();
    });`;
};

test("a child another library forks on the worker's thread inside the spawn (a 'child_process' channel subscriber) is not killed by the terminated worker's teardown", async () => {
  const before = openFdTable();
  const run = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['-e', SCRIPT()], (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
  // 'S': the sidecar sleeps on. Killed by the reaper, it is 'gone'.
  expect(run.status === 0 ? JSON.parse(run.stdout) : run).toEqual({ sidecar: 'S', command: 'gone' });
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});
