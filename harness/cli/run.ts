/**
 * `fdbridge run`: every selected scenario on every selected transport, under
 * the leak oracle; a progress line per row, a summary matrix, results.json
 * and the HTML report. Exit status 1 on any failed row (an undeclared leak
 * fails its row); 2 when the filters match no scenario at all.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { transportNames, type TransportName } from '../../src';
import { killIfSpawned } from '../../src/child-process';
import { fdtrackLibrary, trackingEnvironment } from '../../src/fd-track';
import { onStopSignals, signalStatus } from '../exit-cleanup';
import { PROFILES } from '../profiles';
import { DEFAULT_SEED, DEFAULT_SETTLE_MS, DEFAULT_TIMEOUT_MS, discoverScenarios, planRows, runScenarios, type RunnerOptions } from '../runner';
import { progressLine, summaryTable, terminalName } from '../summary';
import type { ResultRow, ResultsFile } from '../types';
import { writeFileAtomic } from '../write-file';
import { cliInvocation, EXIT, parseSubcommandArgs, parseInteger, parseTimeout, shellWord, UsageError } from './usage';

export const USAGE = `run [--transport a,b] [--scenario PATTERN] [--scenario-name NAME]... [--profile NAME]
          [--scenarios DIR] [--list] [--seed S] [--repeat N] [--shard i/n] [--timeout MS] [--settle MS]
          [--bench] [--bench-time MS] [--json FILE] [--html FILE] [--track-fds]
      Run scenarios x transports under the fd-leak oracle: a line per row, a matrix, and
      optionally results.json and an HTML report.

  --transport a,b     transports to run (default: every one a scenario supports)
  --scenario PATTERN  a substring, or a glob (* ?) of the whole name; commas separate alternatives
  --scenario-name NAME
                      the scenario named exactly NAME (no pattern: * ? , are plain characters),
                      or as the output shows a name with unseen characters ("a\\nb", JSON);
                      repeat it for more; with --scenario, a scenario must match both
  --profile NAME      ${PROFILES.map((p) => p.name).join(', ')} (default: default, which leaves out fault and soak)
  --scenarios DIR     load *.scenario.ts (no build step) and *.scenario.js from DIR (default: the
                      built-in ones, or $FDBRIDGE_SCENARIOS_DIR)
  --list              print the selected rows in run order; run nothing
  --seed S            the row order and every row's rng (default ${DEFAULT_SEED})
  --repeat N          run every row N times
  --shard i/n         run shard i of n: the shards 1/n..n/n together run every row exactly once
  --timeout MS        a row running longer fails (default ${DEFAULT_TIMEOUT_MS}); one whose thread is
                      blocked then (a synchronous wait, a busy loop) has its row process killed; a
                      timer a row's run() left that has not run this long after it is cancelled and
                      fails the row
  --settle MS         a leak counts only if it lasts this long (default ${DEFAULT_SETTLE_MS});
                      --timeout and --settle take at most 2147483647 (setTimeout's range)
  --bench             measure each row's latency too
  --bench-time MS     time per latency measurement with --bench
  --json FILE         write the results (environment, options, rows, totals)
  --html FILE         write the HTML report
  --track-fds         name where each leaked fd was opened: the JS stack, and the native stack
                      (an LD_PRELOAD recorder, compiled with $CC on first use); slower

exit status: 0 every row passed; 1 a row failed (an undeclared leak fails its row);
2 usage error, or no scenario matched; 3 error.`;

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
  if (list.length === 0) throw new UsageError(`--transport needs at least one of ${known.join(', ')}`);
  for (const t of list) {
    if (!known.includes(t as TransportName)) throw new UsageError(`--transport: unknown transport ${t}; use ${known.join(', ')}`);
  }
  return [...new Set(list)] as TransportName[];
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
  const { values } = parseSubcommandArgs(argv, {
    transport: { type: 'string' },
    scenario: { type: 'string' },
    'scenario-name': { type: 'string', multiple: true },
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
    'track-fds': { type: 'boolean', default: false },
  });
  if (values['track-fds'] && !process.env['FDBRIDGE_FDTRACK_DIR']) return runTracked(argv);
  if (!PROFILES.some((p) => p.name === values.profile)) {
    throw new UsageError(`--profile: unknown profile ${values.profile}; use ${PROFILES.map((p) => p.name).join(', ')}`);
  }
  const seed = values.seed === undefined ? DEFAULT_SEED : parseInteger('--seed', values.seed, 0);
  if (seed > 0xffffffff) throw new UsageError('--seed must fit in 32 bits');
  const transports = parseTransports(values.transport);
  const options: RunnerOptions = {
    bench: values.bench ?? false,
    repeat: values.repeat === undefined ? 1 : parseInteger('--repeat', values.repeat),
    seed,
    profile: values.profile as string,
    ...(transports ? { transports } : {}),
    ...(values.scenario !== undefined ? { scenario: values.scenario } : {}),
    ...(values['scenario-name'] !== undefined ? { scenarioNames: values['scenario-name'].map(shownName) } : {}),
    ...(values.shard !== undefined ? { shard: parseShard(values.shard) } : {}),
    ...(values.timeout !== undefined ? { timeoutMs: parseTimeout('--timeout', values.timeout) } : {}),
    settleMs: values.settle === undefined ? DEFAULT_SETTLE_MS : parseTimeout('--settle', values.settle, 0),
    ...(values.scenarios !== undefined ? { scenariosDir: resolve(values.scenarios) } : {}),
    ...(values['bench-time'] !== undefined ? { benchOptions: { time: parseInteger('--bench-time', values['bench-time']) } } : {}),
    ...(values['track-fds'] ? { trackFds: true } : {}),
  };
  const out = (line: string): void => void process.stdout.write(`${line}\n`);

  const scenarios = discoverScenarios(options.scenariosDir);
  const unknown = (options.scenarioNames ?? []).filter((name) => !scenarios.some((s) => s.scenario.name === name));
  if (unknown.length > 0) {
    throw new UsageError(`--scenario-name: no scenario is named ${unknown.map((name) => shellWord(terminalName(name))).join(', ')} (\`${cliInvocation()} run --list\` lists the rows)`);
  }
  const plan = planRows(scenarios, options);
  if (plan.matched === 0) {
    const filters = [
      `profile ${options.profile}`,
      ...(options.scenario !== undefined ? [`--scenario ${options.scenario}`] : []),
      ...(options.scenarioNames ?? []).map((name) => `--scenario-name ${shellWord(terminalName(name))}`),
      ...(transports ? [`--transport ${transports.join(',')}`] : []),
    ];
    throw new UsageError(`no scenario matches ${filters.join(', ')} (\`${cliInvocation()} run --list\` lists the rows)`);
  }
  if (values.list) {
    for (const r of plan.rows) out(`${terminalName(r.scenario.name)} ${r.transport}${r.iteration > 1 ? ` ${r.iteration}` : ''}`);
    return EXIT.ok;
  }

  const started = performance.now();
  out(
    `fdbridge run: seed ${seed}${values.seed === undefined ? ' (default; --seed S for another order)' : ''}, profile ${options.profile}` +
      `${options.shard ? `, shard ${options.shard.index}/${options.shard.count}` : ''}${options.bench ? ', with latency' : ''}`,
  );
  const { results } = await runStoppable((signal) =>
    runScenarios({
      ...options,
      signal,
      onRowEnd: (r, i, total) => out(progressLine(r, i, total)),
      onInfo: (line) => out(`  ${line}`),
    }),
  );
  out('');
  out(summaryTable(results, performance.now() - started));
  const failed = results.results.filter((r) => r.status === 'fail');
  if (failed.length > 0) {
    out('\nto rerun a failed row:');
    const same = rerunOptions(values);
    for (const r of failed.slice(0, 20)) {
      out(`  ${rerunCommand(r, seed, same)}`);
      if (r.suspect) out(`    (with ${terminalName(r.suspect.scenario)} on ${r.suspect.transport}, which ran before it and may have failed it: see its error)`);
    }
  }
  if (values.json !== undefined) {
    writeFileAtomic(values.json, `${JSON.stringify(results, null, 2)}\n`);
    out(`wrote ${values.json}`);
  }
  if (values.html !== undefined) {
    writeHtml(results, values.html);
    out(`wrote ${values.html}`);
  }
  return failed.length > 0 ? EXIT.failed : EXIT.ok;
}

/**
 * A --scenario-name value as a name: one that starts with `"` is a name as
 * terminalName shows it (a JSON string), anything else the name itself.
 */
