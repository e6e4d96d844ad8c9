/**
 * Rows that share a process share process.env: what one row sets, changes
 * or deletes is put back before the next row, which sees the run's
 * environment, and the row that changed it is told which variables (a
 * note: its status stays its own). fdbridge's own variables (the spawn
 * token, the fd recorder's log) are neither put back nor named.
 *
 * Generated: 1 to 5 rows in a scenario directory, in the order of a
 * generated seed, each first checking that it sees the environment the run
 * began with (failing, naming the variables, if not), then setting,
 * changing, deleting and setting back variables (new ones, ones the run
 * had, fdbridge's own), from run() or from a timer it leaves, in this
 * process (isolation 'none') or in a row process of `fdbridge run`'s.
 * Without the put-back, a row after one that changed a variable failed its
 * check.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { discoverScenarios, inRunOrder, planRows, RowSession, runScenarios } from '../../harness/runner';
import type { ResultRow, ResultsFile } from '../../harness/types';
import { SPAWN_TOKEN_VARIABLE } from '../../src/child-process';
import { openFdTable } from '../../src/fd';
import { JS_LOG_VARIABLES } from '../../src/fd-track';
import { distPath } from '../../src/paths';
import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

/** fdbridge's own variables: rows may set and delete them, and they stay so. */
const OWN = [SPAWN_TOKEN_VARIABLE, ...JS_LOG_VARIABLES];
/** Variables this test adds to the run's environment, for rows to change and delete. */
const PLANTED = ['FDB_T_PLANTED_A', 'FDB_T_PLANTED_B', 'FDB_T_PLANTED_C'];

type Op = { op: 'set'; key: string; value: string } | { op: 'delete'; key: string } | { op: 'restore'; key: string };
interface RowCase {
  ops: Op[];
  /** Where the ops run: in run(), or in a timer run() leaves (unref'd: the row waits for it all the same). */
  when: 'run' | 'timer';
}

/** The environment without fdbridge's own variables. */
function envNow(): Map<string, string> {
  return new Map(Object.entries(process.env).filter((e): e is [string, string] => !OWN.includes(e[0]) && e[1] !== undefined));
}

/** The environment a row's `ops` leave, run from `original`: every variable they touched, deleted ones undefined. */
function applied(original: ReadonlyMap<string, string>, ops: readonly Op[]): Map<string, string | undefined> {
  const env = new Map<string, string | undefined>(original);
  for (const o of ops) {
    if (o.op === 'set') env.set(o.key, o.value);
    else if (o.op === 'delete') env.set(o.key, undefined);
    else env.set(o.key, original.get(o.key));
  }
  return env;
}

/** The note a row whose ops left `after` (from `original`) must have, as a report names variables. */
function expectedNote(original: ReadonlyMap<string, string>, after: ReadonlyMap<string, string | undefined>): string | undefined {
  const groups = { set: [] as string[], changed: [] as string[], deleted: [] as string[] };
  for (const [key, value] of after) {
    if (OWN.includes(key)) continue;
    const was = original.get(key);
    if (value === was) continue;
    if (was === undefined) groups.set.push(key);
    else if (value === undefined) groups.deleted.push(key);
    else groups.changed.push(key);
  }
  const shown = (k: string): string => (/^[A-Za-z0-9_.-]+$/.test(k) ? k : JSON.stringify(k));
  const parts = (['set', 'changed', 'deleted'] as const).filter((h) => groups[h].length > 0).map((h) => `${h} ${groups[h].sort().map(shown).join(', ')}`);
  if (parts.length === 0) return undefined;
  return `changed process.env, put back as the row ended: ${parts.join('; ')}; the rows after it in this process, and the processes they start, would have inherited it (a command's own environment: connect's child.env option)`;
}

/** The module every generated row is made with: check the environment, then run the ops. */
const ROW_MODULE = `const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const { env, own } = JSON.parse(readFileSync(join(__dirname, 'expected.json'), 'utf8'));
const original = new Map(Object.entries(env));
module.exports = (name, ops, when) => ({
  name, description: 'checks it sees the run\\'s environment, then changes it', transports: ['direct'],
  async run() {
    const keys = new Set([...original.keys(), ...Object.keys(process.env)].filter((k) => !own.includes(k)));
    const differ = [...keys].filter((k) => process.env[k] !== original.get(k));
    if (differ.length > 0) throw new Error(name + ' began with another environment than the run: ' + JSON.stringify(differ));
    const apply = () => {
      for (const o of ops) {
        if (o.op === 'set') process.env[o.key] = o.value;
        else if (o.op === 'delete' || !original.has(o.key)) delete process.env[o.key];
        else process.env[o.key] = original.get(o.key);
      }
    };
    if (when === 'run') apply();
    else setTimeout(apply, 1).unref();
  },
});
`;

