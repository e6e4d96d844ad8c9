/**
 * The leak checker's options and edges, as a user's test suite relies on
 * them: `ignore` drops exactly the entries it matches (leaks and closes),
 * `failOnClosed` decides whether a wrong-fd close fails, asynchronous closes
 * get the settle time and no more, other processes are watched (a leak there
 * names that pid and role), and a process that cannot be watched is an error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkFdLeaks, expectNoFdLeaks, FdLeakError, SystemError } from '../../src';
import { diffFdTables, openFdTable } from '../../src/fd';
import { describeFdEntry, describeFdLeakReport, ProcessFdSnapshot, settleFdSnapshots, type FdEntry } from '../../src/leak-check';
import { afterLaneWriterFdsRead } from '../../src/test-hooks';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-leak-options-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `body` with a list of fds it may leave open, closed inside the test (the fd-table check runs right after). */
async function planting(body: (planted: number[]) => Promise<void>): Promise<void> {
  const planted: number[] = [];
  try {
    await body(planted);
  } finally {
    for (const fd of planted) closeSync(fd);
  }
}

describe('ignore', () => {
  test('drops the leaks it matches and keeps the others', () =>
    planting(async (planted) => {
      const kept = join(dir, 'kept');
      const ignored = join(dir, 'ignored');
      const ignore = (e: FdEntry): boolean => e.target === ignored;
      const report = await checkFdLeaks(() => void planted.push(openSync(kept, 'w'), openSync(ignored, 'w')), { settleMs: 50, ignore });
      expect(report.leaks).toEqual([{ pid: process.pid, role: 'self', fd: planted[0], target: kept }]);
      // Only the ignored one: expectNoFdLeaks passes.
      await expect(expectNoFdLeaks(() => void planted.push(openSync(ignored, 'w')), { settleMs: 50, ignore })).resolves.toBeUndefined();
      await expect(expectNoFdLeaks(() => void planted.push(openSync(kept, 'w')), { settleMs: 50, ignore })).rejects.toBeInstanceOf(FdLeakError);
    }));

  test('drops the closes it matches too (with failOnClosed)', async () => {
    const path = join(dir, 'closed-ignored');
    const a = openSync(path, 'w');
    const report = await checkFdLeaks(() => closeSync(a), { settleMs: 50, ignore: (e) => e.target === path });
    expect(report).toEqual({ leaks: [], closed: [], gone: [] });
    const b = openSync(path, 'w');
    await expect(expectNoFdLeaks(() => closeSync(b), { settleMs: 50, failOnClosed: true, ignore: (e) => e.fd === b })).resolves.toBeUndefined();
  });
});

describe('failOnClosed', () => {
  test('a file deleted during the check while an fd open before stays open on it is neither leaked nor closed; one closed and another file made at that name, opened at its number and deleted is both', () =>
    planting(async (planted) => {
      const path = join(dir, 'deleted-during');
      planted.push(openSync(path, 'w'));
      const report = await checkFdLeaks(() => rmSync(path), { settleMs: 50 });
      expect(report).toEqual({ leaks: [], closed: [], gone: [] });
      await expect(expectNoFdLeaks(() => undefined, { settleMs: 50, failOnClosed: true })).resolves.toBeUndefined();
      // Closed and deleted, and its number taken by a new file of the same name, deleted too: a change, seen both ways.
      const again = join(dir, 'again');
      const fd = openSync(again, 'w');
      const reopened = await checkFdLeaks(
        () => {
          closeSync(fd);
          rmSync(again);
          planted.push(openSync(again, 'w'));
          rmSync(again);
        },
        { settleMs: 50 },
      );
      expect(planted[1]).toBe(fd);
      expect(reopened.leaks).toEqual([{ pid: process.pid, role: 'self', fd, target: `${again} (deleted)` }]);
      expect(reopened.closed).toEqual([{ pid: process.pid, role: 'self', fd, target: again }]);
    }));

  test('with it, the error reports the leaks and the closes; without it, the leaks only', () =>
    planting(async (planted) => {
      const before = join(dir, 'before');
      const left = join(dir, 'left');
      const a = openSync(before, 'w');
      const both = (await expectNoFdLeaks(
        () => {
          closeSync(a);
          planted.push(openSync(left, 'w'));
        },
        { settleMs: 50, failOnClosed: true },
      ).catch((e: unknown) => e)) as FdLeakError;
      expect(both).toBeInstanceOf(FdLeakError);
      // The fd number may be reused by the new open: match on targets.
      expect(both.report.leaks.map((e) => e.target)).toEqual([left]);
      expect(both.report.closed.map((e) => e.target)).toEqual([before]);
      expect(both.message).toMatch(/^1 fd leaked:\n.*\(opened during the test, still open\)\n1 fd closed that was open before:\n.*\(open before the test, closed during it\)$/);

      const b = openSync(before, 'w');
      const leaksOnly = (await expectNoFdLeaks(
        () => {
          closeSync(b);
          planted.push(openSync(left, 'w'));
        },
        { settleMs: 50 },
      ).catch((e: unknown) => e)) as FdLeakError;
      expect(leaksOnly.report.leaks.map((e) => e.target)).toEqual([left]);
      expect(leaksOnly.report.closed).toEqual([]);
      expect(leaksOnly.message).not.toMatch(/closed/);
    }));
});