function shownName(value: string): string {
  if (!value.startsWith('"')) return value;
  let name: unknown;
  try {
    name = JSON.parse(value);
  } catch {
    // Reported below: not a JSON string.
  }
  if (typeof name !== 'string') throw new UsageError(`--scenario-name: ${value} starts with " but is not a name as the output shows one (a JSON string)`);
  return name;
}

/**
 * The command that reruns the failed row `r`: its row alone, or, when its
 * failure may be an earlier row's doing (ResultRow.suspect), that row too,
 * which the same seed runs before it again.
 */
function rerunCommand(r: ResultRow, seed: number, same: string): string {
  const rows = r.suspect ? [r.suspect, r] : [r];
  const names = [...new Set(rows.map((x) => x.scenario))].map((name) => ` --scenario-name ${shellWord(terminalName(name))}`).join('');
  const transports = [...new Set(rows.map((x) => x.transport))].join(',');
  return `${cliInvocation()} run --seed ${seed}${names} --transport ${transports}${same}`;
}

/**
 * The options of this run, as given, that a rerun of one of its rows needs
 * to select it and to run it the same way: the profile (it selects by tag
 * and sets the time limit), the scenario directory, the time limits, and
 * --bench, --bench-time and --track-fds. Each value is quoted for the shell.
 */
