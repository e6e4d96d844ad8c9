/**
 * `fdbridge run` with scenarios that block their thread (a readSync on a
 * pipe whose write end they hold), spin (a busy loop), or leave code
 * running that blocks the row process later: each such row fails at its
 * --timeout with its row process killed, names the fds that process had
 * opened and held, and the run goes on with the other rows in a new row
 * process; SIGINT and SIGTERM stop a run whose row blocks. Nothing is left:
 * no directory in the run's TMPDIR, no process the blocked row started.
 *
 * No step waits for a time: each waits for what the run prints, its exit,
 * or a process's exit (its pidfd); the runs end by their own deadlines
 * (--timeout, and the supervisor's UNRESPONSIVE_MS after it).
 */
import { spawn, type ChildProcess } from 'node:child_process';

import fc from 'fast-check';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { UNRESPONSIVE_MS } from '../../harness/run-supervisor';
import type { ResultRow, ResultsFile } from '../../harness/types';
import { distPath } from '../../src/paths';
import { childrenOf, CLI, exitOf, pidExit } from '../util/processes';

const INDEX = JSON.stringify(distPath('src/index.js'));

let dir: string;
const runs: ChildProcess[] = [];

/** A directory of scenario files (name -> the object literal's body after name and description). */
function scenarios(name: string, files: Record<string, string>): string {
  const d = join(dir, name);
  mkdirSync(d);
  for (const [scenario, body] of Object.entries(files)) {
    writeFileSync(
      join(d, `${scenario}.scenario.js`),
      `const { readSync, writeSync } = require('node:fs');
const fdbridge = require(${INDEX});
module.exports = { name: ${JSON.stringify(scenario)}, description: 'a test scenario', ${body} };
`,
    );
  }
  return d;
}

