/**
 * `fdbridge run` over the row-process fixture scenarios
 * (test/fixtures/row-process-scenarios) on the direct transport, and a row
 * of its results file by scenario name.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { inRunOrder } from '../../harness/runner';
import type { ResultRow, ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { runCli } from './processes';

export const ROW_PROCESS_SCENARIOS = join(packageRoot, 'dist', 'test', 'fixtures', 'row-process-scenarios');

let counter = 0;

/** Runs `fdbridge run` with `args` (results into a new file in `dir`; `env` added to its environment) and reads its results file. */
export async function runRowProcessScenarios(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<ResultsFile> {
  const json = join(dir, `results-${++counter}.json`);
  const r = await runCli(['run', '--settle', '300', '--transport', 'direct', ...args, '--json', json], {
    env: { ...env, FDBRIDGE_SCENARIOS_DIR: ROW_PROCESS_SCENARIOS },
  });
  try {
    return JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
  } catch {
    throw new Error(`no results file (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** The row of `scenario` in `rs`. */
export function resultRow(rs: ResultsFile, scenario: string): ResultRow {
  const found = rs.results.find((r) => r.scenario === scenario);
  if (!found) throw new Error(`no row ${scenario}`);
  return found;
}

/** The first seed whose run order has `first` right before `next` (on direct): their rows then share a row process, in that order. */
export function seedWith(first: string, next: string): number {
  for (let seed = 1; ; seed++) {
    const order = inRunOrder(
      [first, next].map((scenario) => ({ scenario, transport: 'direct', iteration: 1 })),
      seed,
    ).map((r) => r.scenario);
    if (order[0] === first) return seed;
  }
}
