/**
 * `fdbridge merge`: in process, generated shardings of generated plans
 * (every way a set of shard files can fail to be one run must be refused,
 * and a whole set must merge into the unsharded run's rows and order); then
 * as a user runs it, two shards as parallel CLI processes against one
 * unsharded run with the same seed.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { MergeError, mergeResults, type ShardFile } from '../../harness/merge';
import { planRows } from '../../harness/runner';
import type { ResultRow, ResultsFile, Scenario, Status } from '../../harness/types';
import type { TransportName } from '../../src';
import { FIXTURE_SCENARIOS, runCli, type CliRun } from '../util/processes';

// ---------------------------------------------------------------------------
// generated shardings, in process

const TRANSPORTS: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd'];
const STATUSES: Status[] = ['pass', 'fail', 'skip', 'expected-fail'];

const ENV = { node: 'v20', kernel: '6.18', cpuModel: 'cpu', cores: 2, gitCommit: 'abc', platform: 'linux-x64', date: '2026-01-01T00:00:00Z' };

interface World {
  scenarios: Scenario[];
  seed: number;
  repeat: number;
  count: number;
  /** Status of each row, by its position in the unsharded plan. */
  statuses: Status[];
}

const world: fc.Arbitrary<World> = fc
  .record({
    specs: fc.uniqueArray(
      fc.record({ name: fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/), transports: fc.subarray(TRANSPORTS, { minLength: 1 }) }),
      { minLength: 1, maxLength: 12, selector: (s) => s.name },
    ),
    seed: fc.nat(),
    repeat: fc.integer({ min: 1, max: 3 }),
    count: fc.integer({ min: 1, max: 6 }),
    statuses: fc.array(fc.constantFrom(...STATUSES), { minLength: 200, maxLength: 200 }),
  })
  .map(({ specs, ...rest }) => ({
    ...rest,
    scenarios: specs.map((s): Scenario => ({ name: s.name, description: s.name, transports: s.transports, run: async () => undefined })),
  }));

const rowId = (r: { scenario: string; transport: string; iteration?: number }): string => `${r.scenario}/${r.transport}/${r.iteration ?? 1}`;

/** What `fdbridge run` would write for one shard (or, count 0, the unsharded run), with made-up verdicts. */
function shardFile(w: World, index: number | undefined): ShardFile {
  const planAll = planRows(w.scenarios, { seed: w.seed, repeat: w.repeat });
  const plan = index === undefined ? planAll : planRows(w.scenarios, { seed: w.seed, repeat: w.repeat, shard: { index, count: w.count } });
  const position = new Map(planAll.rows.map((r, i) => [rowId({ scenario: r.scenario.name, transport: r.transport, iteration: r.iteration }), i]));
  const results: ResultRow[] = plan.rows.map((r) => {
    const id = rowId({ scenario: r.scenario.name, transport: r.transport, iteration: r.iteration });
    const status = w.statuses[(position.get(id) as number) % w.statuses.length] as Status;
    return { scenario: r.scenario.name, transport: r.transport, status, leaks: [], iteration: r.iteration, expect: 'pass', metrics: { faultsInjected: 1 } };
  });
  const file: ResultsFile = {
    environment: { ...ENV, hostname: `host-${index ?? 0}` },
    options: {
      transports: [...TRANSPORTS],
      bench: false,
      repeat: w.repeat,
      seed: w.seed,
      profile: 'default',
      ...(index === undefined ? {} : { shard: { index, count: w.count } }),
    },
    anchors: [],
    results,
    totals: { clientPeakRssBytes: 1000 + (index ?? 0) },
    plan: { rows: plan.planned },
  };
  return { file: `shard-${index ?? 'all'}.json`, results: file };
}

function allShards(w: World): ShardFile[] {
  return Array.from({ length: w.count }, (_, i) => shardFile(w, i + 1));
}

/** The merge's problems, or [] when it merged. */
function problemsOf(files: ShardFile[]): string[] {
  try {
    mergeResults(files);
    return [];
  } catch (err) {
    if (err instanceof MergeError) return err.problems;
    throw err;
  }
}

const verdicts = (f: ResultsFile): string[] => f.results.map((r) => `${rowId(r)} ${r.status}`);

