/**
 * A process ended during a row by code an earlier row left running: the
 * row fails, naming the earlier row as possibly the cause, with it as the
 * suspect (its rerun command runs both rows), as a leaked or closed fd
 * does (late-callback-blame.test.ts). Through `fdbridge run` (row
 * processes). The earlier row, on helper, leaves a child process (ref'd,
 * or unref'd at the end of run()) whose exit callback ends a process: the
 * row process itself (process.exit(0)), or the run's helper daemon
 * (SIGKILL to ctx.helper.pid). The next row (on direct or child) makes that
 * child exit, and waits for the end (the daemon reaped). Or, with nothing left running, the
 * next row ends the process itself: it fails alone, no row named.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import fc from 'fast-check';

import { inRunOrder } from '../../harness/runner';
import type { ResultsFile } from '../../harness/types';
import type { TransportName as Transport } from '../../src/transports';
import { openFdTable } from '../../src/fd';
import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

const ACTS = ['process.exit(0)', 'SIGKILL the helper'] as const;
type Act = (typeof ACTS)[number];
const ACT_CODE: Record<Act, string> = {
  'process.exit(0)': 'process.exit(0);',
  'SIGKILL the helper': 'process.kill(state.helper, "SIGKILL");',
};
const LEFT = ['child', "child unref'd", 'nothing'] as const;
type Left = (typeof LEFT)[number];
/** How the next row's error names what the earlier row left. */
const LEFT_SHOWN: Record<Exclude<Left, 'nothing'>, string> = { child: 'ProcessWrap', "child unref'd": "PROCESSWRAP (unref'd)" };
/** The next row's error, before any hedge. */
const ERROR: Record<Act, RegExp> = {
  'process.exit(0)': /^the row process \(pid \d+\) exited during the row \(status 0\): the scenario ended it \(process\.exit\(\)\) or it crashed/,
  'SIGKILL the helper': /^the run's helper daemon \(pid \d+\) ended \(signal SIGKILL\) before its fds could be read again/,
};

/** The rows the rerun command `line` selects (run with --list). */
function listedBy(line: string, cwd: string): string[] {
  const out = execFileSync('sh', ['-c', `${line} --list`], { cwd, encoding: 'utf8', env: { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}` } });
  return out.split('\n').filter((l) => l !== '');
}

/** A seed running `leaves` on helper before `ends` on `transport`. */
function seedFor(transport: Transport): number {
  const rows = [
    { scenario: 'leaves', transport: 'helper' as Transport, iteration: 1 },
    { scenario: 'ends', transport, iteration: 1 },
  ];
  for (let seed = 1; ; seed++) if (inRunOrder(rows, seed)[0]?.scenario === 'leaves') return seed;
}

test("a process ended by a handle's callback an earlier row left: the row fails naming that row, and its rerun command runs both", async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-late-end-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ACTS), fc.constantFrom(...LEFT), fc.constantFrom<Transport>('direct', 'child'), async (act, left, transport) => {
        const scenarios = join(dir, `scenarios-${++runs}`);
        mkdirSync(scenarios);
        const STATE = "Symbol.for('fdbridge.test.late-end')";
        const leaves =
          left === 'nothing'
            ? `globalThis[${STATE}] = { helper: ctx.helper.pid };`
            : `const child = require('node:child_process').spawn('sleep', ['600'], { stdio: 'ignore' });
  const state = globalThis[${STATE}] = { helper: ctx.helper.pid, pid: child.pid, acted: false };
  child.once('exit', () => { ${ACT_CODE[act]} state.acted = true; });${left === "child unref'd" ? '\n  child.unref();' : ''}`;
        writeFileSync(
          join(scenarios, 'leaves.scenario.js'),
          `module.exports = { name: 'leaves', description: 'leaves a child whose exit ends a process', transports: ['helper'], async run(ctx) {
  ${leaves}
} };\n`,
        );
        writeFileSync(
          join(scenarios, 'ends.scenario.js'),
          `module.exports = { name: 'ends', description: 'makes the child leaves left exit, or ends the process itself, and waits', transports: [${JSON.stringify(transport)}], async run() {
  const state = globalThis[${STATE}];
  if (state.pid === undefined) { ${ACT_CODE[act]} state.acted = true; }
  else process.kill(state.pid, 'SIGTERM');
  while (!state.acted) await new Promise((r) => setTimeout(r, 10));
  // Until the daemon is reaped: the harness has seen it end.
  const alive = () => { try { process.kill(state.helper, 0); return true; } catch { return false; } };
  while (alive()) await new Promise((r) => setTimeout(r, 10));
} };\n`,
        );
        const json = join(scenarios, 'results.json');
        const r = await runCli(['run', '--seed', String(seedFor(transport)), '--settle', '100', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir });
        const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
        expect(results.map((x) => x.scenario)).toEqual(['leaves', 'ends']);
        const [earlier, next] = results;
        expect(earlier).toMatchObject({ status: 'pass', leaks: [] });
        expect(next?.status).toBe('fail');
        expect(next?.error).toMatch(ERROR[act]);
        expect(r.code).toBe(1);
        const lines = (r.stdout.split('to rerun a failed row:\n')[1] ?? '').split('\n').filter((l) => l.startsWith('  '));
        if (left === 'nothing') {
          expect(next?.suspect).toBeUndefined();
          expect(next?.error).not.toContain('possibly');
          expect(listedBy((lines[0] as string).trim(), dir)).toEqual([`ends ${transport}`]);
        } else {
          expect(next?.suspect).toEqual({ scenario: 'leaves', transport: 'helper', iteration: 1 });
          expect(next?.error).toContain(`possibly ended by an earlier row's code: leaves on helper ran before it in this row process and left running ${LEFT_SHOWN[left]}, `);
          expect(listedBy((lines[0] as string).trim(), dir)).toEqual(['leaves helper', `ends ${transport}`]);
        }
      }),
      {
        numRuns: 8,
        endOnFailure: true,
        examples: [
          ['process.exit(0)', 'child', 'direct'],
          ['SIGKILL the helper', 'child', 'child'],
          ['SIGKILL the helper', 'nothing', 'direct'],
        ],
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
