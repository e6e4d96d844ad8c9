/**
 * The native recorder (native/fdtrack/fdtrack.c) in a process that forks
 * while other threads make fds: a child must never wait on a lock of the
 * recorder's that a thread of its parent held at the fork (the child has
 * only the forking thread). Run on a C program (fixtures/forks-while-recording.c):
 * 1,000 forks beside two threads that open without end; before the recorder
 * took its lock around the fork, a child got stuck in its first record in
 * 5 runs of 5 (after 9 to 480 forks).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { runCUnderTracker } from '../util/tracked-c';

let dir: string;

beforeEach(() => {
  // Each child maps a recording file of its own: on a tmpfs, a thousand of them cost no disk writes.
  dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'fdb-fork-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('a child forked while other threads record fds makes its own records, never stuck on a lock its parent held', async () => {
  const before = openFdTable();
  const out = runCUnderTracker(dir, join(__dirname, 'fixtures', 'forks-while-recording.c'), ['1000', '2']);
  expect(JSON.parse(out)).toEqual({ stuck: 0, forks: 1000 });
  // Each child recorded its open in a file of its own (the recorder mapped it after the fork).
  expect(execFileSync('sh', ['-c', `ls ${JSON.stringify(dir)} | grep -c '^native-'`], { encoding: 'utf8' }).trim()).toBe('1001');
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120_000);