test('every shard, in any order, merges into the unsharded run: same rows, order, verdicts and totals; environments per shard', () => {
  fc.assert(
    fc.property(world, fc.nat(), (w, rot) => {
      const shards = allShards(w);
      const given = [...shards.slice(rot % shards.length), ...shards.slice(0, rot % shards.length)];
      const merged = mergeResults(given);
      const whole = shardFile(w, undefined).results;
      expect(verdicts(merged)).toEqual(verdicts(whole));
      expect(merged.results.every((r) => r.shard !== undefined && r.shard >= 1 && r.shard <= w.count)).toBe(true);
      expect(merged.shards?.map((s) => s.index)).toEqual(shards.map((_, i) => i + 1));
      expect(merged.shards?.map((s) => s.environment.hostname)).toEqual(shards.map((_, i) => `host-${i + 1}`));
      expect(merged.totals?.['faultsInjected']).toBe(whole.results.length);
      expect(merged.totals?.['failedRows']).toBe(whole.results.filter((r) => r.status === 'fail').length);
      expect(merged.totals?.['clientPeakRssBytes']).toBe(1000 + w.count);
      expect(merged.options.shard).toBeUndefined();
      expect(merged.plan?.rows).toEqual(whole.plan?.rows);
    }),
  );
});

test('a missing shard, a shard given twice, a missing or doubled row, a row in the wrong shard: each is refused by name', () => {
  fc.assert(
    fc.property(world, fc.nat(), fc.nat(), (w, a, b) => {
      const shards = allShards(w);
      const nonEmpty = shards.filter((s) => s.results.results.length > 0);
      const victim = nonEmpty[a % nonEmpty.length] as ShardFile;
      const row = victim.results.results[b % victim.results.results.length] as ResultRow;
      const index = victim.results.options.shard?.index ?? 1;

      // a shard left out
      if (w.count > 1) {
        const without = shards.filter((s) => s !== victim);
        expect(problemsOf(without)).toEqual([expect.stringContaining(`missing shard ${index}/${w.count}`)]);
      }
      // a shard given twice
      expect(problemsOf([...shards, victim])).toEqual([expect.stringContaining(`shard ${index}/${w.count} is given more than once`)]);
      // one row lost from its shard's file
      const lost = { ...victim, results: { ...victim.results, results: victim.results.results.filter((r) => r !== row) } };
      expect(problemsOf(shards.map((s) => (s === victim ? lost : s)))).toEqual([
        expect.stringMatching(new RegExp(`1 planned row\\(s\\) missing: ${escapeRe(rowId(row))}$`)),
      ]);
      // one row twice in its own file
      const twice = { ...victim, results: { ...victim.results, results: [...victim.results.results, row] } };
      expect(problemsOf(shards.map((s) => (s === victim ? twice : s)))).toEqual([expect.stringContaining(`1 row(s) doubled: ${rowId(row)}`)]);
      // one row moved to another shard's file
      if (w.count > 1) {
        const other = shards.find((s) => s !== victim) as ShardFile;
        const moved = shards.map((s) =>
          s === victim ? lost : s === other ? { ...other, results: { ...other.results, results: [...other.results.results, row] } } : s,
        );
        expect(problemsOf(moved)).toEqual([expect.stringContaining(`1 row(s) in the wrong shard`)]);
      }
      // a row nobody planned
      const stray = { ...row, scenario: `${row.scenario}-not-planned` };
      const extra = { ...victim, results: { ...victim.results, results: [...victim.results.results, stray] } };
      expect(problemsOf(shards.map((s) => (s === victim ? extra : s)))).toEqual([expect.stringContaining(`1 row(s) not in the plan: ${rowId(stray)}`)]);
    }),
  );
});

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('shards that disagree on the seed, an option or the scenario set are refused, naming what differs', () => {
  fc.assert(
    fc.property(
      world.filter((w) => w.count > 1),
      fc.constantFrom('seed', 'repeat', 'bench', 'profile', 'scenario', 'scenario-name', 'plan', 'count'),
      (w, what) => {
        const shards = allShards(w);
        const last = shards[shards.length - 1] as ShardFile;
        const r = structuredClone(last.results);
        if (what === 'seed') r.options.seed = w.seed + 1;
        if (what === 'repeat') r.options.repeat = w.repeat + 1;
        if (what === 'bench') r.options.bench = true;
        if (what === 'profile') r.options.profile = 'faults';
        if (what === 'scenario') r.options.scenario = 'pipe';
        if (what === 'scenario-name') r.options.scenarioNames = ['pipe'];
        if (what === 'plan') r.plan = { rows: [...(r.plan?.rows ?? []), 'a-scenario-built-elsewhere/direct'].sort() };
        if (what === 'count') r.options.shard = { index: 1, count: w.count + 1 };
        const problems = problemsOf([...shards.slice(0, -1), { ...last, results: r }]);
        const expected = {
          seed: 'shards disagree on seed',
          repeat: 'shards disagree on --repeat',
          bench: 'shards disagree on --bench',
          profile: 'shards disagree on --profile',
          scenario: 'shards disagree on --scenario:',
          'scenario-name': 'shards disagree on --scenario-name',
          plan: 'only shard-' + String(w.count) + '.json plans a-scenario-built-elsewhere',
          count: 'shards disagree on shard count',
        }[what];
        expect(problems.some((p) => p.includes(expected))).toBe(true);
      },
    ),
  );
});

