/**
 * `fdbridge bench` end to end, as a subprocess: tinybench is ESM-only and
 * jest cannot load it, so nothing here imports the bench modules (type
 * imports are erased). Checks the JSON's shape and what must hold whatever
 * the machine's speed: every transport ran (or was skipped as unsupported),
 * the long run gave back every fd on both sides, every latency is a positive
 * finite number, every ratio was computed. No timing assertions: the numbers
 * themselves are the bench's output, not a test's verdict.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { transportNames } from '../../src';
import { distPath } from '../../src/paths';
import type { BenchFile } from '../../harness/cli/bench';
import type { Latency } from '../../harness/types';

const execFileAsync = promisify(execFile);
const COUNT = 2000;

function expectLatency(l: Latency | undefined, what: string): void {
  expect(l).toBeDefined();
  for (const key of ['meanUs', 'p50Us', 'p99Us', 'samples', 'opsPerSec'] as const) {
    const v = (l as Latency)[key];
    if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new Error(`${what}.${key} is ${String(v)}, not a positive finite number`);
    }
  }
  expect(Number.isInteger(l?.samples)).toBe(true);
}

describe('fdbridge bench (subprocess)', () => {
  let dir: string;
  let file: BenchFile;
  let stdout: string;
  let html: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-bench-test-'));
    const json = join(dir, 'bench.json');
    const page = join(dir, 'bench.html');
    // Small budgets: this checks the plumbing, not the speed.
    ({ stdout } = await execFileAsync(
      process.execPath,
      [distPath('harness/cli.js'), 'bench', '--time', '40', '--rounds', '2', '--count', String(COUNT), '--clients', '8,1', '--relay-mib', '8', '--json', json, '--html', page],
      // No time limit of its own: the bench's budgets (--time, --rounds, --count) end it.
      { maxBuffer: 16 * 1024 * 1024 },
    ));
    file = JSON.parse(readFileSync(json, 'utf8')) as BenchFile;
    html = readFileSync(page, 'utf8');
  }, 90_000);

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('records the environment and the options', () => {
    expect(file.environment.node).toBe(process.version);
    expect(file.environment.cores).toBeGreaterThan(0);
    expect(typeof file.environment.kernel).toBe('string');
    expect(typeof file.environment.cpuModel).toBe('string');
    expect(file.environment.gitCommit).toMatch(/^([0-9a-f]{40}(\+dirty)?|unknown)$/);
    expect(file.options).toMatchObject({ timeMs: 40, rounds: 2, count: COUNT, fdsPerMessage: 253, pipelineDepth: 64, clients: [1, 8] });
    expect(file.options.transports).toEqual(transportNames().filter((t) => t !== 'remote'));
    expect(file.ratioBasis).toBe('p50Us');
    expect(file.loadAverage.start).toHaveLength(3);
    expect(file.loadAverage.end).toHaveLength(3);
  });

  test('measures every anchor: Node handle passing and JSON IPC, C single (blocking, the far side or both on event loops) and batch', () => {
    const names = file.anchors.map((a) => a.name);
    expect(names).toEqual(
      expect.arrayContaining(['node-handle-passing', 'node-ipc-json', 'c-scm-rights', 'c-scm-rights-peer-loop', 'c-scm-rights-loop', 'c-scm-rights-batch', 'c-scm-rights-batch-keep']),
    );
    for (const name of ['c-scm-rights-peer-loop', 'c-scm-rights-loop']) expect(file.anchors.find((a) => a.name === name)?.fdsPerMessage).toBe(1);
    // The event-loop floors of the two latency goals: recorded each round, not judged.
    for (const goal of ['peerLoopFloorVsC', 'loopFloorVsC']) {
      const r = file.ratios.find((x) => x.goal === goal && x.transport === 'c-anchor');
      expect(r?.met).toBeNull();
      expect(r?.rounds).toHaveLength(2);
      expect(Number.isFinite(r?.value) && (r?.value as number) > 0).toBe(true);
    }
    for (const a of file.anchors) expectLatency(a.latency, `anchor ${a.name}`);
    expect(file.anchors.find((a) => a.name === 'c-scm-rights-batch')?.fdsPerMessage).toBe(253);
    expect(file.anchors.find((a) => a.name === 'c-scm-rights-batch-keep')?.fdsPerMessage).toBe(253);
    const same = file.anchors.find((a) => a.name === 'c-scm-rights')?.sameCpuFraction;
    expect(same !== undefined && same >= 0 && same <= 1).toBe(true);
  });

  test('beside a pidfd transport that ran, the C pull anchor and its ratio', () => {
    const pidfd = file.transports.find((t) => t.transport === 'pidfd');
    // Where this process may not pull (no ptrace rights), neither may the C peer.
    if (pidfd?.skipped !== undefined) return;
    expect(file.anchors.find((a) => a.name === 'c-pidfd-batch')?.fdsPerMessage).toBe(253);
    const r = file.ratios.find((x) => x.goal === 'batchVsCPull' && x.transport === 'pidfd');
    expect(r?.met).toBeNull();
    expect(r?.rounds).toHaveLength(2);
  });

  test('every transport ran (or is unsupported here) with every measurement', () => {
    expect(file.transports.map((t) => t.transport)).toEqual(transportNames().filter((t) => t !== 'remote'));
    for (const t of file.transports) {
      expect(t.error).toBeUndefined();
      if (t.skipped !== undefined) {
        // Only an UnsupportedError skips a transport (pidfd without ptrace rights).
        expect(t.skipped).toMatch(/UnsupportedError/);
        continue;
      }
      expectLatency(t.latency, `${t.transport}.latency`);
      expectLatency(t.batch?.latency, `${t.transport}.batch.latency`);
      expect(t.batch?.fdsPerMessage).toBe(253);
      expect(t.batch?.fdsPerSec).toBeGreaterThan(0);
      if (t.sameCpuFraction !== undefined) expect(t.sameCpuFraction >= 0 && t.sameCpuFraction <= 1).toBe(true);
      expect(t.pipelining?.depth).toBe(64);
      expect(t.pipelining?.duplications).toBeGreaterThanOrEqual(2 * 1024);
      for (const v of [t.pipelining?.sequentialOpsPerSec, t.pipelining?.pipelinedOpsPerSec, t.pipelining?.gain]) {
        expect(Number.isFinite(v) && (v as number) > 0).toBe(true);
      }
    }
    for (const name of ['child', 'helper']) expectLatency(file.transports.find((t) => t.transport === name)?.syncLatency, `${name}.syncLatency`);
    // child and helper at least must have run: the goals are about them.
    for (const name of ['direct', 'worker', 'child', 'helper']) {
      expect(file.transports.find((t) => t.transport === name)?.latency).toBeDefined();
    }
  });

  test('the long run gives back every fd, in the client and in the command process', () => {
    for (const t of file.transports) {
      if (t.skipped !== undefined) continue;
      const lr = t.longRun;
      expect(lr).toBeDefined();
      expect(lr?.duplications).toBe(COUNT);
      expect(lr?.clientFdsEnd).toBe(lr?.clientFdsStart);
      expect(lr?.commandFdsEnd).toBe(lr?.commandFdsStart);
      expect(lr?.fdsReturned).toBe(true);
      for (const key of [
        'clientRssGrowthMB',
        'commandRssGrowthMB',
        'clientRssGrowthSecondHalfMB',
        'commandRssGrowthSecondHalfMB',
        'clientHeapUsedGrowthMB',
        'commandHeapUsedGrowthMB',
      ] as const) {
        expect(Number.isFinite(lr?.[key])).toBe(true);
      }
    }
  });

  test('computes every goal ratio from this run, judged where a goal is set', () => {
    const find = (goal: string, transport: string) => file.ratios.find((r) => r.goal === goal && r.transport === transport);
    for (const transport of ['child', 'helper']) {
      for (const goal of ['roundTripVsC', 'syncRoundTripVsC', 'nodeHandleVsRoundTrip', 'batchFdsPerSec', 'batchVsC', 'batchVsCKeep', 'pipeliningGain', 'longRunRssGrowthMB']) {
        const r = find(goal, transport);
        expect(r).toBeDefined();
        expect(typeof r?.met).toBe('boolean');
      }
    }
    for (const transport of ['direct', 'worker']) {
      expect(typeof find('usPerDup', transport)?.met).toBe('boolean');
      expect(find('pipeliningGain', transport)?.met).toBeNull();
    }
    for (const r of file.ratios) {
      expect(Number.isFinite(r.value)).toBe(true);
      expect(r.rounds.length).toBeGreaterThan(0);
      expect(r.rounds.every((v) => Number.isFinite(v))).toBe(true);
    }
    // Latency ratios are per round: one value per round.
    expect(find('roundTripVsC', 'child')?.rounds).toHaveLength(2);
    // Every goal about time has its p99 counterpart; RSS has none.
    for (const r of file.ratios) {
      if (r.goal === 'longRunRssGrowthMB') {
        expect(r.p99).toBeUndefined();
        continue;
      }
      expect(r.p99).toBeDefined();
      expect(Number.isFinite(r.p99?.value) && (r.p99?.value as number) > 0).toBe(true);
      expect(r.p99?.rounds).toHaveLength(r.rounds.length);
    }
  });

  test('judges round trip, batch and sync against their targets (<= 1.35, >= 0.85, <= 1.1) and prints each target as written', () => {
    const targets: Record<string, ['<=' | '>=', number]> = {
      roundTripVsC: ['<=', 1.35],
      batchVsC: ['>=', 0.85],
      batchVsCKeep: ['>=', 0.85],
      syncRoundTripVsC: ['<=', 1.1],
    };
    for (const transport of ['child', 'helper']) {
      for (const [goal, [comparison, target]] of Object.entries(targets)) {
        const r = file.ratios.find((x) => x.goal === goal && x.transport === transport);
        expect([r?.comparison, r?.target]).toEqual([comparison, target]);
        expect(r?.met).toBe(comparison === '<=' ? (r?.value as number) <= target : (r?.value as number) >= target);
        const line = stdout.split('\n').find((l) => l.includes(r?.description as string));
        expect(line).toContain(`${comparison} ${target}`);
        expect(html).toContain(`${comparison === '<=' ? '&lt;=' : '&gt;='} ${target}<`);
      }
    }
  });

  test('measures the helper against the C frame server at every client count, in both modes', () => {
    const t = file.throughput;
    expect(t?.error).toBeUndefined();
    expect(t?.clients).toEqual([1, 8]);
    for (const server of ['helper', 'c-frame-server'] as const) {
      for (const mode of ['dup', 'call'] as const) {
        for (const clients of [1, 8]) {
          const p = t?.points.find((x) => x.server === server && x.mode === mode && x.clients === clients);
          expect(p).toBeDefined();
          expect(p?.rounds).toHaveLength(2);
          for (const v of [p?.opsPerSec, p?.p50Us, p?.p99Us, p?.requests]) expect(Number.isFinite(v) && (v as number) > 0).toBe(true);
        }
        const ratio = file.ratios.find((r) => r.goal === 'helperThroughputVsC' && r.clients === 8 && r.description.includes(mode === 'dup' ? 'dups/s' : 'calls/s'));
        // Judged only at 64 clients; recorded at the others.
        expect(ratio?.met).toBeNull();
      }
    }
  });

  test('writes an HTML page with the goals, their p99s and the throughput curve', () => {
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain("default-src 'none'");
    expect(html).toContain('<svg class="chart"');
    expect(html).not.toMatch(/<script/i);
    for (const r of file.ratios) expect(html).toContain(r.description.replace(/'/g, '&#39;'));
    expect(html).toContain('at p99');
  });

  test('the remote row: MB/s through a relayed pipe, beside a local pipe and the via alone, each round, and their ratio', () => {
    const relay = file.relay;
    expect(file.relayError).toBeUndefined();
    expect(relay).toMatchObject({ bytes: 8 << 20, rounds: 2, goal: 0.5 });
    for (const series of [relay!.samples.localPipe, relay!.samples.viaAlone, relay!.samples.relay]) {
      expect(series).toHaveLength(2);
      for (const v of series) expect(v).toBeGreaterThan(0);
    }
    const ratios = relay!.samples.relay.map((r, i) => r / relay!.samples.viaAlone[i]!);
    expect(relay!.relayToViaAlone).toBeCloseTo((ratios[0]! + ratios[1]!) / 2, 6);
    expect(relay!.met).toBe(relay!.relayToViaAlone >= 0.5);
    expect(stdout).toMatch(/relay \/ via alone\s+\d+\.\d\d \(goal >= 0\.5: (met|NOT met)\)/);
  });

  test('prints a table with every transport and anchor, and the goals', () => {
    for (const t of file.transports) expect(stdout).toContain(t.transport);
    for (const a of file.anchors) expect(stdout).toContain(`anchor ${a.name}`);
    expect(stdout).toMatch(/child round trip \/ C ping-pong/);
    expect(stdout).toMatch(/helper throughput against the C frame server/);
    expect(stdout).toMatch(/calls\/s, 8 clients/);
  });
});
