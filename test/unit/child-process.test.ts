/**
 * killIfSpawned: a ChildProcess is signalled only while its process runs.
 * One whose spawn failed (no pid) or whose exit was seen is never signalled,
 * and the call says so by returning false.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';

import { killIfSpawned } from '../../src/child-process';
import { distPath } from '../../src/paths';

/**
 * Fills its own fd table (RLIMIT_NOFILE at its lowest free fd), spawns
 * (EMFILE: a ChildProcess without a pid), calls killIfSpawned at once, while
 * Node still holds the failed spawn's handle, and again after its 'error'
 * event. It runs in a session (and so a process group) of its own all the
 * same.
 */
const NO_PID_SCRIPT = `
const { spawn } = require('node:child_process');
const { killIfSpawned } = require(${JSON.stringify(distPath('src/child-process.js'))});
const { fdLimit, openFdTable, setFdLimit } = require(${JSON.stringify(distPath('src/fd.js'))});
const out = process.stdout; // made now, while it can get what it needs
const [soft, hard] = fdLimit();
// RLIMIT_NOFILE bounds new fd numbers: at the lowest unused one, no new fd fits.
const open = openFdTable();
let limit = 0;
while (open.has(limit)) limit += 1;
setFdLimit(limit, hard);
const child = spawn(process.execPath, ['-e', '']);
// What reaches kill() is recorded, never sent: the pid it would signal
// is whatever the handle's memory holds, often one that does not exist.
const kills = [];
child.kill = (signal) => (kills.push(signal), true);
const result = { pid: child.pid === undefined ? 'none' : child.pid, beforeError: killIfSpawned(child, 'SIGKILL') };
child.once('error', (err) => {
  result.error = err.code;
  result.afterError = killIfSpawned(child, 'SIGKILL');
  result.kills = kills;
  setFdLimit(soft, hard);
  out.write(JSON.stringify(result));
});
`;

function runDetached(script: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

test('a ChildProcess whose spawn failed with EMFILE (no pid) is not signalled, before or after its error event', async () => {
  const run = await runDetached(NO_PID_SCRIPT);
  expect({ code: run.code, signal: run.signal, stderr: run.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
  expect(JSON.parse(run.stdout)).toEqual({ pid: 'none', beforeError: false, error: 'EMFILE', afterError: false, kills: [] });
});

test('a child whose exit was seen is not signalled (its pid may be another process now)', async () => {
  const child = spawn('true', [], { stdio: 'ignore' });
  await once(child, 'exit');
  const kill = jest.spyOn(child, 'kill');
  expect(killIfSpawned(child, 'SIGTERM')).toBe(false);
  expect(kill).not.toHaveBeenCalled();
});

test('a running child is signalled with the signal asked for (SIGKILL by default)', async () => {
  for (const signal of ['SIGTERM', 'SIGUSR1', undefined] as const) {
    const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
    try {
      await once(child, 'spawn');
      const exit = once(child, 'exit');
      expect(killIfSpawned(child, signal)).toBe(true);
      const [code, got] = (await exit) as [number | null, NodeJS.Signals | null];
      expect({ code, signal: got }).toEqual({ code: null, signal: signal ?? 'SIGKILL' });
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
  }
});
