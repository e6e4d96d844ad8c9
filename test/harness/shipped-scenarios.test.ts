/**
 * Every shipped scenario (scenarios/, built into dist/scenarios) run with
 * the CLI, as `fdbridge run` runs it, ends as it declares: 'pass', the
 * expected failure its `expect` names ('expected-fail'), or 'skip' where the
 * transport lacks a capability it `needs`. A failing row is named with its
 * verdict, error and leaks.
 *
 * Rows: each scenario that runs on the direct transport, on direct; each
 * other one on one process-crossing transport it declares (helper where it
 * declares it, else the first of its own in PREFERRED), so every scenario
 * runs once. One CLI run per transport.
 * Left out: the scenarios tagged 'soak' (minutes a row;
 * interleave-mixed-operations runs the same mix, shorter).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DEFAULT_TIMEOUT_MS, discoverScenarios } from '../../harness/runner';
import type { ResultRow, ResultsFile, Scenario, Status } from '../../harness/types';
import { missingCapabilities } from '../../src/capabilities';
import { packageRoot } from '../../src/paths';
import { transportNames, type TransportName } from '../../src/transports';
import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

const SCENARIOS_DIR = join(packageRoot, 'dist', 'scenarios');
/** The row time limit `fdbridge run` has by default (profile 'all', which selects every tag, has 30 min for soak rows). */
const ROW_TIMEOUT_MS = scaled(DEFAULT_TIMEOUT_MS);
/** Which of its transports a scenario runs on here: the first of these it declares. */
const PREFERRED: readonly TransportName[] = ['direct', 'helper', 'child', 'pidfd', 'worker', 'remote'];

const shipped = discoverScenarios(SCENARIOS_DIR)
  .map((l) => l.scenario)
  .filter((s) => !(s.tags ?? []).includes('soak'));

function transportFor(scenario: Scenario): TransportName {
  const declared = scenario.transports ?? transportNames();
  const chosen = PREFERRED.find((t) => declared.includes(t));
  if (chosen === undefined) throw new TypeError(`${scenario.name} declares no transport of ${PREFERRED.join(', ')}`);
  return chosen;
}

/** Scenarios by the transport they run on here, direct first. */
const byTransport = new Map<TransportName, Scenario[]>(PREFERRED.map((t) => [t, []]));
for (const s of shipped) byTransport.get(transportFor(s))?.push(s);
const runs = [...byTransport].filter(([, scenarios]) => scenarios.length > 0);

/** The verdict `scenario` declares on `transport`, and why. */
function declaredVerdict(scenario: Scenario, transport: TransportName): { status: Status; why: string } {
  const missing = missingCapabilities(transport, scenario.needs);
  if (missing !== undefined) return { status: 'skip', why: missing };
  const expect = scenario.expect ?? 'pass';
  return expect === 'pass' ? { status: 'pass', why: 'declared pass' } : { status: 'expected-fail', why: `declared expect '${expect}'` };
}

/** A row whose verdict is not the declared one, in a line: what it was, what was declared, and its error (which names its leaks). */
function wrongRow(row: ResultRow, scenario: Scenario | undefined): string | undefined {
  const label = `${row.scenario}/${row.transport}`;
  if (scenario === undefined) return `${label}: not a shipped scenario`;
  const declared = declaredVerdict(scenario, row.transport);
  if (row.status === declared.status) return undefined;
  return `${label}: ${row.status}, not ${declared.status} (${declared.why})${row.error === undefined ? '' : `: ${row.error}`}`;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-shipped-scenarios-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('every shipped scenario (but soak) has a row here', () => {
  const names = runs.flatMap(([, scenarios]) => scenarios.map((s) => s.name)).sort();
  expect(names).toEqual(shipped.map((s) => s.name).sort());
  expect(runs[0]?.[0]).toBe('direct');
});

describe.each(runs)('on %s', (transport, scenarios) => {
  test(
    `each of its ${scenarios.length} scenario(s) ends as it declares`,
    async () => {
      const json = join(dir, `${transport}.json`);
      const names = scenarios.map((s) => s.name);
      const r = await runCli([
        'run',
        '--scenarios',
        SCENARIOS_DIR,
        '--profile',
        'all',
        '--transport',
        transport,
        '--scenario',
        names.join(','),
        '--timeout',
        String(ROW_TIMEOUT_MS),
        '--json',
        json,
      ]);
      let results: ResultsFile;
      try {
        results = JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
      } catch {
        throw new Error(`no results file (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
      }
      const byName = new Map(shipped.map((s) => [s.name, s]));
      // A name is a substring pattern: a longer name holding it also runs, and is checked the same way.
      const wrong = results.results.map((row) => wrongRow(row, byName.get(row.scenario))).filter((w) => w !== undefined);
      const ran = new Set(results.results.map((row) => row.scenario));
      for (const name of names) if (!ran.has(name)) wrong.push(`${name}/${transport}: no row`);
      expect(wrong).toEqual([]);
      expect(r.code === 0 ? 0 : { code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual(0);
    },
    // A hang guard only: the run ends by its rows' time limits.
    (scenarios.length + 2) * ROW_TIMEOUT_MS,
  );
});