describe('settling', () => {
  test('an fd closed asynchronously within the settle time is no leak; one still open after it is', () =>
    planting(async (planted) => {
      const path = join(dir, 'async');
      let closedLater: Promise<void> | undefined;
      const report = await checkFdLeaks(
        () => {
          const fd = openSync(path, 'w');
          closedLater = new Promise((r) => setTimeout(() => r(closeSync(fd)), 30));
        },
        { settleMs: 10_000 },
      );
      expect(report.leaks).toEqual([]);
      await closedLater;
      // settleMs 0: one look, no waiting.
      const now = await checkFdLeaks(() => void planted.push(openSync(path, 'w')), { settleMs: 0 });
      expect(now.leaks.map((e) => e.target)).toEqual([path]);
    }));

  test('an fd closed during fn and open again on the same file within the settle time is not reported closed', () =>
    planting(async (planted) => {
      const path = join(dir, 'swapped');
      // The lowest free number: closed, it is the lowest again, so the reopen takes it back.
      const a = openSync(path, 'w');
      let reopened: Promise<number> | undefined;
      const report = await checkFdLeaks(
        () => {
          closeSync(a);
          reopened = new Promise((r) => setTimeout(() => r(openSync(path, 'w')), 30));
        },
        { settleMs: 10_000 },
      );
      const b = await reopened!;
      planted.push(b);
      expect(b).toBe(a);
      expect(report).toEqual({ leaks: [], closed: [], gone: [] });
    }));

  test("with no settleMs, an fd closed before the check's second look is no leak, and one left open is reported, not before the default settle time (1 s) is over", () =>
    planting(async (planted) => {
      const path = join(dir, 'default-settle');
      let fd = -1;
      // Closed right after the check's second read of the log lanes (n 1):
      // the start of its second look, or, had it stopped waiting at its
      // first, the set-aside after that look's verdict.
      afterLaneWriterFdsRead((n) => {
        if (n === 1) closeSync(fd);
      });
      const clean = await checkFdLeaks(() => void (fd = openSync(path, 'w'))).finally(() => afterLaneWriterFdsRead(undefined));
      expect(clean).toEqual({ leaks: [], closed: [], gone: [] });
      // The check ends by itself: a guard far past the default settle time, under jest's limit on the test.
      const start = performance.now();
      const report = await new HangGuard(scaled(20_000)).within(
        checkFdLeaks(() => void planted.push(openSync(path, 'w'))),
        'a check with the default settle time, around an fd left open',
      );
      // A lower bound only: the check decides on the monotonic clock, never before its settle time is over.
      expect({ leaks: report.leaks, waitedFullSecond: performance.now() - start >= 1000 }).toEqual({
        leaks: [{ pid: process.pid, role: 'self', fd: planted[0], target: path }],
        waitedFullSecond: true,
      });
    }));

  test('settleFdSnapshots returns as soon as every table is back at its baseline', async () => {
    const snap = new ProcessFdSnapshot(process.pid, 'self');
    try {
      // A settle time far beyond the test timeout: only a clean table ends this in time.
      await expect(settleFdSnapshots([snap], { settleMs: 600_000 })).resolves.toEqual({ leaks: [], closed: [], gone: [] });
    } finally {
      snap.release();
    }
  });
});