test('a file without a plan, and no files at all, are refused', () => {
  const w: World = { scenarios: [{ name: 'a', description: 'a', run: async () => undefined }], seed: 1, repeat: 1, count: 1, statuses: ['pass'] };
  const [one] = allShards(w) as [ShardFile];
  const { plan: _plan, ...old } = one.results;
  expect(problemsOf([{ ...one, results: old }])).toEqual([expect.stringContaining('shard-1.json has no plan')]);
  expect(problemsOf([])).toEqual(['no results files given']);
});

// ---------------------------------------------------------------------------
// the CLI: two shards as parallel processes against one unsharded run

const PICK = ['--scenario', 'clean-dup,planted-leak,declared-leak-none,expected-throw,skips,wrong-close', '--transport', 'direct,worker,child'];

const cli = (args: string[]): Promise<CliRun> => runCli(args, { env: { FDBRIDGE_SCENARIOS_DIR: FIXTURE_SCENARIOS } });

describe('fdbridge merge, on shards run as parallel processes', () => {
  let dir: string;
  let whole: ResultsFile;
  let shardRuns: CliRun[];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-merge-test-'));
    const common = ['run', '--seed', '7', '--settle', '300', ...PICK];
    // The two shards at the same time, as two CI jobs would; the unsharded run after them.
    shardRuns = await Promise.all([1, 2].map((i) => cli([...common, '--shard', `${i}/2`, '--json', join(dir, `shard-${i}.json`)])));
    await cli([...common, '--json', join(dir, 'whole.json')]);
    whole = JSON.parse(readFileSync(join(dir, 'whole.json'), 'utf8')) as ResultsFile;
  }, 240_000);

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What must agree between runs: the row, its verdict, and what the oracle saw (pids and fd numbers differ). */
  const verdict = (r: ResultRow): string =>
    `${rowId(r)} ${r.status} expect=${r.expect} leaks=${r.leaks.map((l) => `${l.role}:${l.target.replace(/.*\//, '').replace(/\[\d+\]/, '[inode]')}`).sort().join(',')} closed=${(r.closed ?? []).length}`;

  test('the merge has the same rows, in the same order, with the same verdicts as one unsharded run', async () => {
    expect(shardRuns.map((r) => r.stdout)).toEqual([expect.stringContaining('shard 1/2'), expect.stringContaining('shard 2/2')]);
    const shardRows = [1, 2].map((i) => (JSON.parse(readFileSync(join(dir, `shard-${i}.json`), 'utf8')) as ResultsFile).results.length);
    expect(shardRows.every((n) => n > 0)).toBe(true);

    const r = await cli(['merge', join(dir, 'shard-2.json'), join(dir, 'shard-1.json'), '--json', join(dir, 'merged.json'), '--html', join(dir, 'merged.html')]);
    // wrong-close fails its row (as it does in the unsharded run): exit status 1, like run's.
    expect(whole.results.some((x) => x.status === 'fail')).toBe(true);
    expect(r.code).toBe(1);
    const merged = JSON.parse(readFileSync(join(dir, 'merged.json'), 'utf8')) as ResultsFile;
    expect(merged.results.map(verdict)).toEqual(whole.results.map(verdict));
    expect(merged.results.length).toBe(shardRows[0]! + shardRows[1]!);
    expect(merged.totals?.['undeclaredLeaks']).toBe(whole.totals?.['undeclaredLeaks']);
    expect(merged.totals?.['failedRows']).toBe(whole.totals?.['failedRows']);
    expect(merged.shards?.map((s) => `${s.index}/${s.count}`)).toEqual(['1/2', '2/2']);
    expect(r.stdout).toMatch(/shard 1\/2 .*node v\d+.*kernel/);
    const html = readFileSync(join(dir, 'merged.html'), 'utf8');
    expect(html.match(/data-scenario=/g)?.length).toBe(whole.results.length);
  });

  test('a missing shard is an error, and nothing is written', async () => {
    const out = join(dir, 'partial.json');
    const r = await cli(['merge', join(dir, 'shard-1.json'), '--json', out]);
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBe(1);
    expect(r.stderr).toContain('missing shard 2/2');
    expect(existsSync(out)).toBe(false);
  });

  test('a results file that cannot be read is a one-line error (exit 3: could not run)', async () => {
    const r = await cli(['merge', join(dir, 'no-such.json')]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^fdbridge merge: cannot read .*no-such\.json: ENOENT[^\n]*\n$/);
  });
});
