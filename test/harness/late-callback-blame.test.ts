/**
 * A row's code that acts after its row ended (a timer it left, ref'd or
 * unref'd, that closes fd 0 or opens a file and keeps it) is that row's,
 * never the row that happens to run next: the next row passes, the row
 * whose code it is fails, and the printed rerun command names it alone.
 *
 * Generated: 1 to 4 innocent rows and one guilty row, in the order of a
 * generated seed (the guilty row anywhere, last included), all on direct
 * and so in one row process. The guilty row's run() returns at once,
 * leaving a chain of timers (setTimeout, ref'd or unref'd, or
 * setImmediate; or one unref'd setInterval) whose last callback acts:
 * - 'when a later row runs': the chain re-arms itself until an innocent
 *   row's run() has begun after the guilty row's (each sets a mark), then
 *   acts. Without the harness's wait for a row's callbacks, that is during
 *   a later row, which then failed for it (closed fd 0, or leaked), or,
 *   with the guilty row last, never (the guilty row passed). With it, no
 *   later row begins while the chain is pending: the guilty row's time
 *   limit comes first, its callbacks are cancelled and it fails naming
 *   them; the act never happens.
 * - 'after N turns': the chain acts after N callbacks, whenever the loop
 *   runs them: the guilty row's own look sees what it did, and nothing
 *   was left to cancel (an interval that cleared itself, fs.open's and
 *   fs.close's requests included).
 * The act: closeSync(0) or fs.close(0) (the row process's stdin, /dev/null),
 * or openSync / fs.open of the guilty scenario's own file, never closed.
 * Each printed rerun command is run by `sh` with --list added: it must
 * select the guilty row alone.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

import fc from 'fast-check';

import type { ResultsFile } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { runCli } from '../util/processes';
import { seedWith } from '../util/row-process-runs';
import { scaled } from '../util/time-scale';

/** The time limit of a row: where the 'when a later row runs' chain is cancelled (no later row can begin before). */
const ROW_LIMIT_MS = scaled(3000);

const ACTS = ['closeSync(0)', 'close(0)', 'openSync', 'open'] as const;
type Act = (typeof ACTS)[number];
const TIMERS = ['setTimeout', "setTimeout unref'd", 'setImmediate', "setInterval unref'd"] as const;
type Timer = (typeof TIMERS)[number];

interface Guilty {
  act: Act;
  timer: Timer;
  when: { kind: 'later row' } | { kind: 'turns'; turns: number };
}

const guiltyCase: fc.Arbitrary<Guilty> = fc.record({
  act: fc.constantFrom(...ACTS),
  timer: fc.constantFrom(...TIMERS),
  when: fc.oneof(fc.constant({ kind: 'later row' as const }), fc.integer({ min: 1, max: 5 }).map((turns) => ({ kind: 'turns' as const, turns }))),
});

/** The mark innocent rows set as they begin (the guilty row clears it as it begins). */
const MARK = "Symbol.for('fdbridge.test.late-callback-blame')";

const ACT_CODE: Record<Act, string> = {
  'closeSync(0)': "require('node:fs').closeSync(0);",
  'close(0)': "require('node:fs').close(0, () => undefined);",
  openSync: "require('node:fs').openSync(__filename, 'r');",
  open: "require('node:fs').open(__filename, 'r', () => undefined);",
};

function schedule(timer: Timer, fn: string): string {
  if (timer === 'setImmediate') return `setImmediate(${fn});`;
  return `setTimeout(${fn}, 5)${timer === 'setTimeout' ? '' : '.unref()'};`;
}

function guiltySource(g: Guilty): string {
  const due = g.when.kind === 'later row' ? `globalThis[${MARK}] === true` : `++turns === ${g.when.turns}`;
  if (g.timer === "setInterval unref'd") {
    // One timer, run again and again until it acts and clears itself.
    return `let turns = 0;
let interval;
function step() {
  if (${due}) { clearInterval(interval); ${ACT_CODE[g.act]} }
}
module.exports = { name: 'guilty', description: 'leaves an interval that acts later', transports: ['direct'], async run() {
  globalThis[${MARK}] = false;
  interval = setInterval(step, 5).unref();
} };
`;
  }
  return `let turns = 0;
function step() {
  if (${due}) { ${ACT_CODE[g.act]} return; }
  ${schedule(g.timer, 'step')}
}
module.exports = { name: 'guilty', description: 'leaves a timer that acts later', transports: ['direct'], async run() {
  globalThis[${MARK}] = false;
  ${schedule(g.timer, 'step')}
} };
`;
}

const INNOCENT = `module.exports = (name) => ({ name, description: 'does nothing wrong', transports: ['direct'], async run() { globalThis[${MARK}] = true; } });\n`;