/**
 * Runs the rows of `scenarios` on direct: in this process (runScenarios,
 * isolation 'none'), or in a row process of `fdbridge run`'s, which is
 * given this process.env (jest's copy: what the rows here see) as its own.
 */
async function runRows(scenarios: string, seed: number, isolation: 'none' | 'process'): Promise<ResultsFile> {
  if (isolation === 'none') {
    return (await runScenarios({ bench: false, repeat: 1, seed, settleMs: 50, timeoutMs: scaled(20_000), scenariosDir: scenarios, transports: ['direct'], isolation })).results;
  }
  const json = join(scenarios, 'results.json');
  const r = await runCli(['run', '--seed', String(seed), '--transport', 'direct', '--settle', '50', '--timeout', String(scaled(20_000)), '--scenarios', scenarios, '--json', json]);
  try {
    return JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  } catch {
    throw new Error(`no results file (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** A value setenv(3) keeps as it is: no NUL (it ends a C string), no lone surrogate (Node writes it as U+FFFD). */
const keptAsIs = (s: string): boolean => !s.includes('\0') && !/\p{Cs}/u.test(s);

test('generated rows changing process.env: every row sees the run\'s environment, each changer is told which variables, fdbridge\'s own are left as set', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-env-'));
  const saved = new Map(OWN.map((k) => [k, process.env[k]]));
  for (const [i, k] of PLANTED.entries()) process.env[k] = `planted ${i}`;
  let runs = 0;
  try {
    const original = envNow();
    const existing = [...original.keys()];
    const keys = fc.oneof(
      { arbitrary: fc.constantFrom(...PLANTED), weight: 3 },
      { arbitrary: fc.constantFrom(...existing), weight: 2 },
      { arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }).filter((s) => keptAsIs(s) && !s.includes('=')).map((s) => `FDB_T_${s}`), weight: 3 },
      { arbitrary: fc.constantFrom(...OWN), weight: 1 },
    );
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ op: fc.constant('set' as const), key: keys, value: fc.string({ maxLength: 12 }).filter(keptAsIs) }),
      fc.record({ op: fc.constant('delete' as const), key: keys }),
      fc.record({ op: fc.constant('restore' as const), key: keys }),
    );
    const rowCase: fc.Arbitrary<RowCase> = fc.record({ ops: fc.array(op, { maxLength: 6 }), when: fc.constantFrom('run' as const, 'timer' as const) });
    // fdbridge's own variables as the run begins: each absent or set.
    const ownAtStart = fc.tuple(...OWN.map(() => fc.option(fc.string({ maxLength: 8 }).filter(keptAsIs), { nil: undefined }))).map((vs) => new Map(OWN.map((k, i) => [k, vs[i]])));
    await fc.assert(
      fc.asyncProperty(fc.array(rowCase, { minLength: 1, maxLength: 5 }), fc.integer({ min: 1, max: 1_000_000 }), fc.constantFrom('none' as const, 'process' as const), ownAtStart, async (cases, seed, isolation, ownStart) => {
        for (const [k, v] of ownStart) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
        const scenarios = join(dir, `scenarios-${++runs}`);
        mkdirSync(scenarios);
        writeFileSync(join(scenarios, 'expected.json'), JSON.stringify({ env: Object.fromEntries(original), own: OWN }));
        writeFileSync(join(scenarios, 'env-row.js'), ROW_MODULE);
        const names = cases.map((_, i) => `row-${i}`);
        for (const [i, c] of cases.entries()) {
          writeFileSync(join(scenarios, `${names[i]}.scenario.js`), `module.exports = require('./env-row.js')(${JSON.stringify(names[i])}, ${JSON.stringify(c.ops)}, ${JSON.stringify(c.when)});\n`);
        }
        let results: ResultsFile;
        try {
          results = await runRows(scenarios, seed, isolation);
        } finally {
          // Whatever the run did to this process (isolation 'none'): the next run begins from the same environment.
          const left = envNow();
          for (const k of left.keys()) if (!original.has(k)) delete process.env[k];
          for (const [k, v] of original) process.env[k] = v;
          if (isolation === 'none') expect([...left].sort()).toEqual([...original].sort());
        }
        const rows = results.results;
        expect(rows.map((r) => [r.scenario, r.status, r.error])).toEqual(
          inRunOrder(names.map((scenario) => ({ scenario, transport: 'direct', iteration: 1 })), seed).map((r) => [r.scenario, 'pass', undefined]),
        );
        const ownValues = new Map<string, string | undefined>(ownStart);
        for (const r of rows) {
          const c = cases[names.indexOf(r.scenario)] as RowCase;
          const after = applied(original, c.ops);
          const note = expectedNote(original, after);
          expect({ row: r.scenario, notes: (r.notes ?? []).filter((n) => n.includes('process.env')) }).toEqual({ row: r.scenario, notes: note === undefined ? [] : [note] });
          for (const o of c.ops) if (OWN.includes(o.key)) ownValues.set(o.key, o.op === 'set' ? o.value : undefined);
        }
        // fdbridge's own variables are left as the rows set them (in this process: in a row process they went with it).
        if (isolation === 'none') expect(OWN.map((k) => [k, process.env[k]])).toEqual(OWN.map((k) => [k, ownValues.get(k)]));
      }),
      {
        numRuns: 30,
        endOnFailure: true,
        examples: [
          // The defect as reported (a failpoint for every later command process), in a row process and in this one.
          [[{ ops: [{ op: 'set', key: 'FDBRIDGE_FAILPOINT', value: 'after-receive' }], when: 'run' }, { ops: [], when: 'run' }], 3, 'process', new Map()],
          // Variables deleted, emptied, set and set back; fdbridge's own set and deleted.
          [
            [
              { ops: [{ op: 'delete', key: 'FDB_T_PLANTED_A' }, { op: 'set', key: 'FDB_T_PLANTED_B', value: '' }, { op: 'set', key: SPAWN_TOKEN_VARIABLE, value: 'x' }], when: 'timer' },
              { ops: [{ op: 'set', key: 'FDB_T_PLANTED_C', value: 'y' }, { op: 'restore', key: 'FDB_T_PLANTED_C' }, { op: 'delete', key: JS_LOG_VARIABLES[0] as string }], when: 'run' },
              { ops: [], when: 'run' },
            ],
            1,
            'none',
            new Map([[JS_LOG_VARIABLES[0] as string, 'at start']]),
          ],
        ],
      },
    );
  } finally {
    for (const k of PLANTED) delete process.env[k];
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(600_000));

/**
 * The reported case through the CLI: a row that sets FDBRIDGE_FAILPOINT
 * (which a command's process reads as it starts), then a row duplicating an
 * fd on a child command, in one row process. The second passes; the first
 * passes with its note.
 */
test('fdbridge run: a failpoint one row set does not reach the next row\'s child command', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-env-cli-'));
  try {
    writeFileSync(
      join(dir, 'sets-env.scenario.js'),
      `module.exports = { name: 'sets-env', description: 'sets a failpoint and passes', transports: ['child'], async run() { process.env.FDBRIDGE_FAILPOINT = 'after-receive'; } };\n`,
    );
    writeFileSync(
      join(dir, 'innocent.scenario.js'),
      `const { PROBE_COMMAND } = require(${JSON.stringify(distPath('src/index.js'))});
module.exports = { name: 'innocent', description: 'one duplication on a child', transports: ['child'], async run(ctx) {
  const c = await ctx.connect(PROBE_COMMAND);
  try { await c.dupFileDescriptor(0); } finally { await c.close(); }
} };\n`,
    );
    let seed = 1;
    while (inRunOrder(['sets-env', 'innocent'].map((scenario) => ({ scenario, transport: 'child', iteration: 1 })), seed)[0]?.scenario !== 'sets-env') seed++;
    const json = join(dir, 'results.json');
    const r = await runCli(['run', '--seed', String(seed), '--transport', 'child', '--settle', '100', '--scenarios', dir, '--json', json], { env: { FDBRIDGE_FAILPOINT: undefined } });
    const results = (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile).results;
    expect(results.map((x) => [x.scenario, x.status, x.error])).toEqual([
      ['sets-env', 'pass', undefined],
      ['innocent', 'pass', undefined],
    ]);
    expect(results[0]?.notes).toEqual([expect.stringMatching(/^changed process\.env, put back as the row ended: set FDBRIDGE_FAILPOINT; /)]);
    expect(r.code).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(120_000));

/**
 * A row that puts an object of its own in process.env's place, frozen (so
 * that no write puts it back): the next row sees the run's own
 * process.env, the row is told it replaced it, and its end is the row's
 * own (its oracle's files closed, no harness error); fdbridge's own
 * variables are taken over as the row's object had them.
 */
test('a row replacing process.env with a frozen object: the next row sees the run\'s own, the replacer is told', async () => {
  const before = openFdTable();
  const own = process.env;
  const token = process.env[SPAWN_TOKEN_VARIABLE];
  const dir = mkdtempSync(join(tmpdir(), 'fdb-row-env-frozen-'));
  try {
    writeFileSync(
      join(dir, 'replaces.scenario.js'),
      `module.exports = { name: 'replaces', description: 'replaces process.env with a frozen copy and a variable', transports: ['direct'], async run() {
  process.env = Object.freeze({ ...process.env, FDB_T_FROZEN: 'x', [${JSON.stringify(SPAWN_TOKEN_VARIABLE)}]: 'set in the row' });
} };\n`,
    );
    writeFileSync(
      join(dir, 'checks.scenario.js'),
      `module.exports = { name: 'checks', description: 'fails unless it sees a writable environment without the variable', transports: ['direct'], async run() {
  if (process.env.FDB_T_FROZEN !== undefined || Object.isFrozen(process.env)) throw new Error('began with the replaced environment');
} };\n`,
    );
    let seed = 1;
    while (inRunOrder(['replaces', 'checks'].map((scenario) => ({ scenario, transport: 'direct', iteration: 1 })), seed)[0]?.scenario !== 'replaces') seed++;
    const rows = (await runRows(dir, seed, 'none')).results;
    expect(process.env).toBe(own);
    // fdbridge's own variables stay as the row's object had them.
    expect(process.env[SPAWN_TOKEN_VARIABLE]).toBe('set in the row');
    expect(rows.map((r) => [r.scenario, r.status, r.error])).toEqual([
      ['replaces', 'pass', undefined],
      ['checks', 'pass', undefined],
    ]);
    expect(rows[0]?.notes).toEqual([expect.stringMatching(/^changed process\.env, put back as the row ended: replaced the object process\.env; /)]);
  } finally {
    process.env = own;
    if (token === undefined) delete process.env[SPAWN_TOKEN_VARIABLE];
    else process.env[SPAWN_TOKEN_VARIABLE] = token;
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(120_000));

/**
 * Code a row leaves running (a child process's exit callback) that changes
 * process.env once the row has ended: put back before the next row begins,
 * or as the session ends, and the row whose code it is told. The child
 * exits once the test creates a file, after the row's end.
 */
describe('a change after the row ended (RowSession)', () => {
  const LATE = 'FDB_T_LATE';
  let dir: string;
  let session: RowSession;
  let rows: ReturnType<typeof planRows>['rows'];
  let release: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdb-row-env-late-'));
    release = join(dir, 'release');
    writeFileSync(
      join(dir, 'leaves-child.scenario.js'),
      `const { spawn } = require('node:child_process');
module.exports = { name: 'leaves-child', description: 'leaves a child process whose exit callback sets a variable', transports: ['direct'], async run() {
  const wait = 'const fs = require("node:fs"); const t = setInterval(() => { if (fs.existsSync(' + JSON.stringify(${JSON.stringify(release)}) + ')) clearInterval(t); }, 10);';
  spawn(process.execPath, ['-e', wait], { stdio: 'ignore' }).once('exit', () => { process.env.${LATE} = 'late'; });
} };\n`,
    );
    writeFileSync(
      join(dir, 'checks.scenario.js'),
      `module.exports = { name: 'checks', description: 'fails if the variable is set', transports: ['direct'], async run() {
  if (process.env.${LATE} !== undefined) throw new Error('began with ${LATE} set');
} };\n`,
    );
    rows = planRows(discoverScenarios(dir), { transports: ['direct'] }).rows;
    session = await RowSession.open({ bench: false, seed: 1, timeoutMs: scaled(20_000), settleMs: 50, anchors: false, rows, info: () => undefined });
  });
  afterEach(async () => {
    await session.close();
    delete process.env[LATE];
    rmSync(dir, { recursive: true, force: true });
  });
  const rowOf = (name: string): (typeof rows)[number] => rows.find((r) => r.scenario.name === name) as (typeof rows)[number];
  /** Lets the child exit, and waits (no deadline: the test's own) for its exit callback. */
  const lateChange = async (): Promise<void> => {
    writeFileSync(release, '');
    while (process.env[LATE] === undefined) await new Promise((r) => setTimeout(r, 10));
  };
  const told = (when: string): string =>
    `changed process.env after the row had ended (code it left running), put back ${when}: set ${LATE}; the rows after it in this process, and the processes they start, would have inherited it (a command's own environment: connect's child.env option)`;

  test('before the next row begins: that row sees the run\'s environment, and the earlier row is told', async () => {
    expect(await session.run(rowOf('leaves-child'))).toMatchObject({ status: 'pass' });
    expect(existsSync(release)).toBe(false);
    await lateChange();
    const earlier: ResultRow[] = [];
    expect(await session.run(rowOf('checks'), undefined, (r) => earlier.push(r))).toMatchObject({ status: 'pass' });
    expect(earlier.map((r) => [r.scenario, r.status, r.notes])).toEqual([['leaves-child', 'pass', [told('before the next row (checks on direct) began')]]]);
    expect(process.env[LATE]).toBeUndefined();
  });

  test('before the session ends: the last row is told, and the environment is the run\'s again', async () => {
    expect(await session.run(rowOf('leaves-child'))).toMatchObject({ status: 'pass' });
    await lateChange();
    expect((await session.settle())?.notes).toEqual([told('before its process ended')]);
    expect(process.env[LATE]).toBeUndefined();
  });
});
