/**
 * A command's process (child, pidfd) or the run's helper daemon that ends
 * during a row, before the oracle could read its fds again: that row fails
 * with the end named (how: its exit code or signal), and a leak a read
 * of the command's process after an earlier call saw is reported as seen
 * then; the rows around it
 * (an innocent helper row after it, whichever order the seed gives) get
 * neither the failure nor a note about it. A scenario that declares such
 * an end (Scenario.ends) passes, the end noted.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { runScenarios } from '../../harness/runner';
import type { ResultRow } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { warmRuntimeFds } from '../../src/runtime-fds';
import type { TransportName } from '../../src/transports';
import { rowsTestLimit, scaled } from '../util/time-scale';

/** Each row's time limit (a hang guard: no row here waits on anything that does not come). */
const ROW_MS = 30_000;

const TRANSPORTS = ['child', 'pidfd', 'helper'] as const satisfies readonly TransportName[];
type How = { kind: 'exit'; code: number } | { kind: 'signal'; signal: 'SIGKILL' | 'SIGTERM' } | { kind: 'crash' };

let dir: string;
let dirs = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-dead-peer-'));
  warmRuntimeFds();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** JS, run in the command's process, that ends it as `how` says, at once. */
function ending(how: How): string {
  switch (how.kind) {
    case 'exit':
      return `process.exit(${how.code});`;
    case 'signal':
      return `process.kill(process.pid, '${how.signal}');`;
    case 'crash':
      // Thrown outside the call, before its reply is sent: nothing of fdbridge's catches it.
      return `queueMicrotask(() => { throw new Error('the command crashed'); });`;
  }
}

/**
 * A scenario directory: a command that can leak `file` and end its
 * process; `victim`, which (leaking first, or not) ends it; and innocent
 * scenarios `calm-1..n` that call it and close.
 */
function scenarioDir(how: How, leakFirst: boolean, declared: boolean, innocents: number): { dir: string; file: string } {
  const d = join(dir, `s${++dirs}`);
  mkdirSync(d);
  const file = join(d, 'leaked-by-command');
  writeFileSync(file, 'x');
  writeFileSync(
    join(d, 'command.js'),
    `const fs = require('node:fs');\nclass Ending {\n  constructor(context) { this.context = context; }\n` +
      `  leak() { fs.openSync(${JSON.stringify(file)}, 'r'); }\n  ping() { return 'pong'; }\n  end() { ${ending(how)} }\n  close() {}\n}\nmodule.exports = { Ending };\n`,
  );
  const command = `const C = { name: 'ending', module: require('node:path').join(__dirname, 'command.js'), export: 'Ending' };\n`;
  writeFileSync(
    join(d, 'victim.scenario.js'),
    `${command}module.exports = { name: 'victim', description: 'x', commands: [C], ${declared ? "ends: ['command', 'helper'], " : ''}async run(ctx) {\n` +
      `  const c = await ctx.connect(C);\n  ${leakFirst ? "await c.call('leak');" : "await c.call('ping');"}\n` +
      `  await c.call('end').catch(() => undefined);\n  await c.close().catch(() => undefined);\n} };\n`,
  );
  for (let i = 1; i <= innocents; i++) {
    writeFileSync(
      join(d, `calm-${i}.scenario.js`),
      `${command}module.exports = { name: 'calm-${i}', description: 'x', commands: [C], async run(ctx) { const c = await ctx.connect(C); await c.call('ping'); await c.close(); } };\n`,
    );
  }
  return { dir: d, file };
}

async function run(scenariosDir: string, transports: TransportName[], seed: number): Promise<ResultRow[]> {
  const { results } = await runScenarios({ bench: false, repeat: 1, seed, settleMs: 200, timeoutMs: scaled(ROW_MS), scenariosDir, transports, isolation: 'none' });
  return results.results;
}