/** The rows the printed command `line` selects, run by `sh` in `cwd` with --list added. */
function listedBy(line: string, cwd: string): string[] {
  const out = execFileSync('sh', ['-c', `${line} --list`], { cwd, encoding: 'utf8', env: { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}` } });
  return out.split('\n').filter((l) => l !== '');
}

test("generated rows, one leaving a timer that closes fd 0 or leaks after its row: that row fails and is the one the rerun command names; the others pass", async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-late-blame-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(guiltyCase, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 1_000_000 }), async (g, innocents, seed) => {
        const scenarios = join(dir, `scenarios-${++runs}`);
        mkdirSync(scenarios);
        const guiltyFile = join(scenarios, 'guilty.scenario.js');
        writeFileSync(guiltyFile, guiltySource(g));
        writeFileSync(join(scenarios, 'innocent.js'), INNOCENT);
        const names = Array.from({ length: innocents }, (_, i) => `innocent-${i}`);
        for (const name of names) writeFileSync(join(scenarios, `${name}.scenario.js`), `module.exports = require('./innocent.js')(${JSON.stringify(name)});\n`);
        const json = join(scenarios, 'results.json');
        const r = await runCli(['run', '--seed', String(seed), '--transport', 'direct', '--settle', '100', '--timeout', String(ROW_LIMIT_MS), '--scenarios', scenarios, '--json', json], { cwd: dir });
        const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
        expect(results.map((x) => x.scenario).sort()).toEqual(['guilty', ...names].sort());
        for (const name of names) expect({ name, row: results.find((x) => x.scenario === name) }).toMatchObject({ name, row: { status: 'pass', leaks: [] } });
        const guilty = results.find((x) => x.scenario === 'guilty');
        expect(guilty?.status).toBe('fail');
        expect(guilty?.suspect).toBeUndefined();
        if (g.when.kind === 'later row') {
          const kind = g.timer === 'setImmediate' ? 'an Immediate' : `a Timeout${g.timer === 'setTimeout' ? '' : " (unref'd)"}`;
          expect(guilty?.error).toContain(`left 1 callback(s) it scheduled pending after run() ended, not run within its time limit (${ROW_LIMIT_MS} ms): ${kind}, scheduled at `);
          expect(guilty?.error).toContain(`${guiltyFile}:`);
          expect(guilty?.leaks).toEqual([]);
          expect(guilty?.closed).toBeUndefined();
        } else {
          if (g.act === 'openSync' || g.act === 'open') {
            expect(guilty).toMatchObject({ leaks: [{ role: 'client', target: guiltyFile }], error: expect.stringContaining('undeclared leak of 1 fd(s)') });
          } else {
            expect(guilty).toMatchObject({ leaks: [], closed: [{ role: 'client', fd: 0, target: '/dev/null' }] });
          }
          // Its callbacks (the fs request of fs.open and fs.close too) all ran: nothing was left to cancel.
          expect(guilty?.error).not.toContain('left ');
        }
        expect(r.code).toBe(1);
        const lines = (r.stdout.split('to rerun a failed row:\n')[1] ?? '').split('\n').filter((l) => l.startsWith('  '));
        expect(lines).toHaveLength(1);
        expect(listedBy((lines[0] as string).trim(), dir)).toEqual(['guilty direct']);
      }),
      {
        numRuns: 6,
        endOnFailure: true,
        // An unref'd timer closing fd 0 once a later row runs (the defect as reported), one leaking with the guilty row
        // first, an interval, and fs.close's request after a few turns.
        examples: [
          [{ act: 'closeSync(0)', timer: "setTimeout unref'd", when: { kind: 'later row' } }, 2, 1],
          [{ act: 'openSync', timer: 'setTimeout', when: { kind: 'later row' } }, 1, 2],
          [{ act: 'openSync', timer: "setInterval unref'd", when: { kind: 'turns', turns: 3 } }, 2, 3],
          [{ act: 'close(0)', timer: 'setImmediate', when: { kind: 'turns', turns: 2 } }, 1, 4],
        ],
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(600_000));

/**
 * What the harness does not wait for, a handle a row left (a child process
 * whose exit callback acts, ref'd or unref'd, or a signal listener), can
 * still act during the next row. A close leaves no record of who made it,
 * and a leak without --track-fds none either: the row it appeared in
 * fails, but says it is possibly the earlier row's (which left the handle
 * running: a ref'd one as process.getActiveResourcesInfo() lists it, an
 * unref'd one, which that does not list, as the earlier row's code opened
 * it), and its rerun command runs that row too, before it, as the run did.
 * The earlier row also opens and closes 1,200 watchers (fs.watch) before
 * it returns (its child unref'd only then), of which it has the first 600
 * collected before the row's list of handles is pruned (every 1,024
 * handles), and the last 100 before it ends, and keeps the others' handles:
 * closed, none is named, and the handle it left is still named.
 */
const LEFT = ['child', "child unref'd", 'signal listener'] as const;
type Left = (typeof LEFT)[number];
/** How the next row's error names what the earlier row left running. */
const LEFT_SHOWN: Record<Left, string> = { child: 'ProcessWrap', "child unref'd": "PROCESSWRAP \\(unref'd\\)", 'signal listener': "SIGNALWRAP \\(unref'd\\)" };

test("a handle's callback acting during the next row: that row's failure names the earlier row, and its rerun command runs both", async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-late-handle-'));
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<Act>('closeSync(0)', 'openSync'), fc.constantFrom(...LEFT), async (act, left) => {
        const scenarios = join(dir, `scenarios-${++runs}`);
        mkdirSync(scenarios);
        const leaves = join(scenarios, 'leaves-handle.scenario.js');
        const STATE = "Symbol.for('fdbridge.test.late-handle')";
        const opens =
          left === 'signal listener'
            ? `globalThis[${STATE}] = { acted: false };
  process.once('SIGUSR2', () => { ${ACT_CODE[act]} globalThis[${STATE}].acted = true; });`
            : `const child = require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  globalThis[${STATE}] = { pid: child.pid, acted: false };
  child.once('exit', () => { ${ACT_CODE[act]} globalThis[${STATE}].acted = true; });`;
        writeFileSync(
          leaves,
          `const fs = require('node:fs');
require('node:v8').setFlagsFromString('--expose-gc');
const gc = require('node:vm').runInNewContext('gc');
/** Their handles, closed, kept from collection. */
globalThis[Symbol.for('fdbridge.test.closed-watchers')] = [];
/** Opens and closes n watchers, lets their closes complete, and collects them unless told to keep their handles. */
async function watchers(n, keep) {
  for (let i = 0; i < n; i++) {
    const w = fs.watch(__filename);
    if (keep) globalThis[Symbol.for('fdbridge.test.closed-watchers')].push(w._handle);
    w.close();
  }
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  gc();
}
module.exports = { name: 'leaves-handle', description: 'leaves a handle whose callback acts', transports: ['direct'], async run() {
  ${opens}
  await watchers(600, false);
  await watchers(500, true);
  await watchers(100, false);${left === "child unref'd" ? '\n  child.unref();' : ''}
} };\n`,
        );
        writeFileSync(
          join(scenarios, 'ends-handle.scenario.js'),
          `module.exports = { name: 'ends-handle', description: 'makes the handle leaves-handle left call back, and waits for it', transports: ['direct'], async run() {
  const state = globalThis[${STATE}];
  if (state === undefined) return;
  process.kill(state.pid ?? process.pid, state.pid === undefined ? 'SIGUSR2' : 'SIGTERM');
  while (!state.acted) await new Promise((r) => setTimeout(r, 10));
} };\n`,
        );
        const json = join(scenarios, 'results.json');
        const seed = seedWith('leaves-handle', 'ends-handle');
        const r = await runCli(['run', '--seed', String(seed), '--transport', 'direct', '--settle', '100', '--timeout', String(scaled(30_000)), '--scenarios', scenarios, '--json', json], { cwd: dir });
        const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
        expect(results.map((x) => x.scenario)).toEqual(['leaves-handle', 'ends-handle']);
        const [earlier, next] = results;
        expect(earlier).toMatchObject({ status: 'pass', leaks: [] });
        expect(next).toMatchObject({ status: 'fail', suspect: { scenario: 'leaves-handle', transport: 'direct', iteration: 1 } });
        const named = `leaves-handle on direct ran before it in this row process and left running [^)]*${LEFT_SHOWN[left]}`;
        // What it left, as named: the unref'd handle it left (none of the watchers it closed, nor its ref'd child again),
        // and what process.getActiveResourcesInfo() lists ('ProcessWrap', '2 Timeout').
        const list = /left running (.*?), whose callbacks may/.exec(next?.error ?? '')?.[1]?.split(', ') ?? [];
        expect(list.filter((x) => !/^(\d+ )?[A-Z][A-Za-z]*$/.test(x))).toEqual(left === 'child' ? [] : [LEFT_SHOWN[left].replace(/\\/g, '')]);
        if (act === 'closeSync(0)') {
          expect(next).toMatchObject({ closed: [{ role: 'client', fd: 0, target: '/dev/null' }] });
          expect(next?.error).toMatch(new RegExp(`\\(fd 0 \\(client\\): possibly closed by an earlier row's code: ${named}`));
        } else {
          expect(next).toMatchObject({ leaks: [{ role: 'client', target: leaves }] });
          expect(next?.error).toMatch(new RegExp(`possibly an earlier row's: ${named}`));
        }
        expect(r.code).toBe(1);
        const lines = (r.stdout.split('to rerun a failed row:\n')[1] ?? '').split('\n').filter((l) => l.startsWith('  '));
        expect(lines).toEqual([expect.stringContaining('--scenario-name leaves-handle --scenario-name ends-handle --transport direct'), '    (with leaves-handle on direct, which ran before it and may have failed it: see its error)']);
        expect(listedBy((lines[0] as string).trim(), dir)).toEqual(['leaves-handle direct', 'ends-handle direct']);
      }),
      {
        numRuns: 6,
        endOnFailure: true,
        examples: [
          ['closeSync(0)', 'child'],
          ['openSync', "child unref'd"],
          ['closeSync(0)', 'signal listener'],
        ],
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(300_000));
