/**
 * The leak checks never blame the runtime for the fds it opens lazily and
 * keeps (libuv's EMFILE reserve at the first spawn, its inotify fd at the
 * first fs.watch): checkFdLeaks in a fresh process gives the same verdict
 * whether its stdout is a file, a pipe or a terminal, and a /dev/null the
 * test itself leaks is still caught. `fdbridge run > file`, `| cat` and a
 * terminal give the same verdicts.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { warmRuntimeFds } from '../../src/runtime-fds';
import { CLI } from '../util/processes';

const FRESH = join(packageRoot, 'dist', 'scenarios', 'support', 'fresh-leak-check.js');

type Stdout = 'file' | 'pipe' | 'tty';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-runtime-fds-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `node args...` with its stdout in a file, a pipe (read to the end, like `| cat`) or a terminal (script(1)). */
function runNode(args: readonly string[], stdout: Stdout): Promise<{ code: number | null; stderr: string }> {
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const file = stdout === 'file' ? openSync(join(dir, `stdout-${process.hrtime.bigint()}`), 'w') : undefined;
  const child =
    stdout === 'tty'
      ? spawn('script', ['-qec', [process.execPath, ...args].map(quote).join(' '), '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(process.execPath, args, { stdio: ['ignore', file ?? 'pipe', 'pipe'] });
  let stderr = '';
  child.stdout?.resume();
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      if (file !== undefined) closeSync(file);
      resolve({ code, stderr });
    });
  });
}

interface Summary {
  leaks: Array<{ fd: number; target: string }>;
  closed: number;
  runtime: string[];
}

test.each<Stdout>(['file', 'pipe', 'tty'])(
  'checkFdLeaks in a fresh process with stdout to a %s: a spawn, a watch, a worker\'s spawn leak nothing; a leaked /dev/null is caught',
  async (stdout) => {
    const out = join(dir, `fresh-${stdout}.json`);
    const { code, stderr } = await runNode([FRESH, out], stdout);
    const result = JSON.parse(readFileSync(out, 'utf8')) as { clean: Summary; devNull: Summary & { fd: number }; worker: Summary; error?: string };
    expect({ code, error: result.error, stderr: stdout === 'tty' ? '' : stderr }).toEqual({ code: 0, error: undefined, stderr: '' });
    expect(result.clean.leaks).toEqual([]);
    expect(result.clean.closed).toBe(0);
    expect(result.worker.leaks).toEqual([]);
    expect(result.worker.closed).toBe(0);
    expect(result.devNull.leaks).toEqual([{ fd: result.devNull.fd, target: '/dev/null' }]);
    // With stdout in a file nothing had opened libuv's lazy fds before the
    // check: it opened them itself before its baseline and names them. (A
    // pipe or a terminal on stdout may have had Node open the reserve.)
    if (stdout === 'file') expect(result.clean.runtime.sort()).toEqual(['/dev/null', 'anon_inode:inotify']);
    // The worker thread's own event loop has its own.
    expect(result.worker.runtime).toContain('/dev/null');
  },
);

test('warmRuntimeFds opens nothing once the runtime has its fds', () => {
  warmRuntimeFds();
  const before = openFdTable();
  expect(warmRuntimeFds()).toEqual([]);
  expect(openFdTable()).toEqual(before);
});

/** Each row's own time limit in the runs below (the default profile's). */
const ROW_TIMEOUT_MS = 30_000;
const ROWS = 9;
const STDOUTS = ['file', 'pipe', 'tty'] as const;

test('`fdbridge run > file`, `| cat` and a terminal give the same verdicts', async () => {
  const verdicts: Record<string, unknown> = {};
  for (const stdout of STDOUTS) {
    const json = join(dir, `run-${stdout}.json`);
    const args = [CLI, 'run', '--transport', 'direct,worker,child', '--scenario', 'redirect-log-to-*,check-leaks-in-fresh-process', '--timeout', String(ROW_TIMEOUT_MS), '--json', json];
    const { code } = await runNode(args, stdout);
    const results = JSON.parse(readFileSync(json, 'utf8')) as {
      results: Array<{ scenario: string; transport: string; status: string; leaks: Array<{ role: string; target: string }>; error?: unknown }>;
    };
    // pids and fd numbers differ from run to run; what leaked, and where, must not.
    const rows = results.results
      .map((r) => ({ row: `${r.scenario} ${r.transport}`, status: r.status, leaks: r.leaks.map((l) => `${l.role} ${l.target}`), error: r.error }))
      .sort((a, b) => a.row.localeCompare(b.row));
    verdicts[stdout] = { code, rows };
  }
  expect(verdicts['file']).toEqual(verdicts['pipe']);
  expect(verdicts['tty']).toEqual(verdicts['pipe']);
  expect(verdicts['pipe']).toMatchObject({ code: 0 });
  expect((verdicts['pipe'] as { rows: unknown[] }).rows).toHaveLength(ROWS);
  // Every row is bounded by the run's own --timeout: jest's limit is only a hang guard here (the
  // three runs took 10 s on a quiet machine, and past 120 s at load average 46 on 2 cores).
}, STDOUTS.length * ROWS * ROW_TIMEOUT_MS + 60_000);
