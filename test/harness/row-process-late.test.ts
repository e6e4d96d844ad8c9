/**
 * Rows that share a process: a row's scenario may leave code running (a
 * child process's exit callback, a socket's) that opens an fd after the row's
 * leak oracle looked (its timers the harness waits for: late-callback-blame).
 * That fd is charged to that row, never to the row that happens to run
 * next: what appears before the next row begins (or before the process
 * ends) is the earlier row's; what appears during the next row is the
 * earlier row's when --track-fds records its scenario's file opening it,
 * and is otherwise said to be possibly an earlier row's.
 *
 * The scenarios are in test/fixtures/row-process-scenarios: leaks-late
 * returns at once and leaves a child process whose exit callback opens its
 * own module file; waits-for-late returns once that callback has run;
 * passes does nothing.
 */
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { discoverScenarios, planRows, RowSession } from '../../harness/runner';
import type { ResultRow } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { resultRow as row, ROW_PROCESS_SCENARIOS as SCENARIOS, runRowProcessScenarios, seedWith } from '../util/row-process-runs';
/** The file leaks-late's exit callback opens (its module). */
const LATE_FILE = join(SCENARIOS, 'leaks-late.scenario.js');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-row-process-late-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The fds of this process open on leaks-late's file. */
function lateFds(): number[] {
  return [...openFdTable()].filter(([, target]) => target === LATE_FILE).map(([fd]) => fd);
}

/** Waits (no deadline: the test's own) until this process has an fd open on leaks-late's file. */
async function lateFdOpens(): Promise<void> {
  while (lateFds().length === 0) await sleep(10);
}

describe('in one process (RowSession): the late fd is the earlier row\'s', () => {
  const rows = planRows(discoverScenarios(SCENARIOS), { scenario: 'leaks-late,passes', transports: ['direct'] }).rows;
  const rowOf = (name: string): (typeof rows)[number] => {
    const r = rows.find((x) => x.scenario.name === name);
    if (!r) throw new Error(`no row ${name}`);
    return r;
  };

  let session: RowSession;
  beforeEach(async () => {
    session = await RowSession.open({ bench: false, seed: 1, timeoutMs: 20_000, settleMs: 50, anchors: false, rows, info: () => undefined });
  });
  afterEach(async () => {
    await session.close();
    for (const fd of lateFds()) closeSync(fd);
  });

  const charged = (r: ResultRow | undefined, when: string): void => {
    expect(r).toMatchObject({
      scenario: 'leaks-late',
      status: 'fail',
      leaks: [{ pid: process.pid, role: 'client', target: LATE_FILE }],
      error: expect.stringContaining(`leaked 1 fd(s) that appeared after its leak oracle's look, ${when}`),
    });
  };

  test('an fd that appears between its look and the next row\'s begin: charged to it as the next row begins; the next row passes', async () => {
    const late = await session.run(rowOf('leaks-late'));
    // As its own look saw it: nothing yet.
    expect(late).toMatchObject({ status: 'pass', leaks: [] });
    await lateFdOpens();
    const earlier: ResultRow[] = [];
    const next = await session.run(rowOf('passes'), undefined, (r) => earlier.push(r));
    expect(next).toMatchObject({ scenario: 'passes', status: 'pass', leaks: [] });
    expect(earlier).toHaveLength(1);
    charged(earlier[0], 'before the next row began');
    expect(await session.settle()).toMatchObject({ scenario: 'passes', status: 'pass', leaks: [] });
  });

  test('an fd that appears after the last row\'s look: charged to it as the session ends', async () => {
    expect(await session.run(rowOf('leaks-late'))).toMatchObject({ status: 'pass', leaks: [] });
    await lateFdOpens();
    charged(await session.settle(), 'before its process ended');
  });
});

describe('fdbridge run: rows in one row process', () => {
  test('--track-fds: an fd the earlier row\'s exit callback opens during the next row is charged to the earlier row; the next row passes', async () => {
    const rs = await runRowProcessScenarios(dir, ['--track-fds', '--seed', String(seedWith('leaks-late', 'waits-for-late')), '--scenario', 'leaks-late,waits-for-late']);
    expect(rs.results.map((r) => r.scenario)).toEqual(['leaks-late', 'waits-for-late']);
    expect(row(rs, 'leaks-late')).toMatchObject({
      status: 'fail',
      leaks: [{ role: 'client', target: LATE_FILE }],
      error: expect.stringContaining("leaked 1 fd(s) that appeared after its leak oracle's look"),
    });
    expect(row(rs, 'waits-for-late')).toMatchObject({ status: 'pass', leaks: [] });
  });

  test("--track-fds: an fd the earlier row's exit callback makes with fdbridge's dupFd (fcntl64 F_DUPFD_CLOEXEC) during the next row is charged to the earlier row; the next row passes", async () => {
    const rs = await runRowProcessScenarios(dir, ['--track-fds', '--seed', String(seedWith('late-dup-leak', 'waits-for-late')), '--scenario', 'late-dup-leak,waits-for-late']);
    expect(rs.results.map((r) => r.scenario)).toEqual(['late-dup-leak', 'waits-for-late']);
    expect(row(rs, 'late-dup-leak')).toMatchObject({
      status: 'fail',
      leaks: [{ role: 'client', target: join(SCENARIOS, 'late-dup-leak.scenario.js') }],
      error: expect.stringContaining("leaked 1 fd(s) that appeared after its leak oracle's look"),
    });
    expect(row(rs, 'waits-for-late')).toMatchObject({ status: 'pass', leaks: [] });
  });

  test('without --track-fds, a leak seen during the next row is said to be possibly the earlier row\'s, unless it appeared before that row began', async () => {
    const rs = await runRowProcessScenarios(dir, ['--seed', String(seedWith('leaks-late', 'waits-for-late')), '--scenario', 'leaks-late,waits-for-late']);
    expect(rs.results.map((r) => r.scenario)).toEqual(['leaks-late', 'waits-for-late']);
    const late = row(rs, 'leaks-late');
    const next = row(rs, 'waits-for-late');
    // Where the callback's fd showed decides which: both name the earlier row, never the next one alone.
    if (late.status === 'fail') {
      expect({ late, next }).toMatchObject({ late: { leaks: [{ target: LATE_FILE }], error: expect.stringContaining('before the next row began') }, next: { status: 'pass', leaks: [] } });
    } else {
      expect(next).toMatchObject({
        status: 'fail',
        leaks: [{ target: LATE_FILE }],
        error: expect.stringMatching(/possibly an earlier row's: leaks-late on direct ran before it in this row process[^]*--track-fds tells/),
      });
    }
  });
});

// A guard on the file's own reading of the fixture: the module leaks-late opens is the one discovered.
test('leaks-late\'s exit callback opens the file this test looks for', () => {
  expect(discoverScenarios(SCENARIOS).find((l) => l.scenario.name === 'leaks-late')?.file).toBe(LATE_FILE);
});