function rerunOptions(values: Record<string, string | boolean | string[] | undefined>): string {
  const words: string[] = [];
  for (const name of ['profile', 'scenarios', 'timeout', 'settle', 'bench-time']) {
    const value = values[name];
    if (typeof value === 'string' && !(name === 'profile' && value === 'default')) words.push(`--${name}`, shellWord(value));
  }
  for (const name of ['bench', 'track-fds']) if (values[name] === true) words.push(`--${name}`);
  return words.map((w) => ` ${w}`).join('');
}

/**
 * Runs `work` with SIGINT, SIGTERM and SIGHUP turned into its abort signal: the
 * first one stops the run cleanly (the row's connections closed, the helper
 * daemon stopped, temporary directories removed: RunnerOptions.signal), then
 * the process exits with 128 + the signal's number. A second one exits at
 * once; the daemon is still killed and the directories removed on the way
 * out (harness/exit-cleanup.ts).
 */
async function runStoppable<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (received !== undefined) process.exit(signalStatus(signal));
    received = signal;
    process.stderr.write(`fdbridge run: ${signal}: stopping (the row's connections, the helper daemon, temporary files); again to exit at once\n`);
    controller.abort(new Error(`stopped by ${signal}`));
  };
  const forget = onStopSignals(onSignal);
  try {
    const result = await work(controller.signal);
    if (received === undefined) return result;
  } catch (err) {
    if (received === undefined) throw err;
  } finally {
    forget();
  }
  // Stopped: exit now, as the signal asked. A scenario stopped mid-row may
  // still hold a timer or a handle that would keep the process alive.
  process.exit(signalStatus(received));
}

/**
 * --track-fds: the recorders must be in every process from its start (the
 * native one is LD_PRELOADed), this one included, so the run starts again
 * under them: this same command line, with the environment of
 * src/fd-track.ts, which every process it starts inherits. Its exit status
 * is this one's.
 */
async function runTracked(argv: string[]): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-fdtrack-'));
  try {
    const library = fdtrackLibrary(dir);
    if (library.unavailable) process.stderr.write(`fdbridge run --track-fds: ${library.unavailable}\n`);
    const env = { ...process.env, ...trackingEnvironment(dir, library.path) };
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1] as string, 'run', ...argv], { stdio: 'inherit', env });
    const forward = (signal: NodeJS.Signals): void => void killIfSpawned(child, signal);
    const forget = onStopSignals(forward);
    try {
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      return code ?? (signal ? signalStatus(signal) : EXIT.error);
    } finally {
      forget();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
