/**
 * checkFdLeaks({ trackFds: true }) as a test suite uses it in its own
 * process: a tracked check inside another records into the outer one's
 * directory and leaves the outer one recording; the program's NODE_OPTIONS
 * reach the processes a check starts and are as they were after it; a check
 * whose scratch directory was removed under it (a temporary directory cleaned)
 * still reports; a check run in a worker thread (jest's workerThreads)
 * names the calls of that thread; and a worker that outlives the check it
 * was started in writes nothing into a file that takes the check's log's
 * number after it. A closeFds or closeFd that fdbridge refused (a number of
 * its own in the list: nothing closed) ends no record: a leak of a listed
 * fd still names its call.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { checkFdLeaks, closeFd, closeFds } from '../../src';
import { diffFdTables, openFdTable } from '../../src/fd';
import { type FdEntry } from '../../src/leak-check';
import { packageRoot } from '../../src/paths';
import { ownFd } from '../util/own-fds';
import { fdTableSettles } from '../util/processes';

const THIS_FILE = /track-fds-in-process\.test\.ts:\d+:\d+/;

let dir: string;
let opened: number[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-track-in-process-'));
  opened = [];
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `body`, closing the fds it opened with open() (its leaks) before the test's fd-table check. */
async function closing(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } finally {
    for (const fd of opened) closeSync(fd);
  }
}

function open(name: string): number {
  const fd = openSync(join(dir, name), 'w');
  opened.push(fd);
  return fd;
}

/**
 * A worker's source: checkFdLeaks with trackFds around an fs.openSync of
 * `path`, itself inside a plain check (which must find nothing left open by
 * the tracked one: the fd is closed after it), posting both reports (or the
 * error).
 */
function workerCheck(path: string): string {
  return `const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { checkFdLeaks } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
let fd = -1;
let seen = null;
let tracked;
checkFdLeaks(async () => {
  tracked = await checkFdLeaks(() => { fd = fs.openSync(${JSON.stringify(path)}, 'w'); seen = process.env.FDBRIDGE_FDTRACK_DIR; }, { trackFds: true, settleMs: 0 });
  fs.closeSync(fd);
}, { settleMs: 0 }).then(
  (around) => parentPort.postMessage({ leaks: tracked.leaks, around: around.leaks, seen, after: process.env.FDBRIDGE_FDTRACK_DIR ?? null }),
  (err) => { if (fd >= 0) fs.closeSync(fd); parentPort.postMessage({ error: String(err && err.stack || err) }); },
);
`;
}

/** fd, target and call of each leak, and whether its innermost JS frame is a line of this file. */
function origins(leaks: FdEntry[]): { fd: number; target: string; call?: string; here: boolean }[] {
  return leaks.map((l) => ({ fd: l.fd, target: l.target, call: l.openedAt?.call, here: THIS_FILE.test(l.openedAt?.js?.[0] ?? '') }));
}

test('a tracked check inside a tracked check names its own leaks, and the outer check still names what is opened after it', () =>
  closing(async () => {
    const env = { ...process.env };
    const before = openFdTable();
    let outerDir: string | undefined;
    let inner: FdEntry[] = [];
    let innerFd = -1;
    let afterFd = -1;
    const outer = await checkFdLeaks(
      async () => {
        outerDir = process.env['FDBRIDGE_FDTRACK_DIR'];
        const report = await checkFdLeaks(() => void (innerFd = open('inner')), { trackFds: true, settleMs: 0 });
        inner = report.leaks;
        // The inner check's end changed nothing of the outer one's.
        expect(process.env['FDBRIDGE_FDTRACK_DIR']).toBe(outerDir);
        expect(existsSync(outerDir!)).toBe(true);
        afterFd = open('after');
      },
      { trackFds: true, settleMs: 0 },
    );
    expect(origins(inner)).toEqual([{ fd: innerFd, target: join(dir, 'inner'), call: 'fs.openSync', here: true }]);
    expect(origins(outer.leaks)).toEqual([
      { fd: innerFd, target: join(dir, 'inner'), call: 'fs.openSync', here: true },
      { fd: afterFd, target: join(dir, 'after'), call: 'fs.openSync', here: true },
    ]);
    // The outer check stopped: its log closed, the environment as it was, its directory removed.
    expect(diffFdTables(before, openFdTable()).opened.map((e) => e.fd)).toEqual([innerFd, afterFd]);
    expect(process.env).toEqual(env);
    expect(existsSync(outerDir!)).toBe(false);
  }));

