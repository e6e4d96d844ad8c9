/** Row planning, in process: filters, globs, order from the seed, shards. */
import { planRows, scenarioMatcher, shardOf } from '../../harness/runner';
import type { Scenario } from '../../harness/types';

const scenario = (name: string, extra: Partial<Scenario> = {}): Scenario => ({ name, description: name, run: async () => undefined, ...extra });
const SCENARIOS = [
  scenario('duplicate-pipe'),
  scenario('duplicate-memfd'),
  scenario('kill-child-mid-transfer', { tags: ['fault'], transports: ['child', 'pidfd'] }),
  scenario('soak-mixed', { tags: ['soak'] }),
  scenario('only-direct', { transports: ['direct'] }),
];
const names = (rows: ReturnType<typeof planRows>['rows']): string[] => rows.map((r) => `${r.scenario.name}/${r.transport}/${r.iteration}`);

test('--scenario: substring, or a whole-name glob; commas for alternatives', () => {
  expect(scenarioMatcher('pipe')('duplicate-pipe')).toBe(true);
  expect(scenarioMatcher('dup*')('duplicate-pipe')).toBe(true);
  expect(scenarioMatcher('*pipe')('duplicate-pipe-x')).toBe(false);
  expect(scenarioMatcher('duplicate-?emfd')('duplicate-memfd')).toBe(true);
  expect(scenarioMatcher('nope,memfd')('duplicate-memfd')).toBe(true);
  expect(scenarioMatcher('a.b')('axb')).toBe(false);
  expect(scenarioMatcher(undefined)('anything')).toBe(true);
});

test('profiles select by tag; transports default to all and are filtered', () => {
  const def = planRows(SCENARIOS, { transports: ['direct', 'child'] });
  expect(names(def.rows).sort()).toEqual(
    ['duplicate-memfd/child/1', 'duplicate-memfd/direct/1', 'duplicate-pipe/child/1', 'duplicate-pipe/direct/1', 'only-direct/direct/1'].sort(),
  );
  expect(names(planRows(SCENARIOS, { profile: 'faults' }).rows).sort()).toEqual(['kill-child-mid-transfer/child/1', 'kill-child-mid-transfer/pidfd/1']);
  expect(planRows(SCENARIOS, { profile: 'soak' }).rows.every((r) => r.scenario.name === 'soak-mixed')).toBe(true);
  expect(() => planRows(SCENARIOS, { profile: 'nope' })).toThrow(/unknown profile nope/);
});

test('the order depends on the seed only, and a filtered plan keeps the full order', () => {
  const a = names(planRows(SCENARIOS, { seed: 5, repeat: 3 }).rows);
  expect(names(planRows(SCENARIOS, { seed: 5, repeat: 3 }).rows)).toEqual(a);
  expect(names(planRows([...SCENARIOS].reverse(), { seed: 5, repeat: 3 }).rows)).toEqual(a);
  expect(names(planRows(SCENARIOS, { seed: 6, repeat: 3 }).rows)).not.toEqual(a);
  const pipeOnly = names(planRows(SCENARIOS, { seed: 5, repeat: 3, scenario: 'pipe' }).rows);
  expect(pipeOnly).toEqual(a.filter((n) => n.startsWith('duplicate-pipe/')));
  // passes run one after the other
  const iterations = planRows(SCENARIOS, { seed: 5, repeat: 3 }).rows.map((r) => r.iteration);
  expect(iterations).toEqual([...iterations].sort());
});

test('shards partition the rows whatever the other options, and stay reasonably even', () => {
  for (const count of [1, 2, 3, 7]) {
    const all = names(planRows(SCENARIOS, { seed: 9, profile: 'all' }).rows);
    const parts = Array.from({ length: count }, (_, i) => names(planRows(SCENARIOS, { seed: 9, profile: 'all', shard: { index: i + 1, count } }).rows));
    expect(parts.flat().sort()).toEqual([...all].sort());
    // a row's shard does not depend on the seed or the filters
    const filtered = names(planRows(SCENARIOS, { seed: 1, profile: 'all', scenario: 'dup', shard: { index: 1, count } }).rows);
    expect(filtered.every((n) => parts[0]!.includes(n))).toBe(true);
  }
  const counts = [0, 0];
  for (let i = 0; i < 1000; i++) counts[shardOf(`scenario-${i}`, 'child', 2) - 1]!++;
  expect(Math.min(...counts)).toBeGreaterThan(430);
});