describe('other processes', () => {
  /**
   * A node child that says 'ready' once its stdio is set up (what Node opens
   * lazily is open by then), opens `path` when told on stdin, says 'opened',
   * and stays until stdin closes.
   */
  function opener(path: string): { child: ChildProcess; said: (word: string) => Promise<void>; exited: Promise<void> } {
    const child = spawn(
      process.execPath,
      [
        '-e',
        `process.stdin.on('data', () => { require('fs').openSync(${JSON.stringify(path)}, 'w'); process.stdout.write('opened\\n'); });
         process.stdin.on('end', () => process.exit(0));
         process.stdout.write('ready\\n');`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    const waiters: Array<() => void> = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (const w of waiters.splice(0)) w();
    });
    const said = async (word: string): Promise<void> => {
      while (!out.includes(word)) await new Promise<void>((r) => waiters.push(r));
    };
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    return { child, said, exited };
  }

  test("a leak in a watched process names its pid and role; a bare pid's role is `pid N`", async () => {
    for (const [i, watched] of [(pid: number) => ({ pid, role: 'opener' }), (pid: number) => pid].entries()) {
      const path = join(dir, `in-child-${i}`);
      const { child, said, exited } = opener(path);
      try {
        await said('ready');
        const pid = child.pid!;
        const report = await checkFdLeaks(
          async () => {
            child.stdin!.write('go\n');
            await said('opened');
          },
          { processes: [watched(pid)], settleMs: 50 },
        );
        const role = i === 0 ? 'opener' : `pid ${pid}`;
        expect(report.leaks).toEqual([{ pid, role, fd: expect.any(Number), target: path }]);
        expect(describeFdEntry(report.leaks[0]!)).toBe(`pid ${pid} (${role}): fd ${report.leaks[0]!.fd} -> ${path}`);
        expect(report.gone).toEqual([]);
      } finally {
        child.stdin!.end();
        await exited;
      }
    }
  });

  test('trackFds: a leak here names the call and the line that opened it, one in a process no recorder watched is untracked; tracking stops with the check', async () => {
    const path = join(dir, 'tracked');
    const { child, said, exited } = opener(join(dir, 'untracked'));
    const env = { ...process.env };
    let mine = -1;
    // The recorder's directory (os.tmpdir() reads the environment jest's test
    // does not see, so it is found where the check names it).
    let trackDir = '';
    try {
      await said('ready');
      const before = openFdTable();
      const report = await checkFdLeaks(
        async () => {
          trackDir = process.env['FDBRIDGE_FDTRACK_DIR'] ?? '';
          mine = openSync(path, 'w');
          child.stdin!.write('go\n');
          await said('opened');
        },
        { processes: [{ pid: child.pid!, role: 'opener' }], settleMs: 50, trackFds: true },
      );
      const here = report.leaks.find((e) => e.pid === process.pid);
      const there = report.leaks.find((e) => e.pid === child.pid);
      expect(here).toMatchObject({ fd: mine, target: path, openedAt: { call: 'fs.openSync' } });
      expect(here?.openedAt?.js?.[0]).toMatch(/leak-check-options\.test\.ts:\d+:\d+/);
      // Started before the check: no recorder ran in it.
      expect(there).toMatchObject({ role: 'opener', target: join(dir, 'untracked'), openedAt: { call: 'untracked' } });
      // The report reads the origin under its leak.
      const text = describeFdLeakReport({ ...report, leaks: [here!] });
      expect(text.split('\n').slice(0, 3)).toEqual([
        '1 fd leaked:',
        `  fd ${mine} -> ${path} (opened during the test, still open)`,
        '    opened by fs.openSync, unless a close --track-fds cannot see (by a thread it does not record, or by native code) freed this number after that and a call it did not see put the same file here again',
      ]);
      expect(text.split('\n')[3]).toMatch(/^ {6}at .*leak-check-options\.test\.ts:\d+:\d+/);
      // Stopped: its log closed (only the leak is new here), the environment as it was, its records removed.
      expect(diffFdTables(before, openFdTable()).opened).toEqual([{ fd: mine, target: path }]);
      expect(process.env).toEqual(env);
      expect(trackDir).toMatch(/fdbridge-fdtrack-/);
      expect(existsSync(trackDir)).toBe(false);
    } finally {
      if (mine >= 0) closeSync(mine);
      child.stdin!.end();
      await exited;
    }
  });

  test('a process that does not exist (or is a zombie) cannot be watched: SystemError ESRCH', async () => {
    const child = spawn('true', [], { stdio: 'ignore' });
    const pid = child.pid!;
    await new Promise((r) => child.once('exit', r));
    const err = (() => {
      try {
        return new ProcessFdSnapshot(pid, 'gone');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code: 'ESRCH' });
    await expect(checkFdLeaks(() => undefined, { processes: [pid] })).rejects.toBeInstanceOf(SystemError);
  });
});

describe('arguments and errors', () => {
  test('fn must be a function; what fn throws is rethrown as is', async () => {
    await expect(checkFdLeaks('x' as unknown as () => void)).rejects.toThrow(new TypeError('checkFdLeaks(fn): fn must be a function'));
    const boom = new Error('boom');
    await expect(
      checkFdLeaks(() => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect(expectNoFdLeaks(() => Promise.reject(boom))).rejects.toBe(boom);
  });

  test('reports read one line per fd, with singular and plural headings; an empty report is an empty string', () => {
    const e = (fd: number, target: string, pid = process.pid): FdEntry => ({ pid, role: 'self', fd, target });
    expect(describeFdLeakReport({ leaks: [], closed: [], gone: [] })).toBe('');
    expect(describeFdLeakReport({ leaks: [e(5, '/a'), e(6, '/b')], closed: [e(7, '/c'), e(8, '/d')], gone: [] })).toBe(
      [
        '2 fds leaked:',
        '  fd 5 -> /a (opened during the test, still open)',
        '  fd 6 -> /b (opened during the test, still open)',
        '2 fds closed that were open before:',
        '  fd 7 -> /c (open before the test, closed during it)',
        '  fd 8 -> /d (open before the test, closed during it)',
      ].join('\n'),
    );
    expect(describeFdLeakReport({ leaks: [], closed: [e(7, '/c', 1)], gone: [] })).toBe(
      '1 fd closed that was open before:\n  pid 1 (self): fd 7 -> /c (open before the test, closed during it)',
    );
    const err = new FdLeakError({ leaks: [e(5, '/a')], closed: [], gone: [] });
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_FD_LEAK', message: '1 fd leaked:\n  fd 5 -> /a (opened during the test, still open)' });
  });
});