// A test's process.env under jest is its own copy, which child_process does
// not read: a process started during a check gets it when it is passed.
test("the program's NODE_OPTIONS stay in effect in the processes a tracked check starts, beside the recorder, and are as they were after it", async () => {
  const savedOptions = process.env['NODE_OPTIONS'];
  process.env['NODE_OPTIONS'] = '--title=fdbridge-track-options';
  try {
    const env = { ...process.env };
    let child: { title: string; recording: boolean } | undefined;
    let trackDir = '';
    await checkFdLeaks(
      () => {
        trackDir = process.env['FDBRIDGE_FDTRACK_DIR']!;
        const out = execFileSync(process.execPath, ['-e', 'process.stdout.write(JSON.stringify({ title: process.title, pid: process.pid }))'], {
          encoding: 'utf8',
          env: process.env,
        });
        const { title, pid } = JSON.parse(out) as { title: string; pid: number };
        // The recorder preloaded into it opened its log in the check's directory.
        child = { title, recording: readdirSync(trackDir).includes(`js-${pid}.log`) };
      },
      { trackFds: true, settleMs: 0 },
    );
    expect(child).toEqual({ title: 'fdbridge-track-options', recording: true });
    expect(process.env).toEqual(env);
    expect(existsSync(trackDir)).toBe(false);
  } finally {
    if (savedOptions === undefined) delete process.env['NODE_OPTIONS'];
    else process.env['NODE_OPTIONS'] = savedOptions;
  }
});

test('a tracked check whose directory was removed under it (a temporary directory cleaned) still reports, leaves its log closed and the environment as it was', () =>
  closing(async () => {
    const env = { ...process.env };
    const before = openFdTable();
    let fd = -1;
    const report = await checkFdLeaks(
      () => {
        fd = open('kept');
        rmSync(process.env['FDBRIDGE_FDTRACK_DIR']!, { recursive: true, force: true });
      },
      { trackFds: true, settleMs: 0 },
    );
    // Its records went with the directory: the leak is there, its origin unknown.
    expect(origins(report.leaks)).toEqual([{ fd, target: join(dir, 'kept'), call: 'unseen', here: false }]);
    expect(diffFdTables(before, openFdTable()).opened.map((e) => e.fd)).toEqual([fd]);
    expect(process.env).toEqual(env);
  }));

test('a tracked check run in a worker thread names the call and the line of that thread that opened its leak, and leaves no fd and no directory behind', async () => {
  const before = openFdTable();
  const leaked = join(dir, 'in-worker');
  // A worker's os.tmpdir() reads its own environment: its check's directory goes here.
  const ownTmp = join(dir, 'tmp');
  mkdirSync(ownTmp);
  const worker = new Worker(workerCheck(leaked), { eval: true, env: { ...process.env, TMPDIR: ownTmp } });
  const [answer] = await Promise.all([
    new Promise<{ leaks?: FdEntry[]; around?: FdEntry[]; seen?: string; after?: string | null; error?: string }>((resolve) => worker.once('message', resolve)),
    new Promise((resolve) => worker.once('exit', resolve)),
  ]);
  expect(answer.error).toBeUndefined();
  expect(answer.leaks?.map((l) => ({ target: l.target, call: l.openedAt?.call, at: l.openedAt?.js?.[0] }))).toEqual([
    { target: leaked, call: 'fs.openSync', at: expect.stringMatching(/\[worker eval\]:\d+:\d+/) },
  ]);
  // Its log closed with the check (nothing left open around it), its directory removed, its environment as it was.
  expect(answer.around).toEqual([]);
  expect(diffFdTables(before, openFdTable())).toEqual({ opened: [], closed: [] });
  expect(answer.seen).toMatch(new RegExp(`^${ownTmp}/fdbridge-fdtrack-`));
  expect(readdirSync(ownTmp)).toEqual([]);
  expect(answer.after).toBeNull();
});

test('a worker started during a tracked check, checking with trackFds itself, records through the check\'s log: its report names its own leak, and nothing is left open around it', () =>
  closing(async () => {
    const before = openFdTable();
    const leaked = join(dir, 'in-worker');
    let answer: { leaks?: FdEntry[]; around?: FdEntry[]; seen?: string; error?: string } = {};
    let outerDir: string | undefined;
    const outer = await checkFdLeaks(
      async () => {
        outerDir = process.env['FDBRIDGE_FDTRACK_DIR'];
        const worker = new Worker(workerCheck(leaked), { eval: true, env: { ...process.env } });
        [answer] = await Promise.all([
          new Promise<typeof answer>((resolve) => worker.once('message', resolve)),
          new Promise((resolve) => worker.once('exit', resolve)),
        ]);
      },
      { trackFds: true, settleMs: 0 },
    );
    expect(answer.error).toBeUndefined();
    expect(answer.seen).toBe(outerDir);
    expect(answer.leaks?.map((l) => ({ target: l.target, call: l.openedAt?.call, at: l.openedAt?.js?.[0] }))).toEqual([
      { target: leaked, call: 'fs.openSync', at: expect.stringMatching(/\[worker eval\]:\d+:\d+/) },
    ]);
    // Its check opened no log of its own: nothing left open around it, nor here.
    expect(answer.around).toEqual([]);
    expect(outer.leaks).toEqual([]);
    expect(diffFdTables(before, openFdTable())).toEqual({ opened: [], closed: [] });
  }));

