/** checkFdLeaks / expectNoFdLeaks and the jest matcher toLeakNoFds, in this process. */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkFdLeaks, closeFd, expectNoFdLeaks, FdLeakError, makePipe } from '../../src';
import '../../src/jest';

let dir: string;
const planted: number[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-leak-check-'));
});

/**
 * Runs a test body and closes what it planted, inside the test: the fd-table
 * check of test/setup (an afterEach of its own) runs before this file's
 * afterEach hooks would.
 */
function planting(body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } finally {
      for (const fd of planted.splice(0)) closeSync(fd);
    }
  };
}

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('checkFdLeaks reports an fd left open, with its number and target; a clean fn reports nothing', planting(async () => {
  const path = join(dir, 'leaked.txt');
  const report = await checkFdLeaks(() => void planted.push(openSync(path, 'w')), { settleMs: 100 });
  expect(report.leaks).toEqual([{ pid: process.pid, role: 'self', fd: planted[0], target: path }]);
  expect(report.closed).toEqual([]);

  const clean = await checkFdLeaks(async () => {
    const [r, w] = makePipe();
    closeFd(r);
    closeFd(w);
  });
  expect(clean).toEqual({ leaks: [], closed: [], gone: [] });
}));

test('expectNoFdLeaks throws an FdLeakError with a readable line per fd, and passes a clean fn', planting(async () => {
  const path = join(dir, 'x');
  const err = await expectNoFdLeaks(() => void planted.push(openSync(path, 'w')), { settleMs: 100 }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(FdLeakError);
  expect((err as FdLeakError).code).toBe('ERR_FDBRIDGE_FD_LEAK');
  expect((err as Error).message).toBe(`1 fd leaked:\n  fd ${planted[0]} -> ${path} (opened during the test, still open)`);
  await expect(expectNoFdLeaks(() => undefined)).resolves.toBeUndefined();
}));

test('an fd closed that was open before is reported, and fails only with failOnClosed', async () => {
  const path = join(dir, 'before');
  const a = openSync(path, 'w');
  const report = await checkFdLeaks(() => closeSync(a), { settleMs: 50 });
  expect(report).toEqual({ leaks: [], closed: [{ pid: process.pid, role: 'self', fd: a, target: path }], gone: [] });
  const b = openSync(path, 'r');
  await expect(expectNoFdLeaks(() => closeSync(b), { settleMs: 50, failOnClosed: true })).rejects.toThrow(
    `1 fd closed that was open before:\n  fd ${b} -> ${path} (open before the test, closed during it)`,
  );
  const c = openSync(path, 'r');
  await expect(expectNoFdLeaks(() => closeSync(c), { settleMs: 50 })).resolves.toBeUndefined();
});

test('a watched process that exits is gone, not leaking', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  const report = await checkFdLeaks(
    async () => {
      child.kill('SIGKILL');
      await exited;
    },
    { processes: [{ pid: child.pid!, role: 'sleeper' }] },
  );
  expect(report.gone).toEqual([{ pid: child.pid, role: 'sleeper' }]);
  expect(report.leaks).toEqual([]);
});

describe('the jest matcher', () => {
  test('toLeakNoFds passes a clean fn', async () => {
    await expect(async () => {
      const [r, w] = makePipe();
      closeFd(r);
      closeFd(w);
    }).toLeakNoFds();
  });

  test('toLeakNoFds fails a leaky fn and names the fd', planting(async () => {
    const path = join(dir, 'matcher-leak');
    await expect(
      expect(() => void planted.push(openSync(path, 'w'))).toLeakNoFds({ settleMs: 100 }),
    ).rejects.toThrow(new RegExp(`fd \\d+ -> ${path} \\(opened during the test, still open\\)`));
    // .not: the leak is what the test wants to see
    await expect(() => void planted.push(openSync(path, 'r'))).not.toLeakNoFds({ settleMs: 50 });
  }));
});
