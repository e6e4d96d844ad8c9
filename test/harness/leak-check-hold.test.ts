/**
 * The leak check holds its baseline's files (FdTableHold) so that a file
 * closed and deleted during the check cannot pass its inode number to a new
 * file at the same fd number and path. The hold must change nothing the
 * code under test can see: generated programs close, replace (delete and
 * recreate at the same path, reopen) and open files on the real disk
 * (os.tmpdir(): ext4 here, which reuses freed inode numbers at once) and on
 * /dev/shm, directories, pipes, socket pairs, memfds and eventfds, with
 * POSIX locks held on some baseline files; the report must name exactly
 * what the program left open and what it closed of the baseline, the
 * process's locks must be dropped exactly when the program closed an fd of
 * the file (never by the check), pipe and socket ends must see EOF exactly
 * when the program closed the other end, and no hold may outlive its check.
 * A longer run:
 *   FDBRIDGE_HOLD_SEED=7 FDBRIDGE_HOLD_RUNS=500 npx jest test/harness/leak-check-hold.test.ts --testTimeout=900000
 */
import { closeSync, linkSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { checkFdLeaks } from '../../src';
import { packageRoot } from '../../src/paths';
import { closeFd, makeEventfd, makeMemfd, makePipe, openFdTable, setFdFlags } from '../../src/fd';
import { backgroundClosesPending, conflictingLock, liveFdTableHolds, posixLock, reapsPending } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';

type Kind = 'disk' | 'shm' | 'dir' | 'pipe' | 'socket' | 'memfd' | 'eventfd';
const KINDS: readonly Kind[] = ['disk', 'shm', 'dir', 'pipe', 'socket', 'memfd', 'eventfd'];

type Op =
  | { op: 'close'; which: number }
  | { op: 'replace'; which: number }
  | { op: 'open'; kind: Kind }
  | { op: 'closeOpened'; which: number };

const baselineArb = fc.array(fc.record({ kind: fc.constantFrom(...KINDS), lock: fc.boolean() }), { minLength: 1, maxLength: 8 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('close' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('replace' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('replace' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('open' as const), kind: fc.constantFrom(...KINDS) }),
  fc.record({ op: fc.constant('closeOpened' as const), which: fc.nat() }),
);

interface Entry {
  fd: number;
  target: string;
}
const byFd = (a: Entry, b: Entry): number => a.fd - b.fd || a.target.localeCompare(b.target);

/** One open fd of the program's world; `peer` is the other end of a pipe or socket pair. */
interface Held {
  fd: number;
  kind: Kind;
  path?: string;
  /** A second fd of a locked file (through a hard link), opened before the lock and kept: where the lock is looked at. */
  query?: number;
  peer?: Held;
  /** An end that reads from its peer: a socket's either end, a pipe's read end. */
  reads?: boolean;
  open: boolean;
}

/** The numbers open in this process, as /proc/self/fd lists them (the leak check's holds included). */
function rawFds(): number[] {
  // The directory's own fd is the lowest free number at each call: the same one when nothing else changed.
  return readdirSync('/proc/self/fd').map(Number).sort((a, b) => a - b);
}

let dir: string;
let shmDir: string;
let serial = 0;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-hold-'));
  shmDir = mkdtempSync('/dev/shm/fdbridge-hold-');
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(shmDir, { recursive: true, force: true });
});

/** Opens one of `kind` (both ends for a pipe or a socket pair). */
function make(kind: Kind): Held[] {
  if (kind === 'disk' || kind === 'shm') {
    const path = join(kind === 'disk' ? dir : shmDir, `f-${serial++}`);
    writeFileSync(path, 'x');
    return [{ fd: openSync(path, 'r+'), kind, path, open: true }];
  }
  if (kind === 'dir') {
    const path = join(dir, `d-${serial++}`);
    mkdirSync(path);
    return [{ fd: openSync(path, 'r'), kind, path, open: true }];
  }
  if (kind === 'pipe' || kind === 'socket') {
    const [a, b] = kind === 'pipe' ? makePipe() : rawSocketPair('stream');
    const x: Held = { fd: a, kind, open: true, reads: true };
    const y: Held = { fd: b, kind, open: true, peer: x, reads: kind === 'socket' };
    x.peer = y;
    return [x, y];
  }
  if (kind === 'memfd') return [{ fd: makeMemfd(`hold-${serial++}`), kind, open: true }];
  return [{ fd: makeEventfd(), kind, open: true }];
}

/** Whether `fd` reads end-of-file now (0 bytes) rather than "nothing yet" (EAGAIN). */
function atEof(fd: number): boolean {
  setFdFlags(fd, { nonblock: true });
  try {
    return readSync(fd, Buffer.alloc(1)) === 0;
  } catch (err) {
    if ((err as { code?: string }).code === 'EAGAIN') return false;
    throw err;
  }
}

test('generated programs: exact reports, locks and EOFs untouched by the check, no hold left', async () => {
  await fc.assert(
    fc.asyncProperty(baselineArb, fc.array(opArb, { maxLength: 12 }), async (spec, ops) => {
      const rawBefore = rawFds();
      const world: Held[] = [];
      const closedBefore: Entry[] = [];
      const opened: Held[] = [];
      let report;
      try {
        const baseline: Held[] = [];
        for (const { kind, lock } of spec) {
          const made = make(kind);
          const [first] = made as [Held];
          if (lock && first.path !== undefined && kind !== 'dir') {
            // Through a second name, so that the first one's deletion does not rename this fd.
            linkSync(first.path, `${first.path}.q`);
            first.query = openSync(`${first.path}.q`, 'r+');
            posixLock(first.fd, 'write');
          }
          baseline.push(...made);
        }
        world.push(...baseline);
        const table = openFdTable();
        const targetOf = (fd: number): string => table.get(fd) as string;
        // An eventfd closed by the program is never replaced by the check's eyes: two eventfds
        // share one inode and one name, so the program closes only what has a file of its own.
        const closable = (): Held[] => baseline.filter((h) => h.open && h.kind !== 'eventfd');
        report = await checkFdLeaks(() => {
          for (const o of ops) {
            if (o.op === 'open') {
              const made = make(o.kind);
              world.push(...made);
              opened.push(...made);
            } else if (o.op === 'closeOpened') {
              const live = opened.filter((h) => h.open);
              const h = live[o.which % Math.max(live.length, 1)];
              if (h === undefined) continue;
              closeFd(h.fd);
              h.open = false;
            } else {
              const candidates = o.op === 'close' ? closable() : closable().filter((h) => h.path !== undefined);
              const h = candidates[o.which % Math.max(candidates.length, 1)];
              if (h === undefined) continue;
              closedBefore.push({ fd: h.fd, target: targetOf(h.fd) });
              closeFd(h.fd);
              h.open = false;
              if (o.op === 'replace' && h.path !== undefined) {
                // The caller's file is deleted and a new one made at its path, opened at the lowest number: its own.
                if (h.kind === 'dir') {
                  rmdirSync(h.path);
                  mkdirSync(h.path);
                } else {
                  unlinkSync(h.path);
                  writeFileSync(h.path, 'y');
                }
                const again: Held = { fd: openSync(h.path, h.kind === 'dir' ? 'r' : 'r+'), kind: h.kind, path: h.path, open: true };
                world.push(again);
                opened.push(again);
              }
            }
          }
        }, { settleMs: 0 });
        const now = openFdTable();
        const leaked = opened.filter((h) => h.open).map((h) => ({ fd: h.fd, target: now.get(h.fd) as string }));
        expect({
          leaks: report.leaks.map(({ fd, target }) => ({ fd, target })).sort(byFd),
          closed: report.closed.map(({ fd, target }) => ({ fd, target })).sort(byFd),
        }).toEqual({ leaks: leaked.sort(byFd), closed: closedBefore.sort(byFd) });
        // The process's lock is gone exactly when the program closed that fd of the file.
        for (const h of baseline.filter((b) => b.query !== undefined)) {
          expect({ fd: h.fd, lock: conflictingLock(h.query as number) }).toEqual({ fd: h.fd, lock: h.open ? 'write' : 'none' });
        }
        // An end sees EOF exactly when the program closed the other one (the check keeps no end open).
        for (const h of world.filter((w) => w.open && w.reads === true)) {
          expect({ fd: h.fd, kind: h.kind, eof: atEof(h.fd) }).toEqual({ fd: h.fd, kind: h.kind, eof: !(h.peer as Held).open });
        }
        expect({ holds: liveFdTableHolds(), held: heldByThreads() }).toEqual({ holds: 0, held: [] });
      } finally {
        for (const h of world) {
          if (h.open) closeFd(h.fd);
          if (h.query !== undefined) closeSync(h.query);
        }
      }
      // Nothing of the check's is left, its holds included (openFdTable would not show those).
      expect(rawFds()).toEqual(rawBefore);
    }),
    { seed: Number(process.env.FDBRIDGE_HOLD_SEED ?? 20261201), numRuns: Number(process.env.FDBRIDGE_HOLD_RUNS ?? 40) },
  );
});

/**
 * The leak checks' hold threads in this process now: tid -> the targets of
 * their table's entries. A released hold's thread has emptied its table
 * before release() returns, but may be listed for a moment longer, exiting.
 */
function holdThreads(): Map<number, string[]> {
  const threads = new Map<number, string[]>();
  for (const tid of readdirSync('/proc/self/task')) {
    let comm: string;
    try {
      comm = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue; // ended meanwhile
    }
    if (comm !== 'fdbridge-hold') continue;
    const dir = `/proc/self/task/${tid}/fd`;
    let entries: string[];
    try {
      entries = readdirSync(dir).map((n) => readlinkSync(join(dir, n)));
    } catch {
      entries = []; // ended meanwhile (its table gone with it)
    }
    threads.set(Number(tid), entries.sort());
  }
  return threads;
}

/** What the hold threads still hold: every entry of their tables. */
function heldByThreads(): string[] {
  return [...holdThreads().values()].flat();
}

/** Resolves once no hold thread is left (an ended thread is reaped by the kernel, not by us: no deadline here). */
async function holdThreadsGone(): Promise<void> {
  while (holdThreads().size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
}

test('a check takes no number of the table: code closing every number it did not open (close_range over the table) closes none of the check\'s, whose references are in its own thread\'s table, and the verdict stands', async () => {
  const rawBefore = rawFds();
  const path = join(dir, `closer-${serial++}`);
  writeFileSync(path, 'x');
  const fd = openSync(path, 'r');
  let reopened = -1;
  try {
    const baseline = openFdTable();
    const report = await checkFdLeaks(() => {
      // Every number /proc/self/fd lists besides what openFdTable shows (and the listing's own
      // directory, the lowest free number): what a close_range over the table would close of the check's.
      const shown = openFdTable();
      const listing = Math.min(...rawFds().filter((n) => !shown.has(n)));
      expect(rawFds().filter((n) => !shown.has(n) && n !== listing)).toEqual([]);
      // The references are in one thread's own table: one for each baseline file but anonymous inodes.
      const threads = [...holdThreads().values()].filter((held) => held.length > 0);
      expect(threads).toHaveLength(1);
      const files = [...baseline.values()].filter((t) => !t.startsWith('anon_inode:')).sort();
      expect(threads[0]).toEqual(files);
      // The file replaced at its path (its inode number free to be given again) is told apart still.
      closeSync(fd);
      unlinkSync(path);
      writeFileSync(path, 'y');
      reopened = openSync(path, 'r');
    }, { settleMs: 0 });
    expect({ leaks: report.leaks.map((e) => [e.fd, e.target]), closed: report.closed.map((e) => [e.fd, e.target]) })
      .toEqual({ leaks: [[reopened, path]], closed: [[fd, path]] });
    expect({ holds: liveFdTableHolds(), held: heldByThreads() }).toEqual({ holds: 0, held: [] });
    await holdThreadsGone();
  } finally {
    closeSync(reopened >= 0 ? reopened : fd);
  }
  expect(rawFds()).toEqual(rawBefore);
});

test('a worker thread terminated mid-check leaves no hold: its environment\'s teardown ends the hold and its thread', async () => {
  const rawBefore = rawFds();
  const worker = new Worker(
    `
const { parentPort } = require('node:worker_threads');
const { checkFdLeaks } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
setInterval(() => undefined, 60_000); // alive until terminated, its check never ending
checkFdLeaks(() => new Promise(() => parentPort.postMessage('checking')));
`,
    { eval: true },
  );
  await new Promise((resolve) => worker.once('message', resolve));
  expect({ holds: liveFdTableHolds(), holding: [...holdThreads().values()].filter((held) => held.length > 0).length }).toEqual({ holds: 1, holding: 1 });
  await worker.terminate();
  expect({ holds: liveFdTableHolds(), held: heldByThreads() }).toEqual({ holds: 0, held: [] });
  await holdThreadsGone();
  // The rest of the worker's teardown (its loop's fds) may close in the background.
  while (reapsPending() !== 0 || backgroundClosesPending() !== 0) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(rawFds()).toEqual(rawBefore);
});
