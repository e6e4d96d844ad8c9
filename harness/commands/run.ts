/**
 * `fdbridge run`: every selected scenario on every selected transport, under
 * the leak oracle; a progress line per row, a summary matrix, results.json
 * and the HTML report. Exit status 1 on any failed row (an undeclared leak
 * fails its row), or when the filters match no scenario at all.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { transportNames, type TransportName } from '../../src';
import { PROFILES } from '../profiles';
import { DEFAULT_SEED, DEFAULT_SETTLE_MS, discoverScenarios, planRows, runScenarios, type RunnerOptions } from '../runner';
import { progressLine, summaryTable } from '../summary';
import type { ResultsFile } from '../types';
import { UsageError } from './usage';

export const USAGE = `run [--transport a,b] [--scenario PATTERN] [--bench] [--repeat N] [--seed S] [--shard i/n]
          [--json FILE] [--html FILE] [--profile ${PROFILES.map((p) => p.name).join('|')}] [--timeout MS] [--settle MS]
          [--scenarios DIR] [--bench-time MS] [--list]
      Run scenarios x transports under the fd-leak oracle. PATTERN: a substring, or a glob (* ?)
      of the whole name; commas separate alternatives. Default seed ${DEFAULT_SEED}. --shard 1/2 and 2/2
      together run every row exactly once. --list prints the rows in order without running them.`;

function positiveInt(name: string, text: string, min = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be an integer >= ${min}, not ${text}`);
  return n;
}

/** Parses `i/n` (1 <= i <= n). */
export function parseShard(text: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text);
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || count < 1 || index < 1 || index > count) throw new UsageError(`--shard must be i/n with 1 <= i <= n, not ${text}`);
  return { index, count };
}

function parseTransports(text: string | undefined): TransportName[] | undefined {
  if (text === undefined) return undefined;
  const known = transportNames();
  const list = text.split(',').filter((t) => t !== '');
  for (const t of list) {
    if (!known.includes(t as TransportName)) throw new UsageError(`--transport: unknown transport ${t}; use ${known.join(', ')}`);
  }
  return [...new Set(list)] as TransportName[];
}

/** Writes `text` to `path` (creating its directory) through a temporary file, so readers never see half a file. */
export function writeFileAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Writes the HTML report of `results` to `path` (the writer is loaded only when asked for). */
export function writeHtml(results: ResultsFile, path: string): void {
  let mod: { writeHtmlReport(results: ResultsFile, path: string): void };
  try {
    // Loaded only for --html; harness/report-html.ts is its own part of the project.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('../report-html') as typeof mod;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new Error('--html: the HTML report writer (harness/report-html.ts) is missing from this build', { cause: err });
    }
    throw err;
  }
  mkdirSync(dirname(path), { recursive: true });
  mod.writeHtmlReport(results, path);
}

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`usage: fdbridge ${USAGE}\n`);
    return 0;
  }
  const { values } = parseArgs({
    args: argv,
    options: {
      transport: { type: 'string' },
      scenario: { type: 'string' },
      bench: { type: 'boolean', default: false },
      repeat: { type: 'string' },
      seed: { type: 'string' },
      shard: { type: 'string' },
      json: { type: 'string' },
      html: { type: 'string' },
      profile: { type: 'string', default: 'default' },
      timeout: { type: 'string' },
      settle: { type: 'string' },
      scenarios: { type: 'string' },
      'bench-time': { type: 'string' },
      list: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!PROFILES.some((p) => p.name === values.profile)) {
    throw new UsageError(`--profile: unknown profile ${values.profile}; use ${PROFILES.map((p) => p.name).join(', ')}`);
  }
  const seed = values.seed === undefined ? DEFAULT_SEED : positiveInt('--seed', values.seed, 0);
  if (seed > 0xffffffff) throw new UsageError('--seed must fit in 32 bits');
  const transports = parseTransports(values.transport);
  const options: RunnerOptions = {
    bench: values.bench ?? false,
    repeat: values.repeat === undefined ? 1 : positiveInt('--repeat', values.repeat),
    seed,
    profile: values.profile as string,
    ...(transports ? { transports } : {}),
    ...(values.scenario !== undefined ? { scenario: values.scenario } : {}),
    ...(values.shard !== undefined ? { shard: parseShard(values.shard) } : {}),
    ...(values.timeout !== undefined ? { timeoutMs: positiveInt('--timeout', values.timeout) } : {}),
    settleMs: values.settle === undefined ? DEFAULT_SETTLE_MS : positiveInt('--settle', values.settle, 0),
    ...(values.scenarios !== undefined ? { scenariosDir: resolve(values.scenarios) } : {}),
    ...(values['bench-time'] !== undefined ? { benchOptions: { time: positiveInt('--bench-time', values['bench-time']) } } : {}),
  };
  const out = (line: string): void => void process.stdout.write(`${line}\n`);

  if (values.list) {
    const plan = planRows(
      discoverScenarios(options.scenariosDir).map((l) => l.scenario),
      options,
    );
    for (const r of plan.rows) out(`${r.scenario.name} ${r.transport}${r.iteration > 1 ? ` ${r.iteration}` : ''}`);
    return plan.matched === 0 ? 1 : 0;
  }

  const started = performance.now();
  out(
    `fdbridge run: seed ${seed}${values.seed === undefined ? ' (default; --seed S for another order)' : ''}, profile ${options.profile}` +
      `${options.shard ? `, shard ${options.shard.index}/${options.shard.count}` : ''}${options.bench ? ', with latency' : ''}`,
  );
  const { results, matched } = await runScenarios({
    ...options,
    onRowEnd: (r, i, total) => out(progressLine(r, i, total)),
    onInfo: (line) => out(`  ${line}`),
  });
  if (matched === 0) {
    process.stderr.write(`fdbridge run: no scenario matched (profile ${options.profile}${options.scenario ? `, --scenario ${options.scenario}` : ''})\n`);
  }
  out('');
  out(summaryTable(results, performance.now() - started));
  const failed = results.results.filter((r) => r.status === 'fail');
  if (failed.length > 0) {
    out('\nto rerun a failed row:');
    for (const r of failed.slice(0, 20)) out(`  npx fdbridge run --seed ${seed} --scenario '${r.scenario}' --transport ${r.transport}`);
  }
  if (values.json !== undefined) {
    writeFileAtomic(values.json, `${JSON.stringify(results, null, 2)}\n`);
    out(`wrote ${values.json}`);
  }
  if (values.html !== undefined) {
    writeHtml(results, values.html);
    out(`wrote ${values.html}`);
  }
  return failed.length > 0 || matched === 0 ? 1 : 0;
}
