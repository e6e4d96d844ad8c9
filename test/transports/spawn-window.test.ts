/**
 * spawnReapedAtTeardown's process is told from the thread's other new
 * children by a token entry in its environment (native/child_reaper.h,
 * SpawnWindow): the entry reaches the spawned process and nobody else (not
 * the caller's env object, not process.env), the command drops it for its
 * own children, and a worker terminated inside the window takes exactly
 * its process: a process another library starts there is never signalled,
 * whatever its environment, and one of them that has already exited is
 * reaped rather than left a zombie.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { killIfSpawned, spawnReapedAtTeardown, SPAWN_TOKEN_VARIABLE, waitForExit } from '../../src/child-process';
import { diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { DIST_SRC } from '../util/nobody';

/** A process's environment as the kernel shows it (the block set up at execve). */
function environOf(pid: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/**
 * environOf(pid) once its execve has set up the new environment. spawn()
 * returns when the exec's close-on-exec pipe closes, which the kernel does
 * before it has written the new program's environment: until then
 * /proc/PID/environ reads empty (on a loaded machine, long enough to be
 * seen). Every process spawned here has at least the token entry.
 */
async function execedEnvironOf(pid: number): Promise<Record<string, string>> {
  for (;;) {
    const env = environOf(pid);
    if (Object.keys(env).length > 0) return env;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

function runScript(script: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', script], (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
}

beforeAll(async () => {
  // The fds this process's loop opens with its first child process (the
  // SIGCHLD signal pipe), opened before any baseline is taken.
  const warm = spawn('/bin/true', [], { stdio: 'ignore' });
  await waitForExit(warm);
});

test('the spawned process gets the token entry in a copy of its environment; the caller’s env object and process.env stay as they were', async () => {
  const before = openFdTable();
  const tokens = new Set<string>();
  const key = fc.constantFrom('A', 'PATH', 'HOME', 'X_1', 'LANG', SPAWN_TOKEN_VARIABLE);
  const value = fc.string({ maxLength: 12 }).filter((v) => !v.includes('\0'));
  await fc.assert(
    fc.asyncProperty(fc.option(fc.dictionary(key, value), { nil: undefined }), async (env) => {
      const envBefore = env === undefined ? undefined : { ...env };
      const processEnvBefore = { ...process.env };
      const child = spawnReapedAtTeardown('/bin/sleep', ['600'], { stdio: 'ignore', ...(env !== undefined ? { env } : {}) });
      try {
        expect(env).toEqual(envBefore);
        expect(process.env).toEqual(processEnvBefore);
        const seen = await execedEnvironOf(child.pid as number);
        const token = seen[SPAWN_TOKEN_VARIABLE] ?? '';
        expect(token).toMatch(/^[0-9a-f]{32}$/);
        expect(tokens.has(token)).toBe(false);
        tokens.add(token);
        expect(seen).toEqual({ ...(env ?? process.env), [SPAWN_TOKEN_VARIABLE]: token });
      } finally {
        killIfSpawned(child);
        await waitForExit(child);
      }
    }),
    { numRuns: 12 },
  );
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});

test('a command process drops the token from its own environment: the programs it starts do not carry it, and the kernel still shows it for the command', async () => {
  const before = openFdTable();
  const script = `
    const { execFileSync } = require('node:child_process');
    require(${JSON.stringify(join(DIST_SRC, 'child-process.js'))}).dropSpawnToken();
    const own = process.env.${SPAWN_TOKEN_VARIABLE} ?? null;
    const inherited = execFileSync('/usr/bin/env', { encoding: 'utf8' }).includes('${SPAWN_TOKEN_VARIABLE}=');
    console.log(JSON.stringify({ own, inherited }));
    process.stdin.resume(); // waits for the test to read its environment`;
  const child = spawnReapedAtTeardown(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  const kernelSees = environOf(child.pid as number)[SPAWN_TOKEN_VARIABLE];
  child.stdin?.end();
  await waitForExit(child);
  expect({ ...JSON.parse(line), kernelSees: /^[0-9a-f]{32}$/.test(kernelSees ?? '') }).toEqual({ own: null, inherited: false, kernelSees: true });
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});

/**
 * A worker terminated inside its connection's spawn window while a
 * 'child_process' channel subscriber on its thread has started a process of
 * its own there. Where the worker is held and terminated:
 * - 'hook': right after fdbridge's spawn (the test hook
 *   afterCommandProcessSpawn), the subscriber's process already started;
 * - 'publish': inside the subscriber, after it started its process, as a
 *   tracing library's synchronous work would be, with no test hook: on
 *   Node 22 and 24 the channel publishes after the fork of the command's
 *   process (or the remote transport's via), on Node 20 before it.
 * The run waits for the reaper (reapsPending() 0) and tells the states of
 * the library's process and (held at 'hook') of the command's: 'alive'
 * (/proc's R, S or D: a process just spawned shows as running until it
 * sleeps, which on a loaded machine can be after the reaper is done), 'Z'
 * or 'gone'. In a process
 * of its own, which kills the library's process before it exits. 'exited':
 * the library's process has exited (a zombie: the held thread's loop cannot
 * reap it) before the worker is terminated.
 */
const SIDECARS: Record<string, string> = {
  // A tracing library's sidecar, with the environment it inherits.
  'inherited-env': `spawn('sleep', ['600'], { stdio: 'ignore' })`,
  'empty-env': `spawn('/bin/sleep', ['600'], { stdio: 'ignore', env: {} })`,
  'other-token': `spawn('/bin/sleep', ['600'], { stdio: 'ignore', env: { ...process.env, ${SPAWN_TOKEN_VARIABLE}: '0'.repeat(32) } })`,
  exited: `spawn('/bin/true', [], { stdio: 'ignore' })`,
};

const WINDOW_SCRIPT = (transport: string, held: 'hook' | 'publish', kind: string): string => {
  const worker = `
    const dc = require('node:diagnostics_channel');
    const { spawn } = require('node:child_process');
    const { parentPort } = require('node:worker_threads');
    const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
    const { afterCommandProcessSpawn } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    const hold = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    let started = false;
    let sidecar;
    dc.subscribe('child_process', () => {
      if (started) return;
      started = true; // its own spawn publishes too
      sidecar = ${SIDECARS[kind]};
      if (${JSON.stringify(held)} === 'publish') {
        parentPort.postMessage({ sidecar: sidecar.pid });
        hold();
      }
    });
    if (${JSON.stringify(held)} === 'hook') {
      afterCommandProcessSpawn((command) => {
        parentPort.postMessage({ sidecar: sidecar.pid, command });
        hold();
      });
    }
    connect(${JSON.stringify(transport)}, { command: LOG_COMMAND });`;
  return `
    const { readFileSync } = require('node:fs');
    const { Worker } = require('node:worker_threads');
    const { reapsPending } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
    const state = (pid) => { try { return /State:\\s+(\\S)/.exec(readFileSync('/proc/' + pid + '/status', 'utf8'))[1]; } catch { return 'gone'; } };
    const w = new Worker(${JSON.stringify(worker)}, { eval: true });
    w.once('message', ({ sidecar, command }) => {
      const terminate = async () => {
        if (${JSON.stringify(kind)} === 'exited' && state(sidecar) !== 'Z') return setTimeout(terminate, 10);
        await w.terminate();
        const poll = () => {
          if (reapsPending() > 0) return setTimeout(poll, 10);
          const life = (s) => (['R', 'S', 'D'].includes(s) ? 'alive' : s);
          console.log(JSON.stringify({ sidecar: life(state(sidecar)), ...(command === undefined ? {} : { command: state(command) }) }));
          try { process.kill(sidecar, 'SIGKILL'); } catch {}
        };
        poll();
      };
      terminate();
    });`;
};

test.each([
  ['child', 'hook', 'inherited-env', 'alive'],
  ['child', 'hook', 'empty-env', 'alive'],
  ['child', 'hook', 'other-token', 'alive'],
  ['child', 'hook', 'exited', 'gone'],
  ['child', 'publish', 'inherited-env', 'alive'],
  ['pidfd', 'publish', 'inherited-env', 'alive'],
  ['remote', 'publish', 'inherited-env', 'alive'],
] as const)(
  "%s, a worker terminated inside the spawn window (held at %s): a process a 'child_process' subscriber started there (%s) ends as %s; held at the hook, the command's process is reaped",
  async (transport, held, kind, sidecar) => {
    const before = openFdTable();
    const run = await runScript(WINDOW_SCRIPT(transport, held, kind));
    expect(run.status === 0 ? JSON.parse(run.stdout) : run).toEqual(held === 'hook' ? { sidecar, command: 'gone' } : { sidecar });
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  },
);
