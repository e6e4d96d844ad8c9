/**
 * The native recorder (native/fdtrack/fdtrack.c) leaves out what a thread
 * with an fd table of its own opens (its numbers are not the process's),
 * and only such a thread: a close_range(CLOSE_RANGE_UNSHARE) that succeeds
 * in the process's only thread copies nothing (the table is still the
 * process's), and a child forked from a thread with a table of its own has
 * one thread, whose table is the child's. Their opens are recorded.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { fdOrigin } from '../../src/fd-track';
import { fdTableSettles } from '../util/processes';
import { runCUnderTracker } from '../util/tracked-c';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-own-table-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

test("opens in a table that is the process's are recorded, after an unshare that copied nothing and in a child forked from a thread with a table of its own", async () => {
  const before = openFdTable();
  const out = JSON.parse(runCUnderTracker(dir, join(__dirname, 'fixtures', 'own-table.c'))) as Record<string, number>;
  expect(out['unshared']).toBe(0);
  expect(fdOrigin(dir, out['pid']!, out['before']!, '/dev/null')).toMatchObject({ call: 'open' });
  expect(fdOrigin(dir, out['pid']!, out['after']!, '/dev/full')).toMatchObject({ call: 'open' });
  expect(out['child']).toBeGreaterThan(0);
  expect(fdOrigin(dir, out['child']!, out['childFd']!, '/dev/zero')).toMatchObject({ call: 'open' });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("a thread whose first act is unshare(CLONE_FILES) records nothing: its socket at the number of the process's file leaves that file's record", async () => {
  const before = openFdTable();
  const out = JSON.parse(runCUnderTracker(dir, join(__dirname, 'fixtures', 'own-table-first.c'))) as Record<string, number>;
  // The same number in two tables: the process's file, the thread's socket.
  expect(out['theirs']).toBe(out['ours']);
  expect(fdOrigin(dir, out['pid']!, out['ours']!, '/dev/full')).toMatchObject({ call: 'open' });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

