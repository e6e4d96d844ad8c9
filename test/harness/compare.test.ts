/** `fdbridge compare OLD NEW`: run as a process on two synthetic results files. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Latency, ResultRow, ResultsFile } from '../../harness/types';
import { runCli, type CliRun } from '../util/processes';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-compare-test-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const lat = (p50Us: number): Latency => ({ meanUs: p50Us, p50Us, p99Us: p50Us * 2, samples: 100, opsPerSec: 1e6 / p50Us });

function file(name: string, results: ResultRow[]): string {
  const content: ResultsFile = {
    environment: { node: 'v20', kernel: '6', cpuModel: 'cpu', cores: 2, gitCommit: name, platform: 'linux-x64', date: '2026-01-01T00:00:00Z' },
    options: { transports: ['direct', 'child'], bench: true, repeat: 1, seed: 1 },
    anchors: [{ name: 'c-scm-rights', latency: lat(8) }],
    results,
  };
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(content));
  return path;
}

const compare = (...args: string[]): Promise<CliRun> => runCli(['compare', ...args]);

const pass = (scenario: string, transport: 'direct' | 'child', p50?: number): ResultRow => ({
  scenario,
  transport,
  status: 'pass',
  leaks: [],
  ...(p50 !== undefined ? { latency: lat(p50) } : {}),
});

const OLD: ResultRow[] = [
  pass('dup-pipe', 'direct', 10),
  pass('dup-pipe', 'child', 50),
  pass('dup-file', 'direct', 10),
  pass('dup-file', 'child', 50),
  pass('gone-later', 'direct'),
];

test('flags a row that started failing, one that started leaking, and one that got slower; exit 1', async () => {
  const now: ResultRow[] = [
    pass('dup-pipe', 'direct', 10.5),
    { ...pass('dup-pipe', 'child', 50), status: 'fail', error: 'AssertionError: wrong file\nmore' },
    { ...pass('dup-file', 'direct', 10), status: 'fail', leaks: [{ pid: 1, role: 'client', fd: 9, target: '/tmp/x' }], error: 'undeclared leak' },
    pass('dup-file', 'child', 80),
    pass('brand-new', 'direct'),
  ];
  const r = await compare(file('old', OLD), file('new', now));
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/started failing \(2\):\n {2}dup-file on direct: pass -> FAIL: undeclared leak\n {2}dup-pipe on child: pass -> FAIL: AssertionError: wrong file\n/);
  expect(r.stdout).toMatch(/started leaking \(1\):\n {2}dup-file on direct: 0 -> 1 undeclared/);
  expect(r.stdout).toMatch(/slower \(p50 x1\.25 or more\) \(1\):\n {2}dup-file on child: p50 50\.0 -> 80\.0 µs \(x1\.60\)/);
  expect(r.stdout).not.toMatch(/dup-pipe on direct: p50/); // 5% is noise under the threshold
  expect(r.stdout).toMatch(/missing from NEW \(1\):\n {2}gone-later on direct/);
  expect(r.stdout).toMatch(/new in NEW \(1\):\n {2}brand-new on direct/);
  expect(r.stdout).toMatch(/REGRESSED: 4 row\(s\)/);
});

test('the same results compare clean (exit 0); a threshold option moves the line', async () => {
  const same = await compare(file('a', OLD), file('b', OLD));
  expect(same.code).toBe(0);
  expect(same.stdout).toMatch(/no regressions/);
  const slower = [pass('dup-pipe', 'direct', 13), ...OLD.slice(1)];
  expect((await compare(file('c', OLD), file('d', slower))).code).toBe(1);
  expect((await compare(file('e', OLD), file('f', slower), '--threshold', '1.5')).code).toBe(0);
  const faster = await compare(file('g', slower), file('h', OLD));
  expect(faster.code).toBe(0);
  expect(faster.stdout).toMatch(/faster .*\n {2}dup-pipe on direct: p50 13\.0 -> 10\.0/);
});

test('a file that is not a regular file (a device, a FIFO nobody writes to) is refused at once: exit 3, not read forever', async () => {
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  for (const path of ['/dev/zero', fifo, dir]) {
    const run = await compare(path, file('regular', OLD));
    expect({ code: run.code, says: run.stderr.includes(`cannot read ${path}`) }).toEqual({ code: 3, says: true });
    expect((await compare(file('regular', OLD), path)).code).toBe(3);
  }
});
