/**
 * `fdbridge run` over the row-process fixture scenarios
 * (test/fixtures/row-process-scenarios) on the direct transport, and a row
 * of its results file by scenario name.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { ResultRow, ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { runCli } from './processes';

export const ROW_PROCESS_SCENARIOS = join(packageRoot, 'dist', 'test', 'fixtures', 'row-process-scenarios');

let counter = 0;

/** Runs `fdbridge run` with `args` (results into a new file in `dir`) and reads its results file. */
export async function runRowProcessScenarios(dir: string, args: string[]): Promise<ResultsFile> {
  const json = join(dir, `results-${++counter}.json`);
  const r = await runCli(['run', '--settle', '300', '--transport', 'direct', ...args, '--json', json], {
    env: { FDBRIDGE_SCENARIOS_DIR: ROW_PROCESS_SCENARIOS },
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
