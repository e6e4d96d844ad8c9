/**
 * What an earlier row "left running" (the hedge on the next row's failure,
 * and its suspect) is what that row's own code made, not what the process
 * running the rows made meanwhile: a test framework's timer, a child of
 * the test process's, started while a row ran (in an async context
 * that is not the row's, as jest's own timers are), is no row's. Rows run in
 * this process (isolation 'none'), on direct. The first row leaves a thing
 * of the generated kind (a timer only from the test process's: the row's
 * own is waited for), either from its own code or from the test
 * process's context (an AsyncResource made here, outside every row); the
 * second row leaks an fd, which fails it. The earlier row is named, and is
 * the suspect, exactly when the thing is its own.
 */
import { AsyncResource } from 'node:async_hooks';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';

import { runScenarios } from '../../harness/runner';
import type { ResultRow } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { scaled } from '../util/time-scale';

/** What is left: a timer, or a child process (holding no fd: stdio ignored). */
type Kind = 'timer' | 'child';

/** What the rows call: leave(kind) as the first row, and which row of the run the caller is. */
interface Hooks {
  /** Makes a thing of the kind; `outside`: in the test process's own async context, not the calling row's. */
  leave(kind: Kind, outside: boolean): void;
  /** 1 for the first row to call it, 2 for the second. */
  turn(): number;
}
const HOOKS = Symbol.for('fdbridge.test.left-running-own');

test("the next row's failure names an earlier row's leftovers only when that row's code made them, not the test process's", async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-left-own-'));
  const scenarios = join(dir, 'scenarios');
  mkdirSync(scenarios);
  const leaked = join(dir, 'leaked');
  writeFileSync(leaked, '');
  // Both rows run the same code: the first to run leaves the thing, the second leaks an fd (whichever order the seed gives).
  for (const name of ['row-a', 'row-b']) {
    writeFileSync(
      join(scenarios, `${name}.scenario.js`),
      `const fs = require('node:fs');
module.exports = { name: '${name}', description: 'x', transports: ['direct'], async run() {
  const hooks = globalThis[Symbol.for('fdbridge.test.left-running-own')];
  if (hooks.turn() === 1) hooks.leave(hooks.kind, hooks.outside);
  else fs.openSync(${JSON.stringify(leaked)}, 'r');
} };\n`,
    );
  }
  // Made here, outside every row: what runs in its scope is the test process's, as jest's timers are.
  const outsideScope = new AsyncResource('FDBRIDGE_TEST_OUTSIDE');
  let timer: NodeJS.Timeout | undefined;
  let child: ChildProcess | undefined;
  const make = (kind: Kind): void => {
    if (kind === 'timer') timer = setTimeout(() => undefined, 600_000);
    else child = spawn('sleep', ['600'], { stdio: 'ignore' });
  };
  const cleanUp = async (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    if (child !== undefined) {
      const c = child;
      child = undefined;
      if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r).kill('SIGKILL'));
    }
  };
  try {
    await fc.assert(
      // A row's own timer is not left running (the row waits for it, or cancels it, before it ends): one comes only from
      // the test process.
      fc.asyncProperty(fc.constantFrom<[Kind, boolean]>(['timer', true], ['child', true], ['child', false]), fc.integer({ min: 1, max: 1000 }), async ([kind, outside], seed) => {
        let turns = 0;
        (globalThis as unknown as Record<symbol, Hooks & { kind: Kind; outside: boolean }>)[HOOKS] = {
          kind,
          outside,
          turn: () => ++turns,
          leave: (k, out) => (out ? outsideScope.runInAsyncScope(() => make(k)) : make(k)),
        };
        let results: ResultRow[] = [];
        try {
          ({
            results: { results },
          } = await runScenarios({ bench: false, repeat: 1, seed, settleMs: 50, timeoutMs: scaled(20_000), scenariosDir: scenarios, transports: ['direct'], isolation: 'none' }));
        } finally {
          await cleanUp();
          for (const l of results.flatMap((r) => r.leaks)) {
            if (l.pid === process.pid && readlinkSync(`/proc/self/fd/${l.fd}`) === leaked) closeSync(l.fd);
          }
        }
        const [first, second] = results;
        expect(first).toMatchObject({ status: 'pass', leaks: [] });
        expect(second).toMatchObject({ status: 'fail', leaks: [{ role: 'client', target: leaked }] });
        if (outside) {
          expect(second?.suspect).toBeUndefined();
          expect(second?.error).not.toContain("possibly an earlier row's");
        } else {
          expect(second?.suspect).toEqual({ scenario: first?.scenario, transport: 'direct', iteration: 1 });
          expect(second?.error).toContain(`possibly an earlier row's: ${first?.scenario} on direct ran before it in this row process and left running ProcessWrap, `);
        }
      }),
      { numRuns: 12, endOnFailure: true, examples: [[['timer', true], 1], [['child', true], 2], [['child', false], 3]] },
    );
  } finally {
    await cleanUp();
    delete (globalThis as unknown as Record<symbol, unknown>)[HOOKS];
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(120_000));
