/**
 * A scenario that leaves a detached grandchild holding the row process's
 * channel to the run (fd 3, given to it explicitly): once the rows are done
 * and the row process has exited, the run lets go of its end of the
 * channel and ends, where it waited for the grandchild before; the last
 * row of that process names the holder in a note. Generated over how many
 * rows run and which of them leaves the grandchild.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { runScenarios } from '../../harness/runner';
import type { ResultRow } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { distPath } from '../../src/paths';
import { warmRuntimeFds } from '../../src/runtime-fds';
import { scaled } from '../util/time-scale';

jest.setTimeout(scaled(600_000));

let dir: string;
let dirs = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-row-channel-'));
  warmRuntimeFds();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Scenarios row-1..n on direct; row-`leaver` spawns a detached `sleep` given fd 3 and writes its pid to `pidFile`. */
function scenarioDir(rows: number, leaver: number): { dir: string; pidFile: string } {
  const d = join(dir, `s${++dirs}`);
  mkdirSync(d);
  const pidFile = join(d, 'grandchild.pid');
  for (let i = 1; i <= rows; i++) {
    const body =
      i === leaver
        ? `const c = require('node:child_process').spawn('sh', ['-c', 'sleep 1000 & echo $! > ${pidFile}; exit 0'], { stdio: ['ignore', 'ignore', 'ignore', 3], detached: true });\n` +
          `  await new Promise((r) => c.on('exit', r));`
        : '';
    writeFileSync(join(d, `row-${i}.scenario.js`), `module.exports = { name: 'row-${i}', description: 'x', transports: ['direct'], async run() {\n  ${body}\n} };\n`);
  }
  return { dir: d, pidFile };
}

/** How many rows run (1-3), and which of them leaves the grandchild. */
const rowsAndLeaver = fc.integer({ min: 1, max: 3 }).chain((rows) => fc.tuple(fc.constant(rows), fc.integer({ min: 1, max: rows })));

/** The run's results, or an error once `ms` pass (the run waits on the grandchild). */
async function runOrHang(scenariosDir: string, seed: number, ms: number): Promise<ResultRow[]> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const run = runScenarios({ bench: false, repeat: 1, seed, settleMs: 200, timeoutMs: scaled(60_000), scenariosDir, transports: ['direct'] });
    const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the run did not end within ${ms} ms`)), ms)));
    return (await Promise.race([run, hang])).results.results;
  } finally {
    clearTimeout(timer);
  }
}

test('a grandchild holding the row channel does not keep the run from ending; the last row names it', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(
      rowsAndLeaver,
      fc.integer({ min: 1, max: 1000 }),
      async ([rows, leaver], seed) => {
        const s = scenarioDir(rows, leaver);
        let grandchild: number | undefined;
        try {
          const results = await runOrHang(s.dir, seed, scaled(120_000));
          grandchild = Number(readFileSync(s.pidFile, 'utf8'));
          expect(results.map((r) => r.status)).toEqual(Array.from({ length: rows }, () => 'pass'));
          const noted = results.map((r) => (r.notes ?? []).filter((n) => n.includes('still held its channel to the run')));
          // The last row run (one row process ran them all) carries the note, naming the grandchild.
          expect(noted.slice(0, -1).flat()).toEqual([]);
          expect(noted[noted.length - 1]).toEqual([expect.stringContaining(`pid ${grandchild} (sleep) still held its channel to the run (fd 3)`)]);
        } finally {
          grandchild ??= Number(readFileSync(s.pidFile, 'utf8'));
          process.kill(grandchild, 'SIGKILL');
        }
      },
    ),
    // A run that hangs waits out its guard: one is enough to fail, with no shrinking after it.
    { numRuns: 4, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
});

/** `fdbridge run` on `scenariosDir` (direct): its exit status, or 'still running' once `ms` pass (then it is killed). */
function cliRun(scenariosDir: string, seed: number, ms: number): Promise<number | null | 'still running'> {
  const child = spawn(process.execPath, [distPath('harness/cli.js'), 'run', '--scenarios', scenariosDir, '--transport', 'direct', '--seed', String(seed)], { stdio: 'ignore' });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve('still running');
    }, ms);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

test('fdbridge run ends (exit 0) with a grandchild holding the row channel', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(
      rowsAndLeaver,
      fc.integer({ min: 1, max: 1000 }),
      async ([rows, leaver], seed) => {
        const s = scenarioDir(rows, leaver);
        try {
          expect(await cliRun(s.dir, seed, scaled(120_000))).toBe(0);
        } finally {
          process.kill(Number(readFileSync(s.pidFile, 'utf8')), 'SIGKILL');
        }
      },
    ),
    { numRuns: 3, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
});