/** `fdbridge run ARGS` with a TMPDIR of its own; its stdout is collected. */
function startRun(args: string[]): { run: ChildProcess; tmp: string; out(): string; err(): string } {
  const tmp = mkdtempSync(join(dir, 'tmp-'));
  const run = spawn(process.execPath, [CLI, 'run', ...args], { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  runs.push(run);
  let out = '';
  let err = '';
  run.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  run.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return { run, tmp, out: () => out, err: () => err };
}

/**
 * startRun of the scenarios in `d` (no time limit that matters), resolved
 * once its row has printed `<scenario>: blocking in` (it blocks its thread
 * next), with the run's exit and its one row process.
 */
async function runUntilBlocked(d: string, scenario: string): Promise<ReturnType<typeof startRun> & { exited: ReturnType<typeof exitOf>; rowProcess: number }> {
  const started = startRun(['--scenarios', d, '--timeout', '600000']);
  const { run, out, err } = started;
  const exited = exitOf(run);
  await new Promise<void>((resolve, reject) => {
    run.stdout?.on('data', () => {
      if (out().includes(`${scenario}: blocking in`)) resolve();
    });
    void exited.then((h) => reject(new Error(`the run ended (${JSON.stringify(h)}) before its row blocked:\n${out()}\n${err()}`)));
  });
  const rowProcesses = childrenOf(run.pid as number);
  expect(rowProcesses).toHaveLength(1);
  return { ...started, exited, rowProcess: rowProcesses[0] as number };
}

/** Resolves once `pid` has exited (at once if it is gone already). */
async function gone(pid: number): Promise<void> {
  try {
    await pidExit(pid);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

function row(results: ResultsFile, scenario: string, transport: string): ResultRow {
  const r = results.results.find((x) => x.scenario === scenario && x.transport === transport);
  if (!r) throw new Error(`no row ${scenario}/${transport} in ${JSON.stringify(results.results.map((x) => `${x.scenario}/${x.transport}`))}`);
  return r;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-run-blocked-'));
});

afterAll(async () => {
  for (const run of runs) {
    if (run.exitCode === null && run.signalCode === null) {
      run.kill('SIGKILL');
      await exitOf(run);
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

test('rows that block or spin fail at --timeout with their row process killed; the other rows run; nothing is left', async () => {
  const d = scenarios('mixed', {
    'blocks-on-own-pipe': `transports: ['direct'],
      async run() {
        const [r] = fdbridge.makePipe(); // the write end is kept: no end of file
        readSync(r, Buffer.alloc(1));
      }`,
    'spins-with-command': `transports: ['child'],
      async run(ctx) {
        const conn = await ctx.connect(fdbridge.PROBE_COMMAND);
        const where = await conn.call('where');
        writeSync(1, 'spins-with-command: command pid ' + where.pid + '\\n');
        for (;;) {}
      }`,
    'blocks-briefly': `transports: ['direct'],
      async run() {
        // Less than the time limit: the row passes.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
      }`,
    'passes-after': `transports: ['direct', 'child'],
      async run(ctx) {
        const conn = await ctx.connect(fdbridge.PROBE_COMMAND);
        await conn.call('where');
        await conn.close();
      }`,
  });
  const { run, tmp, out, err } = startRun(['--scenarios', d, '--timeout', '10000', '--settle', '100', '--json', join(d, 'results.json')]);
  const how = await exitOf(run);
  expect({ how, err: err() }).toEqual({ how: { code: 1, signal: null }, err: '' });
  const results = JSON.parse(readFileSync(join(d, 'results.json'), 'utf8')) as ResultsFile;

  const blocked = row(results, 'blocks-on-own-pipe', 'direct');
  const killedPid = blocked.rowProcess?.pid as number;
  expect(blocked).toMatchObject({
    status: 'fail',
    leaks: [],
    error: `blocks-on-own-pipe on direct timed out after 10000 ms, and its thread did not return to its event loop within ${UNRESPONSIVE_MS} ms more (it blocks or spins: a synchronous read that waits for data, a busy loop, a deadlock): its row process (pid ${killedPid}) was killed`,
    rowProcess: { pid: expect.any(Number), ended: 'killed' },
  });
  // What it held: both ends of its pipe, opened during the row, named as such (not leaks: the kernel closed them).
  const held = blocked.rowProcess?.held ?? [];
  expect(held).toEqual([
    { pid: killedPid, role: 'client', fd: expect.any(Number), target: expect.stringMatching(/^pipe:\[\d+\]$/) },
    { pid: killedPid, role: 'client', fd: expect.any(Number), target: expect.stringMatching(/^pipe:\[\d+\]$/) },
  ]);
  expect(held[0]?.target).toBe(held[1]?.target);
  expect(blocked.notes).toEqual([`held when its process was killed (opened during the row; the kernel closed them with the process): ${held.map((l) => `fd ${l.fd} -> ${l.target}`).join('; ')}`]);

  const spun = row(results, 'spins-with-command', 'child');
  expect(spun).toMatchObject({
    status: 'fail',
    leaks: [],
    error: expect.stringMatching(/^spins-with-command on child timed out after 10000 ms, and its thread did not return to its event loop/),
    rowProcess: { ended: 'killed' },
  });
  expect(spun.rowProcess?.pid).not.toBe(killedPid);
  // The command process the spinning row started is gone with its row process.
  const command = /spins-with-command: command pid (\d+)/.exec(out());
  expect(command).not.toBeNull();
  await gone(Number(command?.[1]));

  for (const [scenario, transport] of [['blocks-briefly', 'direct'], ['passes-after', 'direct'], ['passes-after', 'child']] as const) {
    expect({ scenario, transport, status: row(results, scenario, transport).status }).toEqual({ scenario, transport, status: 'pass' });
  }
  expect(results.totals).toMatchObject({ failedRows: 2, leakedFds: 0 });
  expect(readdirSync(tmp)).toEqual([]);
}, 180_000);

test('code a row leaves running that blocks the row process before the next row begins: that row runs again in a new row process and passes', async () => {
  const d = scenarios('leaves', {
    'leaves-a-spin': `transports: ['direct'],
      async run() {
        // The next row's message spins this process before the harness sees it.
        process.prependListener('message', (m) => { if (m && m.type === 'row') for (;;) {} });
      }`,
  });
  const { run, tmp } = startRun(['--scenarios', d, '--repeat', '2', '--timeout', '2000', '--settle', '50', '--json', join(d, 'results.json')]);
  const how = await exitOf(run);
  expect(how).toEqual({ code: 0, signal: null });
  const results = JSON.parse(readFileSync(join(d, 'results.json'), 'utf8')) as ResultsFile;
  expect(results.results.map((r) => [r.iteration, r.status])).toEqual([
    [1, 'pass'],
    [2, 'pass'],
  ]);
  expect(results.results[1]?.notes).toEqual([
    expect.stringMatching(
      /^row process pid \d+ was killed before this row began: code an earlier row in it left running \(the last one: leaves-a-spin on direct\) blocked its thread; the row ran in a new one$/,
    ),
  ]);
  expect(readdirSync(tmp)).toEqual([]);
}, 120_000);

test.each([
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const)('%s while a row blocks its thread: the row process is killed, nothing is left, exit status %d', async (signal, status) => {
  const d = scenarios(`signal-${signal}`, {
    'blocks-until-stopped': `transports: ['direct'],
      async run(ctx) {
        const [r] = fdbridge.makePipe();
        writeSync(1, 'blocks-until-stopped: blocking in ' + ctx.tmpdir + '\\n');
        readSync(r, Buffer.alloc(1));
      }`,
  });
  const { run, tmp, err, exited, rowProcess } = await runUntilBlocked(d, 'blocks-until-stopped');
  const rowProcessExit = gone(rowProcess);
  run.kill(signal);
  expect({ how: await exited, err: err() }).toEqual({ how: { code: status, signal: null }, err: expect.stringContaining(`fdbridge run: ${signal}: stopping`) });
  await rowProcessExit;
  expect(readdirSync(tmp)).toEqual([]);
}, 120_000);

test('SIGKILL of the run while its row blocks: the row process ends itself (its own watch thread), with its daemon, and removes the directories', async () => {
  const d = scenarios('sigkill', {
    'blocks-with-daemon': `transports: ['helper'],
      async run(ctx) {
        const conn = await ctx.connect(fdbridge.PROBE_COMMAND);
        await conn.call('where');
        const [r] = fdbridge.makePipe();
        writeSync(1, 'blocks-with-daemon: blocking in ' + ctx.tmpdir + '\\n');
        readSync(r, Buffer.alloc(1));
      }`,
  });
  const { run, tmp, out, exited, rowProcess } = await runUntilBlocked(d, 'blocks-with-daemon');
  const daemon = /helper daemon: pid (\d+), socket (\S+)/.exec(out());
  expect(daemon).not.toBeNull();
  const ends = [gone(rowProcess), gone(Number(daemon?.[1]))];
  run.kill('SIGKILL');
  expect(await exited).toEqual({ code: null, signal: 'SIGKILL' });
  // No deadline here: a row process or daemon that outlives the run runs into the test's timeout.
  await Promise.all(ends);
  expect(readdirSync(tmp)).toEqual([]);
}, 120_000);

/** What a generated row does, and what its result must say. */
const KINDS = {
  passes: { body: 'async run() {}', check: (r: ResultRow): void => expect(r).toMatchObject({ status: 'pass' }) },
  throws: {
    body: "async run() { throw new Error('thrown on purpose'); }",
    check: (r: ResultRow): void => {
      expect(r).toMatchObject({ status: 'fail', error: 'Error: thrown on purpose' });
      expect(r.rowProcess).toBeUndefined();
    },
  },
  blocks: {
    body: 'async run() { const [r] = fdbridge.makePipe(); readSync(r, Buffer.alloc(1)); }',
    check: (r: ResultRow): void => {
      expect(r).toMatchObject({ status: 'fail', leaks: [], error: expect.stringContaining('timed out after 1500 ms, and its thread did not return'), rowProcess: { ended: 'killed' } });
      expect(r.rowProcess?.held.map((h) => h.target)).toEqual([expect.stringMatching(/^pipe:/), expect.stringMatching(/^pipe:/)]);
    },
  },
  spins: {
    body: 'async run() { for (;;) {} }',
    check: (r: ResultRow): void =>
      expect(r).toMatchObject({ status: 'fail', leaks: [], error: expect.stringContaining('timed out after 1500 ms, and its thread did not return'), rowProcess: { ended: 'killed', held: [] } }),
  },
  exits: {
    body: 'async run() { process.exit(3); }',
    check: (r: ResultRow): void => expect(r).toMatchObject({ status: 'fail', leaks: [], rowProcess: { ended: 'exited', code: 3, held: [] } }),
  },
} as const;

test('generated runs of rows that pass, throw, block, spin or exit, in any order: each row gets its own verdict, the exit status follows, nothing is left', async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom(...(Object.keys(KINDS) as Array<keyof typeof KINDS>)), { minLength: 1, maxLength: 4 }), fc.nat(1000), async (kinds, seed) => {
      const files: Record<string, string> = {};
      kinds.forEach((kind, i) => (files[`r${i}-${kind}`] = `transports: ['direct'], ${KINDS[kind].body}`));
      const d = scenarios(`generated-${n++}`, files);
      const { run, tmp, err } = startRun(['--scenarios', d, '--seed', String(seed), '--timeout', '1500', '--settle', '50', '--json', join(d, 'results.json')]);
      const how = await exitOf(run);
      const results = JSON.parse(readFileSync(join(d, 'results.json'), 'utf8')) as ResultsFile;
      // The rows' statuses first: a wrong exit status then shows which row and why.
      expect(results.results.map((r) => ({ row: r.scenario, status: r.status, error: r.error }))).toEqual(
        results.results.map((r) => ({ row: r.scenario, status: r.scenario.endsWith('-passes') ? 'pass' : 'fail', error: r.error })),
      );
      expect({ how, err: err() }).toEqual({ how: { code: kinds.every((k) => k === 'passes') ? 0 : 1, signal: null }, err: '' });
      expect(results.results).toHaveLength(kinds.length);
      kinds.forEach((kind, i) => KINDS[kind].check(row(results, `r${i}-${kind}`, 'direct')));
      expect(results.totals?.['failedRows']).toBe(kinds.filter((k) => k !== 'passes').length);
      expect(readdirSync(tmp)).toEqual([]);
    }),
    { numRuns: 3 },
  );
}, 300_000);
