/**
 * Merging the results files of a sharded run (`fdbridge run --shard i/n`,
 * one file per shard, maybe from different machines) into one results file,
 * as if one process had run every row.
 *
 * What makes a merge trustworthy is what it refuses. Every shard file
 * carries the plan of the whole run (`plan.rows`: every scenario/transport
 * of the unsharded run), so the merge can check, and reports every problem
 * it finds at once:
 * - the shards agree on the seed, the shard count, --repeat, --bench, the
 *   profile, the transports, the --scenario pattern and --scenario-name names, and the plan (the same
 *   scenario set: a shard built from another commit plans other rows);
 * - each shard 1..n is given exactly once;
 * - every planned row, in every --repeat pass, is in exactly one file, and
 *   in the shard `shardOf` puts it in; no row is there that was not planned.
 * Environments may differ (that is the point of a matrix); they are kept per
 * shard.
 */
import { computeTotals, inRunOrder, shardOf } from './runner';
import type { ResultRow, ResultsFile, ShardRecord } from './types';

/** The shards do not make one run; `problems` lists every reason, one line each. */
export class MergeError extends Error {
  override name = 'MergeError';
  constructor(readonly problems: string[]) {
    super(`the shards do not make one run:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** A results file and the name it was given by (for messages). */
export interface ShardFile {
  file: string;
  results: ResultsFile;
}

const rowKey = (r: { scenario: string; transport: string; iteration?: number }): string =>
  `${r.scenario}/${r.transport}/${r.iteration ?? 1}`;

/** At most `n` items, then "and k more". */
function some(items: readonly string[], n = 5): string {
  return items.length <= n ? items.join(', ') : `${items.slice(0, n).join(', ')} and ${items.length - n} more`;
}

/** The options every shard must share, as text, by name. */
function sharedOptions(r: ResultsFile): Record<string, string> {
  const o = r.options;
  return {
    seed: String(o.seed),
    'shard count': String(o.shard?.count ?? 1),
    '--repeat': String(o.repeat),
    '--bench': String(o.bench),
    '--profile': o.profile ?? 'default',
    '--transport': [...o.transports].sort().join(','),
    '--scenario': o.scenario ?? '(all)',
    '--scenario-name': o.scenarioNames === undefined ? '(any)' : JSON.stringify([...o.scenarioNames].sort()),
  };
}

/**
 * One results file from the shards' files (any order), or a MergeError
 * listing why they are not one run. The merged rows are in the order one
 * unsharded run with the same seed would have run them, each marked with
 * its `shard`; totals are recomputed from the rows (peak RSS: the largest
 * any shard saw).
 */
export function mergeResults(files: readonly ShardFile[]): ResultsFile {
  if (files.length === 0) throw new MergeError(['no results files given']);
  const problems: string[] = [];

  for (const { file, results } of files) {
    if (!results.plan || !Array.isArray(results.plan.rows)) {
      problems.push(`${file} has no plan (it was written by an fdbridge without merge support, or is not a run's results): rerun that shard`);
    }
  }
  // Without every plan, no row can be called missing or unplanned.
  if (problems.length > 0) throw new MergeError(problems);

  // Options: every shard against the first, option by option.
  const first = files[0] as ShardFile;
  const reference = sharedOptions(first.results);
  for (const { file, results } of files.slice(1)) {
    const mine = sharedOptions(results);
    for (const [name, value] of Object.entries(reference)) {
      if (mine[name] !== value) problems.push(`shards disagree on ${name}: ${first.file} has ${value}, ${file} has ${mine[name]}`);
    }
  }
  const count = first.results.options.shard?.count ?? 1;

  // Plans: the same rows everywhere (a different scenario set shows here).
  const planOf = (f: ShardFile): string[] => f.results.plan?.rows ?? [];
  const plan = new Set(planOf(first));
  for (const f of files.slice(1)) {
    const other = new Set(planOf(f));
    const onlyFirst = [...plan].filter((r) => !other.has(r));
    const onlyOther = [...other].filter((r) => !plan.has(r));
    if (onlyFirst.length > 0 || onlyOther.length > 0) {
      const scenarios = (rows: string[]): string[] => [...new Set(rows.map((r) => r.slice(0, r.lastIndexOf('/'))))];
      problems.push(
        `shards disagree on the scenario set (built from different commits, or run with other filters): ` +
          [
            onlyFirst.length > 0 ? `only ${first.file} plans ${some(scenarios(onlyFirst))}` : '',
            onlyOther.length > 0 ? `only ${f.file} plans ${some(scenarios(onlyOther))}` : '',
          ]
            .filter(Boolean)
            .join('; '),
      );
    }
  }

  // Shards: 1..count, each exactly once.
  const byIndex = new Map<number, string[]>();
  for (const { file, results } of files) {
    const index = results.options.shard?.index ?? 1;
    byIndex.set(index, [...(byIndex.get(index) ?? []), file]);
  }
  for (const [index, given] of byIndex) {
    if (given.length > 1) problems.push(`shard ${index}/${count} is given more than once: ${given.join(', ')}`);
  }
  const missingShards: number[] = [];
  for (let index = 1; index <= count; index++) if (!byIndex.has(index)) missingShards.push(index);
  if (missingShards.length > 0) {
    problems.push(`missing shard${missingShards.length > 1 ? 's' : ''} ${missingShards.map((i) => `${i}/${count}`).join(', ')} (its results file was not given, or that job did not finish)`);
  }

  // Rows: each planned row, in each pass, exactly once and in its own shard.
  const repeat = first.results.options.repeat;
  const seen = new Map<string, string>();
  const rows: ResultRow[] = [];
  const doubled: string[] = [];
  const unplanned: string[] = [];
  const misplaced: string[] = [];
  const merged = new Set<number>();
  for (const { file, results } of files) {
    const index = results.options.shard?.index ?? 1;
    // A shard given twice is reported above; its rows are not listed again as doubled.
    if (merged.has(index)) continue;
    merged.add(index);
    for (const row of results.results) {
      const key = rowKey(row);
      const where = seen.get(key);
      if (where !== undefined) {
        doubled.push(`${key} (in ${where} and ${file})`);
        continue;
      }
      seen.set(key, file);
      const iteration = row.iteration ?? 1;
      if (!plan.has(`${row.scenario}/${row.transport}`) || iteration < 1 || iteration > repeat) unplanned.push(`${key} (in ${file})`);
      else if (shardOf(row.scenario, row.transport, count) !== index) {
        misplaced.push(`${key} (in ${file}, shard ${index}; it belongs to shard ${shardOf(row.scenario, row.transport, count)})`);
      }
      rows.push({ ...row, shard: index });
    }
  }
  const missingRows: string[] = [];
  for (const planned of plan) {
    const [scenario, transport] = [planned.slice(0, planned.lastIndexOf('/')), planned.slice(planned.lastIndexOf('/') + 1)];
    // A missing shard is reported above; its rows are not listed again.
    if (missingShards.includes(shardOf(scenario, transport, count))) continue;
    for (let iteration = 1; iteration <= repeat; iteration++) {
      const key = rowKey({ scenario, transport, iteration });
      if (!seen.has(key)) missingRows.push(key);
    }
  }
  if (doubled.length > 0) problems.push(`${doubled.length} row(s) doubled: ${some(doubled)}`);
  if (missingRows.length > 0) problems.push(`${missingRows.length} planned row(s) missing: ${some(missingRows)}`);
  if (unplanned.length > 0) problems.push(`${unplanned.length} row(s) not in the plan: ${some(unplanned)}`);
  if (misplaced.length > 0) problems.push(`${misplaced.length} row(s) in the wrong shard (another sharding rule): ${some(misplaced)}`);
  if (problems.length > 0) throw new MergeError(problems);

  const ordered = [...files].sort((a, b) => (a.results.options.shard?.index ?? 1) - (b.results.options.shard?.index ?? 1));
  const shards: ShardRecord[] = ordered.map(({ file, results }) => ({
    index: results.options.shard?.index ?? 1,
    count,
    file,
    environment: results.environment,
    anchors: results.anchors ?? [],
    rows: results.results.length,
    failedRows: results.results.filter((r) => r.status === 'fail').length,
    ...(results.totals ? { totals: results.totals } : {}),
  }));
  const peak = (name: string): number | undefined => {
    const values = files.flatMap((f) => (f.results.totals?.[name] !== undefined ? [f.results.totals[name] as number] : []));
    return values.length > 0 ? Math.max(...values) : undefined;
  };
  const base = (ordered[0] as ShardFile).results;
  const { shard: _shard, ...options } = base.options;
  return {
    environment: base.environment,
    options,
    anchors: base.anchors ?? [],
    results: inRunOrder(
      rows.map((r) => ({ ...r, iteration: r.iteration ?? 1 })),
      base.options.seed,
    ),
    totals: computeTotals(rows, peak('helperPeakRssBytes'), peak('clientPeakRssBytes') ?? 0),
    plan: { rows: [...plan].sort() },
    shards,
  };
}