/** How the row must name the end on `transport`. */
function howText(how: How, transport: string): RegExp {
  switch (how.kind) {
    case 'exit':
      return new RegExp(`^exit code ${how.code}$`);
    case 'signal':
      // The helper daemon ends on SIGTERM as asked: it stops listening and exits 0.
      return transport === 'helper' && how.signal === 'SIGTERM' ? /^exit code 0$/ : new RegExp(`^signal ${how.signal}$`);
    case 'crash':
      return /^exit code [1-9]\d*$/;
  }
}

const hows: fc.Arbitrary<How> = fc.oneof(
  fc.integer({ min: 0, max: 120 }).map((code): How => ({ kind: 'exit', code })),
  fc.constantFrom('SIGKILL', 'SIGTERM').map((signal): How => ({ kind: 'signal', signal })),
  fc.constant<How>({ kind: 'crash' }),
);

test('a command process or helper daemon ending mid-row fails that row, names how, and no other row', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(
      hows,
      fc.boolean(),
      fc.subarray([...TRANSPORTS], { minLength: 1 }),
      fc.integer({ min: 0, max: 2 }),
      fc.integer({ min: 1, max: 1000 }),
      async (how, leakFirst, transports, innocents, seed) => {
        const s = scenarioDir(how, leakFirst, false, innocents);
        const rows = await run(s.dir, transports, seed);
        expect(rows).toHaveLength(transports.length * (1 + innocents));
        for (const row of rows) {
          if (row.scenario !== 'victim') {
            // Innocent, before or after it: nothing of the victim's end.
            expect({ row: `${row.scenario}/${row.transport}`, status: row.status, ended: row.ended, notes: (row.notes ?? []).filter((n) => /helper daemon|ended/.test(n)) }).toEqual({
              row: `${row.scenario}/${row.transport}`,
              status: 'pass',
              ended: undefined,
              notes: [],
            });
            continue;
          }
          expect(row.status).toBe('fail');
          expect(row.ended).toEqual([
            {
              pid: expect.any(Number),
              role: row.transport === 'helper' ? 'helper' : 'child',
              what: row.transport === 'helper' ? "the run's helper daemon" : `the ${row.transport} command's process`,
              how: expect.stringMatching(howText(how, row.transport)),
              // The daemon's table is not read per call (it holds every connection's fds): nothing to go on.
              lastRead: row.transport === 'helper' ? 'none' : leakFirst ? 'leaks' : 'clean',
            },
          ]);
          expect(row.error).toContain('before its fds could be read again: its leaks cannot be checked');
          // The leak the read after leak() saw; nothing else blamed.
          expect(row.leaks.map((l) => ({ target: l.target, seenAt: l.seenAt }))).toEqual(
            leakFirst && row.transport !== 'helper' ? [{ target: s.file, seenAt: 'its read after call leak() settled, before its process ended' }] : [],
          );
        }
      },
    ),
    { numRuns: 6, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
  // 3 transports x (the victim + 2 calm rows).
}, rowsTestLimit({ rowMs: ROW_MS, rows: 9, runs: 6 }));

test('a scenario that declares the end (ends) passes, the end noted', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(hows, fc.subarray([...TRANSPORTS], { minLength: 1 }), fc.integer({ min: 1, max: 1000 }), async (how, transports, seed) => {
      const s = scenarioDir(how, false, true, 1);
      const rows = await run(s.dir, transports, seed);
      for (const row of rows) {
        expect({ row: `${row.scenario}/${row.transport}`, status: row.status }).toEqual({ row: `${row.scenario}/${row.transport}`, status: 'pass' });
        if (row.scenario !== 'victim') continue;
        expect(row.ended).toEqual([expect.objectContaining({ declared: true, how: expect.stringMatching(howText(how, row.transport)) })]);
        expect(row.notes).toEqual(expect.arrayContaining([expect.stringContaining('as the scenario declares (ends)')]));
      }
    }),
    { numRuns: 3, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
  // 3 transports x (the victim + 1 calm row).
}, rowsTestLimit({ rowMs: ROW_MS, rows: 6, runs: 3 }));
