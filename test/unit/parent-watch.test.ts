/**
 * watchParent (src/parent-watch.ts): a process learns that the one that
 * started it has ended, SIGKILL included, once: a watch closed before
 * then never calls back, and one closed from another's callback, in the
 * same turn, neither. Refused, each with an error that says why and with
 * no fd left behind: a value that is not a pid, a process that has exited,
 * a live process that is not this one's parent. The watch keeps one fd
 * (its own pidfd) while it watches and none once closed or fired.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';

import fc from 'fast-check';

import { openFdTable } from '../../src/fd';
import { watchParent } from '../../src/parent-watch';
import { distPath } from '../../src/paths';

const RUNS = { seed: 20261204, numRuns: 100 };

/**
 * The watching process: started by PARENT, it reports its fd table before
 * any watch, then watches its parent four times: `closed` (closed at once,
 * twice), `a` and `b` (each closing the other from its callback) and `last`
 * (one timer turn later, once every callback of the same event has run,
 * reports the table and exits). A ref'd interval keeps it alive
 * until then.
 */
const WATCHER = `
const { watchParent } = require(${JSON.stringify(distPath('src/parent-watch.js'))});
const { openFdTable } = require(${JSON.stringify(distPath('src/fd.js'))});
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const table = () => JSON.stringify([...openFdTable()]);
const parent = Number(process.argv[1]);
void process.stdout;
const before = table();
const closed = watchParent(parent, () => out({ fired: 'closed' }));
closed.close();
closed.close();
const afterClose = table();
let a, b;
a = watchParent(parent, () => (out({ fired: 'a' }), b.close()));
b = watchParent(parent, () => (out({ fired: 'b' }), a.close()));
watchParent(parent, () => {
  setTimeout(() => {
    out({ fired: 'last', tableSame: table() === before });
    process.exit(0);
  }, 50);
});
setInterval(() => {}, 1 << 30);
out({ ready: process.pid, watching: JSON.parse(table()).length - JSON.parse(before).length, afterCloseSame: afterClose === before });
`;

/**
 * Starts WATCHER with its own pid as the parent, its output on this one's
 * stdout; then waits to be killed. Should the watcher end first (it failed),
 * says so; should the test end first (its stdin closes), ends too.
 */
const PARENT = `
const { spawn } = require('node:child_process');
const watcher = spawn(process.execPath, ['-e', ${JSON.stringify(WATCHER)}, String(process.pid)], { stdio: ['ignore', 'inherit', 'inherit'] });
watcher.once('exit', (code, signal) => process.stdout.write(JSON.stringify({ watcherEnded: { code, signal } }) + '\\n'));
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));
`;

const watchers: number[] = [];
afterEach(() => {
  for (const pid of watchers.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited already
    }
  }
});

test('a parent SIGKILLed: each open watch calls back once, a closed one never, one closed in the same turn neither; no fd kept', async () => {
  const parent = spawn(process.execPath, ['-e', PARENT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  parent.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: Array<Record<string, unknown>> = [];
  let onLine: (() => void) | undefined;
  parent.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    const parts = stdout.split('\n');
    stdout = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p) as Record<string, unknown>);
    onLine?.();
  });
  // The pipe closes once both the parent and the watcher have ended.
  const closed = once(parent.stdout, 'close');
  await new Promise<void>((resolve) => {
    onLine = () => lines.length > 0 && resolve();
    onLine();
  });
  const ready = lines[0]!;
  if (typeof ready['ready'] === 'number') watchers.push(ready['ready']);
  else parent.stdin.end();
  expect({ ready, stderr }).toEqual({ ready: { ready: expect.any(Number), watching: 3, afterCloseSame: true }, stderr: '' });
  parent.kill('SIGKILL');
  await once(parent, 'exit');
  parent.stdin.destroy();
  // A watcher that never fires is killed by afterEach, after jest's timeout.
  await closed;
  const fired = lines.slice(1);
  expect(stderr).toBe('');
  // a and b: whichever runs first closes the other.
  expect(fired.filter((l) => l['fired'] === 'a' || l['fired'] === 'b')).toHaveLength(1);
  expect(fired.filter((l) => l['fired'] !== 'a' && l['fired'] !== 'b')).toEqual([{ fired: 'last', tableSame: true }]);
});

test('generated: a value that is not a pid is a RangeError naming it, and opens nothing', () => {
  const before = openFdTable();
  fc.assert(
    fc.property(
      fc.oneof(fc.integer({ min: -(2 ** 31), max: 0 }), fc.double({ noInteger: true }), fc.constantFrom(NaN, Infinity, -Infinity, 2 ** 53, -0)),
      (pid) => {
        expect(() => watchParent(pid, () => undefined)).toThrow(new RangeError(`watchParent: ${pid} is not a pid`));
      },
    ),
    RUNS,
  );
  expect(openFdTable()).toEqual(before);
});

test('a process that has exited: an error saying so, with ESRCH as its cause; no fd left', async () => {
  const child = spawn('true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await once(child, 'exit');
  const before = openFdTable();
  let err: unknown;
  try {
    watchParent(pid, () => undefined);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toBe(`the parent process (pid ${pid}) has already exited`);
  expect((err as Error).cause).toMatchObject({ code: 'ESRCH' });
  expect(openFdTable()).toEqual(before);
});

/** At RLIMIT_NOFILE (its lowest free number), watches its parent and writes what it threw, and whether its fd table is as before. */
const AT_FD_LIMIT = `
const { watchParent } = require(${JSON.stringify(distPath('src/parent-watch.js'))});
const { fdLimit, openFdTable, setFdLimit } = require(${JSON.stringify(distPath('src/fd.js'))});
const out = process.stdout;
const [soft, hard] = fdLimit();
const before = openFdTable();
let limit = 0;
while (before.has(limit)) limit += 1;
setFdLimit(limit, hard);
let thrown;
try {
  watchParent(process.ppid, () => undefined);
} catch (err) {
  thrown = { name: err.name, code: err.code, message: err.message };
}
setFdLimit(soft, hard);
out.write(JSON.stringify({ thrown, same: JSON.stringify([...openFdTable()]) === JSON.stringify([...before]) }));
`;

test('at the fd limit: the SystemError EMFILE as it is, not taken for a parent that exited; no fd left', async () => {
  const child = spawn(process.execPath, ['-e', AT_FD_LIMIT], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  expect(JSON.parse(stdout)).toEqual({ thrown: { name: 'SystemError', code: 'EMFILE', message: expect.stringMatching(/^pidfd_open failed: EMFILE/) }, same: true });
});

test('a live process that is not the parent (this one, a child of it): refused, naming the parent; no fd left', async () => {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  try {
    await once(child, 'spawn');
    const before = openFdTable();
    for (const pid of [process.pid, child.pid!]) {
      expect(() => watchParent(pid, () => undefined)).toThrow(
        new Error(`pid ${pid} is not this process's parent (pid ${process.ppid} is): the one that started it has already exited`),
      );
      expect(openFdTable()).toEqual(before);
    }
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
});

test('this process\'s parent: watched with one fd, which close() gives back; a second close() does nothing', () => {
  const before = openFdTable();
  const calls: number[] = [];
  const watch = watchParent(process.ppid, () => calls.push(1));
  expect(openFdTable().size).toBe(before.size + 1);
  watch.close();
  expect(openFdTable()).toEqual(before);
  watch.close();
  expect(openFdTable()).toEqual(before);
  expect(calls).toEqual([]);
});
