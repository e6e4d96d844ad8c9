/**
 * The runner and its leak oracle, driven as a user drives them: the CLI in a
 * subprocess (`node dist/harness/cli.js run ...`), pointed at the fixture
 * scenarios under test/fixtures/scenarios, reading back --json.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { discoverScenarios } from '../../harness/runner';
import type { ResultRow, ResultsFile } from '../../harness/types';
import { FIXTURE_SCENARIOS, runCli, type CliRun } from '../util/processes';


let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-runner-test-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> =>
  runCli(args, { env: { FDBRIDGE_SCENARIOS_DIR: FIXTURE_SCENARIOS, ...env } });

let counter = 0;
/** Runs `fdbridge run ARGS --json <tmp>` and returns the exit status, output and parsed results. */
async function run(args: string[]): Promise<CliRun & { results: ResultsFile }> {
  const json = join(dir, `results-${++counter}.json`);
  const r = await cli(['run', '--settle', '300', ...args, '--json', json]);
  let results: ResultsFile;
  try {
    results = JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  } catch {
    throw new Error(`no results file (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { ...r, results };
}

const row = (rs: ResultsFile, scenario: string, transport: string): ResultRow => {
  const found = rs.results.find((r) => r.scenario === scenario && r.transport === transport);
  if (!found) throw new Error(`no row ${scenario}/${transport}`);
  return found;
};
const order = (rs: ResultsFile): string[] => rs.results.map((r) => `${r.scenario}/${r.transport}/${r.iteration ?? 1}`);

describe('the leak oracle', () => {
  let r: CliRun & { results: ResultsFile };

  beforeAll(async () => {
    r = await run(['--scenario', 'planted-leak,clean-dup,declared-leak-none', '--transport', 'direct,worker,child']);
  });

  test('finds a planted leak with its pid, role, fd and target, in the client and in the child', () => {
    for (const t of ['direct', 'worker', 'child']) {
      const planted = row(r.results, 'planted-leak', t);
      expect(planted.status).toBe('expected-fail');
      const file = planted.leaks.find((l) => l.target.endsWith('/planted-leak'));
      expect(file).toEqual({ pid: expect.any(Number), role: 'client', fd: expect.any(Number), target: expect.stringMatching(/\/planted-leak$/) });
      expect(file!.fd).toBeGreaterThan(2);
      expect(planted.error).toMatch(/leak caught: .*planted-leak/);
    }
    // The command kept a pipe end: in the child's own table, found before it exited.
    const child = row(r.results, 'planted-leak', 'child');
    const far = child.leaks.find((l) => l.role === 'child');
    expect(far).toEqual({ pid: expect.any(Number), role: 'child', fd: expect.any(Number), target: expect.stringMatching(/^pipe:\[\d+\]$/) });
    const clientPid = child.leaks.find((l) => l.role === 'client')!.pid;
    expect(far!.pid).not.toBe(clientPid);
    // direct and worker commands share the client's table: the kept pipe end is there.
    expect(row(r.results, 'planted-leak', 'worker').leaks.some((l) => l.role === 'client' && /^pipe:/.test(l.target))).toBe(true);
  });

  test('reports no leak for a clean scenario', () => {
    for (const t of ['direct', 'worker', 'child']) {
      const clean = row(r.results, 'clean-dup', t);
      expect(clean).toMatchObject({ status: 'pass', leaks: [] });
      expect(clean.closed).toBeUndefined();
    }
  });

  test("a 'leak' scenario that leaks nothing fails; the run exits non-zero", () => {
    for (const t of ['direct', 'worker', 'child']) {
      expect(row(r.results, 'declared-leak-none', t)).toMatchObject({ status: 'fail', error: expect.stringMatching(/oracle saw none/) });
    }
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/declared-leak-none\s+FAIL\s+FAIL\s+FAIL/);
    expect(r.stdout).toMatch(/planted-leak\s+xfail 2L\s+xfail 2L\s+xfail 2L/);
  });

  test('records the environment and the options', () => {
    expect(r.results.environment).toMatchObject({ node: process.version, cores: expect.any(Number), gitCommit: expect.any(String) });
    expect(r.results.options).toMatchObject({ seed: 1, repeat: 1, bench: false, profile: 'default', transports: ['direct', 'worker', 'child'] });
  });
});

test('a wrong-fd close in the command process fails the row, with the fd in `closed`', async () => {
  const r = await run(['--scenario', 'wrong-close', '--transport', 'child']);
  expect(r.code).toBe(1);
  const wrong = row(r.results, 'wrong-close', 'child');
  expect(wrong.status).toBe('fail');
  expect(wrong.closed).toEqual([{ pid: expect.any(Number), role: 'child', fd: 0, target: '/dev/null' }]);
});

test('errors and notes reach results.json without ANSI colour sequences', async () => {
  const r = await run(['--scenario', 'coloured-error', '--transport', 'direct']);
  const failed = row(r.results, 'coloured-error', 'direct');
  expect(failed.status).toBe('fail');
  expect(failed.error).toContain('Error: Expected values to be strictly equal:\n+ actual - expected\n\n+ 1\n- 2');
  expect(failed.notes).toContain('noted in yellow');
  expect(JSON.stringify(r.results)).not.toContain('\\u001b');
  expect(r.stdout).not.toContain('\u001b');
});

test("expected throws are 'expected-fail', skips are 'skip', a hanging row times out and the run goes on", async () => {
  // A hanging row's connection and worker are torn down after its time
  // limit, while the oracle settles: on a loaded machine (load average 30)
  // the worker's event-loop fds were still open after 300 ms. A settle ends
  // as soon as nothing differs, so a long one costs these rows nothing.
  const r = await run(['--scenario', 'expected-throw,skips,hangs', '--transport', 'direct,worker', '--timeout', '500', '--settle', '10000']);
  expect(r.code).toBe(1);
  expect(row(r.results, 'expected-throw', 'direct')).toMatchObject({ status: 'expected-fail', metrics: { attempts: 1 } });
  expect(row(r.results, 'skips', 'worker')).toMatchObject({ status: 'skip', error: 'the fixture kernel lacks a feature' });
  for (const t of ['direct', 'worker']) {
    // The connection it held open was closed by the harness: no leak.
    expect(row(r.results, 'hangs', t)).toMatchObject({ status: 'fail', leaks: [], error: expect.stringMatching(/timed out after 500 ms/) });
  }
  expect(r.results.totals).toMatchObject({ attempts: 2, undeclaredLeaks: 0 });
});

test('an expected failure counts only as declared: another error or another leak fails the row', async () => {
  const r = await run(['--scenario', 'wrong-failure,leaks-another-file,expected-throw', '--transport', 'direct']);
  expect(r.code).toBe(1);
  expect(row(r.results, 'expected-throw', 'direct')).toMatchObject({
    status: 'expected-fail',
    error: expect.stringMatching(/CheckFailure \[ERR_SCENARIO_CHECK\]: wrong-file-written/),
  });
  expect(row(r.results, 'wrong-failure', 'direct')).toMatchObject({
    status: 'fail',
    error: expect.stringMatching(/expected run\(\) to throw check wrong-file-written, but it threw another error: AssertionError/),
  });
  const other = row(r.results, 'leaks-another-file', 'direct');
  expect(other.status).toBe('fail');
  expect(other.error).toMatch(/undeclared leak of 1 fd\(s\): .*\/undeclared-file/);
  expect(other.leaks).toEqual([expect.objectContaining({ role: 'client', target: expect.stringMatching(/\/undeclared-file$/) })]);
});

test('a scenario that expects a failure without declaring which one is a build error', () => {
  const scenarios = mkdtempSync(join(tmpdir(), 'fdbridge-undeclared-'));
  try {
    for (const [expect_, failure] of [
      ['fail', '{}'],
      ['fail', '{ error: {} }'],
      ['leak', '{ leaks: [] }'],
      ['leak', 'undefined'],
    ] as const) {
      const file = join(scenarios, `undeclared-${expect_}-${failure.length}.scenario.js`);
      writeFileSync(file, `module.exports = { name: 'u', description: 'd', expect: '${expect_}', failure: ${failure}, run: async () => {} };`);
      expect(() => discoverScenarios(scenarios)).toThrow(new RegExp(`expect '${expect_}' needs failure\\.`));
      rmSync(file);
    }
    writeFileSync(join(scenarios, 'declared.scenario.js'), "module.exports = { name: 'd', description: 'd', expect: 'fail', failure: { code: 'X', error: { code: 'ERR_X' } }, run: async () => {} };");
    expect(discoverScenarios(scenarios).map((l) => l.scenario.name)).toEqual(['d']);
  } finally {
    rmSync(scenarios, { recursive: true, force: true });
  }
});

test('totals: counters summed, peaks the largest over rows, the standard counters always there, and a totals line', async () => {
  const r = await run(['--scenario', 'records-peaks,clean-dup', '--transport', 'direct,worker,helper']);
  // Every row passes (a failing one shown with its error and notes), and so the run.
  expect(r.results.results.filter((x) => x.status !== 'pass').map((x) => ({ row: `${x.scenario}/${x.transport}`, status: x.status, error: x.error, notes: x.notes }))).toEqual([]);
  expect(r.code).toBe(0);
  expect(row(r.results, 'records-peaks', 'direct')).toMatchObject({ status: 'pass', peaks: { fixturePeak: 5 }, metrics: { faultsInjected: 2 } });
  expect(row(r.results, 'records-peaks', 'worker').peaks).toEqual({ fixturePeak: 7 });
  expect(r.results.totals).toMatchObject({
    fixturePeak: 7,
    faultsInjected: 4,
    faultsSurvived: 4,
    badInputsTried: 0,
    badInputsRejected: 0,
    repliesLost: 0,
    repliesDuplicated: 0,
    leakedFds: 0,
    clientPeakRssBytes: expect.any(Number),
    helperPeakRssBytes: expect.any(Number),
  });
  expect(r.stdout).toMatch(/^totals: faults injected 4, survived 4; bad inputs tried 0, rejected 0; replies lost 0, duplicated 0; fds leaked 0; peak RSS client \d+ MB, helper \d+ MB$/m);
});

describe('reproducibility', () => {
  const args = ['--scenario', 'clean-dup,expected-throw,declared-leak-none,skips', '--transport', 'direct,worker'];

  test('two runs with the same seed run the same rows in the same order, with the same inputs', async () => {
    const a = await run([...args, '--seed', '7', '--repeat', '2']);
    const b = await run([...args, '--seed', '7', '--repeat', '2']);
    expect(order(a.results)).toHaveLength(16); // 4 scenarios x 2 transports x 2 passes
    expect(order(b.results)).toEqual(order(a.results));
    // The rng each row got: clean-dup notes a draw, expected-throw puts one in its error.
    const inputs = (rs: ResultsFile): unknown[] => rs.results.map((x) => [x.notes, x.status === 'expected-fail' ? x.error : null]);
    expect(inputs(b.results)).toEqual(inputs(a.results));
    expect(a.stdout).toMatch(/seed 7/);
  });

  test('--shard 1/2 and --shard 2/2 together run every row exactly once', async () => {
    const all = ['direct', 'worker', 'child', 'helper', 'pidfd'].join(',');
    const shardArgs = ['--scenario', 'clean-dup,expected-throw,declared-leak-none,skips', '--transport', all, '--seed', '3'];
    const full = await cli(['run', ...shardArgs, '--list']);
    expect(full.code).toBe(0);
    const fullRows = full.stdout.trim().split('\n');
    const [one, two] = await Promise.all([run([...shardArgs, '--shard', '1/2']), run([...shardArgs, '--shard', '2/2'])]);
    const rows1 = one.results.results.map((x) => `${x.scenario} ${x.transport}`);
    const rows2 = two.results.results.map((x) => `${x.scenario} ${x.transport}`);
    expect(rows1.length).toBeGreaterThan(0);
    expect(rows2.length).toBeGreaterThan(0);
    expect([...rows1, ...rows2].sort()).toEqual([...fullRows].sort());
    expect(new Set([...rows1, ...rows2]).size).toBe(fullRows.length);
    // Each shard keeps the full run's order.
    expect(rows1).toEqual(fullRows.filter((x) => rows1.includes(x)));
    expect(one.results.options.shard).toEqual({ index: 1, count: 2 });
  });
});

test('bad options are usage errors (exit 2)', async () => {
  for (const bad of [['--shard', '3/2'], ['--transport', 'nope'], ['--profile', 'nope'], ['--repeat', '0']]) {
    const r = await cli(['run', ...bad]);
    expect({ bad, code: r.code }).toEqual({ bad, code: 2 });
  }
  const none = await cli(['run', '--scenario', 'no-such-scenario-anywhere']);
  expect(none.code).toBe(2);
  expect(none.stderr).toMatch(/no scenario matches/);
});
