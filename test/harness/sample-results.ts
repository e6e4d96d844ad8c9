/**
 * A synthetic results.json for the report tests: several scenarios x
 * transports, every status, declared and undeclared leaks, latencies and
 * anchors, a repeated row, and hostile strings wherever results carry text.
 */
import type { Latency, Leak, ResultRow, ResultsFile } from '../../harness/types';
import type { TransportName } from '../../src';

export const HOSTILE_SCENARIO = '<script>alert("scenario")</script>';
export const QUOTE_SCENARIO = 'quote" onmouseover="alert(1)" x=\'';
export const HOSTILE_ERROR = '</pre><img src=x onerror=alert(1)> & "dq" \'sq\' <script>alert(2)</script> see http://evil.example/x.js';
export const HOSTILE_TARGET = '/tmp/<b>evil</b> "q" \'a\' & \u0000\u0007 -> ]]>';
export const HOSTILE_NOTE = '<style>body{display:none}</style> @import url(http://evil.example/x.css);';
export const HOSTILE_TRANSPORT = '<i>odd</i>' as TransportName;

/**
 * Fields a newer runner adds (closed, expect, iteration), attached without
 * naming them in a ResultRow literal, so this compiles with either version of
 * the types.
 */
function withExtras(row: ResultRow, extras: { closed?: Leak[]; expect?: string; iteration?: number }): ResultRow {
  return Object.assign(row, extras);
}

function lat(p50Us: number, p99Us = p50Us * 2.5): Latency {
  return { meanUs: p50Us * 1.2, p50Us, p99Us, samples: 2000, opsPerSec: 1e6 / (p50Us * 1.2) };
}

const TRANSPORTS: TransportName[] = ['direct', 'worker', 'child', 'helper'];
/** Per-transport base cost, µs. */
const BASE: Record<string, number> = { direct: 14, worker: 55, child: 120, helper: 135 };

const SCENARIOS = [
  'pass-regular-file',
  'pass-pipe',
  'pass-connected-socket',
  'pass-listening-socket',
  'pass-memfd',
  'pass-directory',
  'dup-many-fds-253',
  'close-after-dup',
];

export function sampleResults(): ResultsFile {
  const results: ResultRow[] = [];
  for (const scenario of SCENARIOS) {
    for (const transport of TRANSPORTS) {
      const factor = scenario === 'dup-many-fds-253' ? 7 : 1 + (scenario.length % 5) / 10;
      results.push({
        scenario,
        transport,
        status: 'pass',
        leaks: [],
        latency: lat(BASE[transport]! * factor),
        durationMs: 12 + scenario.length,
      });
    }
  }
  // A reproduced bug: a declared leak, caught (expected-fail), beside a scenario that does the same right.
  for (const transport of TRANSPORTS) {
    results.push(
      withExtras(
        {
          scenario: 'seed-bug-leaks-dup-on-error',
          transport,
          status: 'expected-fail',
          leaks: [{ pid: 4242, role: 'helper', fd: 17, target: 'socket:[123456]' }],
          error: 'caught: helper kept fd 17 after a failed reply',
          notes: ['faithful port of the seed bug'],
        },
        { expect: 'leak' },
      ),
    );
    results.push({ scenario: 'dup-on-error-closes-fds', transport, status: 'pass', leaks: [], latency: lat(BASE[transport]! * 1.1) });
  }
  results.push(
    {
      scenario: HOSTILE_SCENARIO,
      transport: 'direct',
      status: 'fail',
      leaks: [
        { pid: 1001, role: 'client', fd: 23, target: HOSTILE_TARGET },
        { pid: 1002, role: 'child', fd: 5, target: 'pipe:[998877]' },
      ],
      error: HOSTILE_ERROR,
      latency: lat(30),
      notes: [HOSTILE_NOTE],
      metrics: { faultsInjected: 3, '<m>': 1.5 },
    },
    { scenario: HOSTILE_SCENARIO, transport: 'worker', status: 'skip', leaks: [], error: 'no memfd_create on this <kernel>' },
    { scenario: QUOTE_SCENARIO, transport: 'child', status: 'pass', leaks: [], latency: lat(150) },
    // Undeclared leak on a row that otherwise passed (a runner would mark it failed; the page must still show it).
    { scenario: QUOTE_SCENARIO, transport: 'helper', status: 'pass', leaks: [{ pid: 77, role: 'worker', fd: 9, target: 'anon_inode:[eventfd]' }] },
    // --repeat: the same scenario and transport twice.
    // (listed second pass first: the matrix orders a cell's entries by pass)
    withExtras(
      { scenario: 'truncate-far-side', transport: 'helper', status: 'fail', leaks: [], error: 'expected EMFILE, got a reply', latency: lat(400) },
      { iteration: 2, closed: [{ pid: 4242, role: 'helper', fd: 3, target: '/dev/null' }] },
    ),
    withExtras({ scenario: 'truncate-far-side', transport: 'helper', status: 'pass', leaks: [], latency: lat(380) }, { iteration: 1 }),
    // A transport outside options.transports, with a hostile name, no latency.
    { scenario: 'pass-pipe', transport: HOSTILE_TRANSPORT, status: 'skip', leaks: [] },
  );

  return {
    environment: {
      node: 'v20.19.0',
      kernel: '6.1.0-test',
      cpuModel: 'Test CPU <model> @ 3.0GHz',
      cores: 8,
      gitCommit: '0123456789abcdef0123456789abcdef01234567',
      platform: 'linux',
      hostname: 'ci-runner',
      date: '2025-01-02T03:04:05.000Z',
    },
    options: Object.assign(
      { transports: TRANSPORTS, bench: true, repeat: 2, seed: 1234567, shard: { index: 2, count: 3 }, profile: 'ci<&>' },
      { timeoutMs: 30000 },
    ),
    anchors: [
      { name: 'node child.send(server)', latency: lat(180, 420) },
      { name: 'C SCM_RIGHTS ping-pong', latency: lat(9, 21) },
    ],
    results,
    totals: { peakRssBytes: 123456789, repliesLost: 0 },
  };
}