/**
 * A worker's source (the recorder preloaded into it by the environment it
 * is given): says it is ready, and on each message opens and closes `path`
 * `times` times, then answers.
 */
function workerOpening(path: string, times: number): string {
  return `const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
parentPort.on('message', () => {
  for (let i = 0; i < ${times}; i++) fs.closeSync(fs.openSync(${JSON.stringify(path)}, 'w'));
  parentPort.postMessage('done');
});
parentPort.postMessage('ready');
`;
}

test('a worker started during a tracked check and outliving it writes no record into the file that takes the number of the check\'s log once it stopped', () =>
  closing(async () => {
    const before = openFdTable();
    let logFd = -1;
    let worker: Worker | undefined;
    try {
      await checkFdLeaks(
        async () => {
          logFd = Number(process.env['FDBRIDGE_FDTRACK_LOG_FD']);
          const w = new Worker(workerOpening(join(dir, 'by-worker'), 20), { eval: true, env: { ...process.env } });
          worker = w;
          await new Promise((resolve) => w.once('message', resolve));
          // While the check lasts, the worker records through its log.
          await new Promise((resolve) => {
            w.once('message', resolve);
            w.postMessage('go');
          });
          const log = readFileSync(join(process.env['FDBRIDGE_FDTRACK_DIR']!, `js-${process.pid}.log`), 'utf8');
          expect(log.split('\n').filter((l) => l.includes('by-worker') && l.includes('[worker eval]'))).toHaveLength(20);
        },
        { trackFds: true, settleMs: 0 },
      );
      expect(Number.isInteger(logFd)).toBe(true);
      // The check stopped and closed its log: a file opened now may take its number (the lowest free one, so open until one does).
      let victim = -1;
      const spare: number[] = [];
      for (let i = 0; i < 64 && victim !== logFd; i++) {
        victim = openSync(join(dir, `victim-${i}`), 'w');
        (victim === logFd ? opened : spare).push(victim);
      }
      for (const fd of spare) closeSync(fd);
      expect(victim).toBe(logFd);
      const w = worker!;
      await new Promise((resolve) => {
        w.once('message', resolve);
        w.postMessage('go');
      });
      expect(readFileSync(`/proc/self/fd/${victim}`, 'utf8')).toBe('');
    } finally {
      if (worker) {
        const exited = new Promise((resolve) => worker!.once('exit', resolve));
        worker.unref();
        await worker.terminate();
        await exited;
      }
    }
    expect(diffFdTables(before, openFdTable()).opened.map((e) => e.fd)).toEqual([logFd]);
  }));

test('the recorder is installed once in a thread: in each of tracked checks one after another, an open is recorded once and its close once', () =>
  closing(async () => {
    const counts: { opened: number; closed: number }[] = [];
    for (let i = 0; i < 3; i++) {
      await checkFdLeaks(
        () => {
          const path = join(dir, `once-${i}`);
          const fd = openSync(path, 'w');
          closeSync(fd);
          const records = readFileSync(join(process.env['FDBRIDGE_FDTRACK_DIR']!, `js-${process.pid}.log`), 'utf8')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as { fd: number; target?: string; closed?: true });
          const at = records.findIndex((r) => r.target === path);
          counts.push({
            opened: records.filter((r) => r.target === path).length,
            closed: records.slice(at + 1).filter((r) => r.fd === fd && r.closed).length,
          });
        },
        { trackFds: true, settleMs: 0 },
      );
    }
    // Wrapped again at each check's start, each call would be recorded once more per check before it.
    expect(counts).toEqual([1, 2, 3].map(() => ({ opened: 1, closed: 1 })));
  }));

test("a closeFds or closeFd fdbridge refused (a number of its own named) closed nothing: a leak of a listed fd still names the call that opened it", async () => {
  const before = openFdTable();
  await closing(async () => {
    const own = await ownFd('own socket pair end');
    try {
      let listed = -1;
      let alone = -1;
      const report = await checkFdLeaks(
        () => {
          listed = open('listed');
          alone = open('alone');
          expect(() => closeFds([listed, own.fd])).toThrow(/one of fdbridge's own/);
          expect(() => closeFd(own.fd)).toThrow(/one of fdbridge's own/);
          expect(() => closeFds([alone, own.fd, alone])).toThrow(TypeError);
        },
        { trackFds: true, settleMs: 0 },
      );
      expect(origins(report.leaks)).toEqual([
        { fd: listed, target: join(dir, 'listed'), call: 'fs.openSync', here: true },
        { fd: alone, target: join(dir, 'alone'), call: 'fs.openSync', here: true },
      ]);
      await own.works();
    } finally {
      await own.end();
    }
  });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
