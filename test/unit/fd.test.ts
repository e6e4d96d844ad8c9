/**
 * The fd helpers beyond dup/close/identity (test/native/fd-primitives.test.ts):
 * the fds they make, cleanup that must not stop at a closed fd, the fd
 * floor and limit, the table diff the leak checks are built on, file types
 * and flags, and the copies held for the background closer.
 */
import { execFileSync, spawn } from 'node:child_process';
import { constants, fstatSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { SystemError } from '../../src/errors';
import {
  backgroundCloseFds,
  CLOSES_GIVE_UP_MS,
  closeFd,
  closeFds,
  diffFdTables,
  dupFd,
  fdFlags,
  fdFloor,
  fdIdentity,
  fdLimit,
  FdTableHold,
  formatFdTableDiff,
  HeldCopies,
  isFdOpen,
  makeEventfd,
  makeMemfd,
  makePipe,
  openFdTable,
  OwnedFd,
  peerCloseOwner,
  sameFile,
  setFdLimit,
  setFdFlags,
  type FdFlags,
  type FdTable,
  type FileType,
  validateFd,
  validateFds,
} from '../../src/fd';
import { distPath } from '../../src/paths';
import { liveFdTableHolds } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { within } from '../util/within';

/** open(2)'s O_PATH (not in fs.constants): a reference that opens nothing, enough for fstat. */
const O_PATH = 0o10000000;

describe('fd arguments', () => {
  const value = fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.string(), fc.boolean(), fc.bigInt(), fc.constant(null), fc.constant(undefined));

  /** What validateFd throws for `v` named `what`, or undefined for an fd number (an integer from 0 to 2^31 - 1). */
  const refusal = (v: unknown, what: string): TypeError | undefined => {
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= 0)) return new TypeError(`${what} must be a non-negative integer, not ${String(v)}`);
    if (v > 0x7fffffff) return new TypeError(`${what} must be a non-negative integer up to 2^31 - 1 (an fd number), not ${v}`);
    return undefined;
  };

  test('model: validateFd returns an fd number (an integer from 0 to 2^31 - 1) as it is, and refuses anything else with a TypeError naming the argument and the value', () => {
    fc.assert(
      fc.property(fc.oneof(value, fc.integer({ min: 0x7ffffff0, max: 2 ** 32 }), fc.constantFrom(2 ** 31, 2 ** 53, 1e300)), fc.constantFrom('fd', 'target'), (v, what) => {
        const refused = refusal(v, what);
        if (refused === undefined) expect(validateFd(v, what)).toBe(v);
        else expect(() => validateFd(v, what)).toThrow(refused);
      }),
    );
    expect(validateFd(0)).toBe(0);
    expect(() => validateFd(-1)).toThrow(new TypeError('fd must be a non-negative integer, not -1'));
  });

  test('model: validateFds refuses the first element that is not an fd, a hole of a sparse list included, naming it by its index', () => {
    fc.assert(
      fc.property(fc.sparseArray(fc.oneof(value, fc.integer({ min: 0x7ffffff0, max: 2 ** 32 })), { maxLength: 8 }), (list) => {
        const bad = Array.from({ length: list.length }, (_, i) => i).find((i) => refusal(list[i], `fds[${i}]`) !== undefined);
        if (bad === undefined) expect(validateFds(list)).toBeUndefined();
        else expect(() => validateFds(list)).toThrow(refusal(list[bad], `fds[${bad}]`));
      }),
    );
  });
});

describe('fds made for the caller', () => {
  test('makePipe: a read end and a write end of one pipe, both close-on-exec', () => {
    const [r, w] = makePipe();
    try {
      expect(fdIdentity(r).type).toBe('pipe');
      expect(sameFile(r, w)).toBe(true);
      expect(fdFlags(r).cloexec).toBe(true);
      expect(fdFlags(w).cloexec).toBe(true);
      expect(readlinkSync(`/proc/self/fd/${r}`)).toMatch(/^pipe:/);
    } finally {
      closeFd(r);
      closeFd(w);
    }
  });

  test('makeMemfd: a close-on-exec memfd with the name given, "fdbridge" by default', () => {
    const named = makeMemfd('unit-name');
    const plain = makeMemfd();
    try {
      expect(readlinkSync(`/proc/self/fd/${named}`)).toBe('/memfd:unit-name (deleted)');
      expect(readlinkSync(`/proc/self/fd/${plain}`)).toBe('/memfd:fdbridge (deleted)');
      expect(fdIdentity(named).type).toBe('file');
      expect(fdFlags(named).cloexec).toBe(true);
      expect(sameFile(named, plain)).toBe(false);
    } finally {
      closeFds([named, plain]);
    }
  });

  test('makeEventfd: a close-on-exec eventfd', () => {
    const fd = makeEventfd();
    try {
      expect(readlinkSync(`/proc/self/fd/${fd}`)).toBe('anon_inode:[eventfd]');
      expect(fdFlags(fd)).toEqual({ cloexec: true, nonblock: false });
    } finally {
      closeFd(fd);
    }
  });

  test('fdIdentity: dev and ino as bigints, the same for two fds of one file and different for another', () => {
    const a = openSync('/dev/null', 'r');
    const b = openSync('/dev/null', 'r');
    const c = openSync('/dev/zero', 'r');
    try {
      const x = fdIdentity(a);
      expect(typeof x.dev).toBe('bigint');
      expect(typeof x.ino).toBe('bigint');
      expect(x).toEqual(fdIdentity(b));
      expect(x.type).toBe('char');
      expect(sameFile(a, b)).toBe(true);
      expect(sameFile(a, c)).toBe(false);
    } finally {
      closeFds([a, b, c]);
    }
  });
});

describe('file types and flags', () => {
  test('fdIdentity names the type of every kind of file as fstat(2) gives it: a regular file, a directory, a pipe, a socket, a character and a block device, a symlink (O_PATH), and an anonymous inode as unknown', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-fd-types-'));
    const fds: number[] = [];
    const open = (path: string, flags: number | string): number => {
      const fd = openSync(path, flags);
      fds.push(fd);
      return fd;
    };
    try {
      symlinkSync('/dev/null', join(dir, 'link'));
      // A block device: one of /dev's, or one made here (root: the suite runs as root).
      let block = readdirSync('/dev')
        .map((name) => join('/dev', name))
        .find((path) => lstatSync(path).isBlockDevice());
      if (block === undefined) {
        block = join(dir, 'block');
        execFileSync('mknod', [block, 'b', '7', '0']);
      }
      const [pipeRead, pipeWrite] = makePipe();
      const [socketA, socketB] = rawSocketPair('stream');
      fds.push(pipeRead, pipeWrite, socketA, socketB);
      const made: Record<FileType, number> = {
        file: open(join(dir, 'file'), 'w'),
        directory: open(dir, constants.O_RDONLY | constants.O_DIRECTORY),
        pipe: pipeRead,
        socket: socketA,
        char: open('/dev/null', 'r'),
        block: open(block, O_PATH),
        symlink: open(join(dir, 'link'), O_PATH | constants.O_NOFOLLOW),
        unknown: makeEventfd(),
      };
      fds.push(made.unknown);
      for (const [type, fd] of Object.entries(made)) {
        const st = fstatSync(fd, { bigint: true });
        expect({ fd, ...fdIdentity(fd) }).toEqual({ fd, dev: st.dev, ino: st.ino, type });
      }
    } finally {
      closeFds(fds);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('isFdOpen: true for an open number, false once it is closed and for a number never opened', () => {
    const fd = makeMemfd();
    expect(isFdOpen(fd)).toBe(true);
    closeFd(fd);
    expect(isFdOpen(fd)).toBe(false);
    expect(isFdOpen(Math.max(...openFdTable().keys()) + 1000)).toBe(false);
  });

  test('model: setFdFlags changes exactly the flags given; fdFlags reads both back, as /proc/self/fdinfo has them', () => {
    const O_NONBLOCK = 0o4000;
    const O_CLOEXEC = 0o2000000;
    /** The flags the kernel shows for `fd` (fdinfo's octal `flags:`). */
    const kernelFlags = (fd: number): FdFlags => {
      const flags = Number.parseInt(/^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? 'x', 8);
      return { cloexec: (flags & O_CLOEXEC) !== 0, nonblock: (flags & O_NONBLOCK) !== 0 };
    };
    const change = fc.record({ cloexec: fc.boolean(), nonblock: fc.boolean() }, { requiredKeys: [] });
    fc.assert(
      fc.property(fc.array(change, { maxLength: 6 }), (changes) => {
        const [r, w] = makePipe();
        try {
          const model: FdFlags = { cloexec: true, nonblock: false };
          for (const flags of changes) {
            setFdFlags(r, flags);
            Object.assign(model, flags);
            expect(fdFlags(r)).toEqual(model);
            expect(kernelFlags(r)).toEqual(model);
          }
          // The other end of the pipe is another open file: untouched.
          expect(fdFlags(w)).toEqual({ cloexec: true, nonblock: false });
        } finally {
          closeFd(r);
          closeFd(w);
        }
      }),
    );
  });
});

describe('in a worker thread', () => {
  test("the fds the helpers make there are handed to their caller, not kept by the thread's environment: they stay open after the thread ends", async () => {
    // The compiled module, as a user's worker loads it.
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const fd = require(workerData);
       const [r, w] = fd.makePipe();
       parentPort.postMessage({ r, w, memfd: fd.makeMemfd('from-worker'), eventfd: fd.makeEventfd(), dup: fd.dupFd(r) });`,
      { eval: true, workerData: distPath('src/fd.js') },
    );
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    const made = await new Promise<Record<string, number>>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const fds = Object.values(made);
    try {
      await exited;
      for (const fd of fds) expect(isFdOpen(fd)).toBe(true);
      expect(sameFile(made.r as number, made.dup as number)).toBe(true);
      expect(readlinkSync(`/proc/self/fd/${made.memfd}`)).toBe('/memfd:from-worker (deleted)');
      expect(readlinkSync(`/proc/self/fd/${made.eventfd}`)).toBe('anon_inode:[eventfd]');
    } finally {
      closeFds(fds);
    }
  });
});

describe('sameFile', () => {
  test('tells two files apart by their device as well as their inode number: the roots of /proc and /sys are both inode 1', () => {
    const proc = openSync('/proc', constants.O_RDONLY | constants.O_DIRECTORY);
    const sys = openSync('/sys', constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      const [p, q] = [fstatSync(proc, { bigint: true }), fstatSync(sys, { bigint: true })];
      expect(p.ino).toBe(q.ino);
      expect(p.dev).not.toBe(q.dev);
      expect(sameFile(proc, sys)).toBe(false);
      expect(sameFile(proc, proc)).toBe(true);
    } finally {
      closeFds([proc, sys]);
    }
  });
});

describe('closeFds', () => {
  test('closes every fd, skips the ones already closed, and counts what it closed', () => {
    const fds = [makeMemfd(), makeMemfd(), makeMemfd()];
    closeFd(fds[1]!);
    expect(closeFds(fds)).toBe(2);
    for (const fd of fds) expect(openFdTable().has(fd)).toBe(false);
    expect(closeFds(fds)).toBe(0);
  });

  test('nothing given: nothing closed', () => {
    expect(closeFds(undefined)).toBe(0);
    expect(closeFds([])).toBe(0);
    expect(closeFds(new Set<number>())).toBe(0);
  });

  test('any iterable: a Set', () => {
    const fds = new Set([makeMemfd(), makeMemfd()]);
    expect(closeFds(fds)).toBe(2);
    for (const fd of fds) expect(openFdTable().has(fd)).toBe(false);
  });

  test('closeFd on a closed fd is a typed EBADF (not skipped like closeFds)', () => {
    const fd = makeMemfd();
    closeFd(fd);
    let err: unknown;
    try {
      closeFd(fd);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code: 'EBADF', syscall: 'close' });
  });
});

describe('OwnedFd', () => {
  test('a non-integer or negative number is a RangeError naming it', () => {
    expect(() => new OwnedFd(-1)).toThrow(new RangeError('OwnedFd: -1 is not an fd'));
    expect(() => new OwnedFd(1.5)).toThrow(new RangeError('OwnedFd: 1.5 is not an fd'));
    expect(() => new OwnedFd(Number.NaN)).toThrow(new RangeError('OwnedFd: NaN is not an fd'));
    // 0 is an fd like any other (not closed, here: just not taken).
    const zero = new OwnedFd(0);
    expect(zero.closed).toBe(false);
    expect(zero.release()).toBe(0);
    expect(zero.closed).toBe(true);
  });

  test('a released fd stays open and a second release is a ClosedError', () => {
    const owned = new OwnedFd(makeMemfd());
    const fd = owned.release();
    try {
      expect(openFdTable().has(fd)).toBe(true);
      expect(() => owned.release()).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_CLOSED', message: expect.stringMatching(/closed or released/) }));
      expect(() => owned.fd).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_CLOSED' }));
      owned.close(); // nothing to close: it was released
      expect(openFdTable().has(fd)).toBe(true);
    } finally {
      closeFd(fd);
    }
  });

  test('an OwnedFd of fd 0 closes fd 0 (0 is an fd like any other)', () => {
    // fd 0 (the test process's stdin) is put back afterwards: a duplicate takes the lowest free number.
    const wasCloexec = fdFlags(0).cloexec;
    const saved = dupFd(0);
    let back: number | undefined;
    try {
      const owned = new OwnedFd(0);
      owned.close();
      expect(owned.closed).toBe(true);
      expect(openFdTable().has(0)).toBe(false);
    } finally {
      back = dupFd(saved);
      if (back === 0) setFdFlags(0, { cloexec: wasCloexec });
      else closeFd(back);
      closeFd(saved);
    }
    expect(back).toBe(0);
  });

  test('dispose closes', () => {
    const owned = new OwnedFd(makeMemfd());
    const fd = owned.fd;
    owned[Symbol.dispose]();
    expect(owned.closed).toBe(true);
    expect(openFdTable().has(fd)).toBe(false);
  });
});

describe('fd floor and limit', () => {
  test('the floor is half the soft limit, at most 8192', () => {
    const [soft] = fdLimit();
    expect(fdFloor()).toBe(Math.min(8192, Math.floor(soft / 2)));
  });

  test('setFdLimit with only a soft limit keeps the hard limit', () => {
    const [soft, hard] = fdLimit();
    try {
      setFdLimit(soft - 1);
      expect(fdLimit()).toEqual([soft - 1, hard]);
    } finally {
      setFdLimit(soft, hard);
    }
    expect(fdLimit()).toEqual([soft, hard]);
  });
});

describe('diffFdTables and formatFdTableDiff', () => {
  const table = (entries: Array<[number, string]>): FdTable => new Map(entries);

  test('equal tables: no difference, empty text', () => {
    const t = table([[0, '/dev/null'], [3, 'pipe:[1]']]);
    expect(diffFdTables(t, new Map(t))).toEqual({ opened: [], closed: [] });
    expect(formatFdTableDiff(diffFdTables(t, t))).toBe('');
  });

  test('an fd opened, one closed, and one reused for another target (counted both ways)', () => {
    const before = table([[3, 'a'], [4, 'b'], [5, 'c']]);
    const after = table([[3, 'a'], [5, 'C'], [6, 'd']]);
    const diff = diffFdTables(before, after);
    expect(diff.opened).toEqual([{ fd: 5, target: 'C' }, { fd: 6, target: 'd' }]);
    expect(diff.closed).toEqual([{ fd: 4, target: 'b' }, { fd: 5, target: 'c' }]);
    expect(formatFdTableDiff(diff)).toBe('+ fd 5 -> C\n+ fd 6 -> d\n- fd 4 -> b\n- fd 5 -> c');
  });

  test('model: the diff is exactly the symmetric difference of the (fd, target) pairs (without the files read, a name gaining " (deleted)" is a change too)', () => {
    const entries = fc.array(fc.tuple(fc.integer({ min: 0, max: 12 }), fc.constantFrom('a', 'b', 'c', 'a (deleted)', 'b (deleted)')), { maxLength: 12 });
    fc.assert(
      fc.property(entries, entries, (b, a) => {
        const before = table(b);
        const after = table(a);
        const diff = diffFdTables(before, after);
        const key = (fd: number, t: string): string => `${fd}=${t}`;
        const beforeKeys = new Set([...before].map(([fd, t]) => key(fd, t)));
        const afterKeys = new Set([...after].map(([fd, t]) => key(fd, t)));
        expect(new Set(diff.opened.map((e) => key(e.fd, e.target)))).toEqual(
          new Set([...afterKeys].filter((k) => !beforeKeys.has(k))),
        );
        expect(new Set(diff.closed.map((e) => key(e.fd, e.target)))).toEqual(
          new Set([...beforeKeys].filter((k) => !afterKeys.has(k))),
        );
        expect(formatFdTableDiff(diff).split('\n').filter(Boolean)).toHaveLength(diff.opened.length + diff.closed.length);
      }),
    );
  });

  test('this process: a number closed and opened again for another file of the same name counts as closed and opened; a table without the files read (a plain Map) is compared by target', () => {
    const fd = makeMemfd('same-name');
    const before = openFdTable();
    closeFd(fd);
    // The lowest free number: the one just closed (nothing else in this thread opens an fd in between).
    const again = makeMemfd('same-name');
    try {
      expect(again).toBe(fd);
      const after = openFdTable();
      const target = '/memfd:same-name (deleted)';
      expect(diffFdTables(before, after)).toEqual({ opened: [{ fd, target }], closed: [{ fd, target }] });
      // With either side a plain Map of the same targets, only the targets are compared.
      expect(diffFdTables(new Map(before), after)).toEqual({ opened: [], closed: [] });
      expect(diffFdTables(before, new Map(after))).toEqual({ opened: [], closed: [] });
      // The same file on both sides: no change.
      expect(diffFdTables(after, openFdTable())).toEqual({ opened: [], closed: [] });
    } finally {
      closeFd(again);
    }
  });

  test("this process at its fd limit, no number left to read each fd's file with (EMFILE): the table is read all the same, and compared by target", () => {
    const [soft, hard] = fdLimit();
    // The two lowest free numbers: with the soft limit just above them, reading the table takes both.
    const a = dupFd(0);
    const b = dupFd(0);
    closeFd(a);
    closeFd(b);
    const before = openFdTable();
    let atLimit: FdTable = new Map();
    setFdLimit(Math.max(a, b) + 1, hard);
    try {
      atLimit = openFdTable();
    } finally {
      setFdLimit(soft, hard);
    }
    expect(atLimit).toEqual(before);
    expect(diffFdTables(before, atLimit)).toEqual({ opened: [], closed: [] });
    expect(diffFdTables(atLimit, openFdTable())).toEqual({ opened: [], closed: [] });
  });

  test('this process: an fd opened shows up as opened with its target', () => {
    const before = openFdTable();
    const fd = makeMemfd('diffed');
    try {
      const diff = diffFdTables(before, openFdTable());
      expect(diff.opened).toEqual([{ fd, target: '/memfd:diffed (deleted)' }]);
      expect(diff.closed).toEqual([]);
    } finally {
      closeFd(fd);
    }
  });
});

describe('FdTableHold', () => {
  /** The targets of the entries of thread `tid`'s own fd table. */
  const threadTable = (tid: number): string[] =>
    readdirSync(`/proc/self/task/${tid}/fd`)
      .map((n) => readlinkSync(`/proc/self/task/${tid}/fd/${n}`))
      .sort();

  test('holds the files of a table of this process, anonymous inodes aside, in a thread of its own until release(); release() and dispose are idempotent', () => {
    const [r, w] = makePipe();
    const fds = [r, w, makeEventfd(), makeMemfd('held')];
    try {
      const table = openFdTable();
      const hold = new FdTableHold(table);
      try {
        expect(hold.pid).toBe(process.pid);
        const tid = hold.thread as number;
        expect(tid).toEqual(expect.any(Number));
        expect(liveFdTableHolds()).toBe(1);
        expect(threadTable(tid)).toEqual([...table.values()].filter((t) => !t.startsWith('anon_inode:')).sort());
      } finally {
        expect(hold.release()).toBe(true);
      }
      expect(hold.thread).toBeUndefined();
      expect(liveFdTableHolds()).toBe(0);
      expect(hold.release()).toBe(true);
      hold[Symbol.dispose]();
      expect(liveFdTableHolds()).toBe(0);
      // Disposing a hold releases it.
      const disposed = new FdTableHold(openFdTable());
      expect(liveFdTableHolds()).toBe(1);
      disposed[Symbol.dispose]();
      expect({ holds: liveFdTableHolds(), thread: disposed.thread }).toEqual({ holds: 0, thread: undefined });
    } finally {
      closeFds(fds);
    }
  });

  test("holds the files of another process's table, read from that process", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-hold-'));
    const path = join(dir, 'theirs');
    const theirs = openSync(path, 'w');
    const child = spawn('sleep', ['600'], { stdio: ['ignore', 'ignore', 'ignore', theirs] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    closeFd(theirs);
    try {
      const pid = child.pid as number;
      // Read once sleep(1) sits in its sleep: until then its table changes on its own (the spawn's
      // close-on-exec pipe before the exec, the locale files setlocale opens and closes after it).
      await within(
        (async () => {
          while (readFileSync(`/proc/${pid}/wchan`, 'utf8') !== 'hrtimer_nanosleep') await new Promise((resolve) => setTimeout(resolve, 10));
        })(),
        20_000,
        'sleep(1) in its sleep',
      );
      const table = openFdTable(pid);
      expect(table.get(3)).toBe(path);
      const hold = new FdTableHold(table, pid);
      try {
        expect(hold.pid).toBe(pid);
        expect(threadTable(hold.thread as number)).toEqual([...table.values()].filter((t) => !t.startsWith('anon_inode:')).sort());
      } finally {
        hold.release();
      }
    } finally {
      child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a table whose files were not read (a plain Map of its targets): nothing held, no thread, release() is true', () => {
    const hold = new FdTableHold(new Map(openFdTable()));
    expect(hold.thread).toBeUndefined();
    expect(liveFdTableHolds()).toBe(0);
    expect(hold.release()).toBe(true);
  });
});

describe('closes on the background closer', () => {
  /** Turns the event loop (setImmediate: the test's timers may be fake) until `ok()` holds. */
  async function until(ok: () => boolean): Promise<void> {
    while (!ok()) await new Promise((r) => setImmediate(r));
  }

  test("peerCloseOwner: one owner per uid a helper serves, never 0 (everyone else's) and below every owner of the process's own", () => {
    const own = new HeldCopies().owner;
    const uid = fc.integer({ min: 0, max: 2 ** 32 - 2 });
    fc.assert(
      fc.property(uid, uid, (a, b) => {
        expect(peerCloseOwner(a)).toBeGreaterThan(0);
        expect(peerCloseOwner(a)).toBeLessThan(own);
        expect(peerCloseOwner(a) === peerCloseOwner(b)).toBe(a === b);
      }),
    );
  });

  test('HeldCopies: the copies handed over are closed; settled() resolves at once when nothing is left to close', async () => {
    const held = new HeldCopies();
    jest.useFakeTimers({ doNotFake: ['Date', 'hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setInterval', 'clearInterval'] });
    try {
      await held.settled(); // nothing handed over: no give-up timer to wait for
      const fds = [makeMemfd(), makeMemfd(), makeMemfd()];
      held.close(fds.slice(0, 2));
      held.close([]);
      held.close(fds.slice(2));
      await held.settled();
      for (const fd of fds) expect(isFdOpen(fd)).toBe(false);
      await held.settled();
      expect(jest.getTimerCount()).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });

  (hasPython() ? test : test.skip)(
    'HeldCopies.settled waits for a close that blocks, also behind more than 64 batches closed since, gives up on it after CLOSES_GIVE_UP_MS, and resolves once it returns, leaving no timer behind',
    async () => {
      const linger = await lingeringSocket(1);
      const held = new HeldCopies();
      jest.useFakeTimers({ doNotFake: ['Date', 'hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setInterval', 'clearInterval'] });
      try {
        held.close([linger.fd]); // the socket's last reference: its close blocks for the linger time
        // Until a closer thread is in that close (close(2) has taken the number out of the table).
        await until(() => !isFdOpen(linger.fd));
        for (let i = 0; i < 70; i++) held.close([makeMemfd()]);
        // Every other batch closed: only the blocked close left on the closer.
        await until(() => {
          const { queued, running } = backgroundCloseFds();
          return queued.length === 0 && running.length === 1;
        });
        let gaveUp = false;
        const first = held.settled().then(() => (gaveUp = true));
        await new Promise((r) => setImmediate(r));
        expect(gaveUp).toBe(false);
        jest.advanceTimersByTime(CLOSES_GIVE_UP_MS - 1);
        await new Promise((r) => setImmediate(r));
        expect(gaveUp).toBe(false);
        jest.advanceTimersByTime(1);
        await first;
        // Still blocked: a new wait waits for it again, and ends when the close returns, with no timer left.
        let returned = false;
        const second = held.settled().then(() => (returned = true));
        await new Promise((r) => setImmediate(r));
        expect(returned).toBe(false);
        await linger.end(); // resets the peer: the close returns
        await second;
        expect(backgroundCloseFds()).toEqual({ queued: [], running: [] });
        expect(jest.getTimerCount()).toBe(0);
      } finally {
        jest.useRealTimers();
        await linger.end();
      }
    },
  );

  (hasPython() ? test : test.skip)('a process whose wait gave up on a close that blocks exits all the same: the closer keeps nothing alive', async () => {
    const linger = await lingeringSocket(1);
    try {
      // The child hands its fd 3, a copy of the socket, to a HeldCopies once told to (after ours is closed: its close is then the last one).
      const child = spawn(
        process.execPath,
        [
          '-e',
          `const fd = require(process.argv[1]);
           process.stdin.once('data', () => {
             process.stdin.destroy();
             const held = new fd.HeldCopies();
             held.close([3]);
             held.settled().then(() => process.stdout.write(JSON.stringify(fd.backgroundCloseFds())));
           });`,
          distPath('src/fd.js'),
        ],
        { stdio: ['pipe', 'pipe', 'inherit', linger.fd] },
      );
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      const { stdin, stdout } = child;
      if (stdin === null || stdout === null) throw new Error('spawn gave no stdin or stdout pipe');
      let out = '';
      stdout.on('data', (d: Buffer) => (out += d.toString()));
      closeFd(linger.fd);
      stdin.end('go\n');
      expect(await exited).toBe(0);
      // It gave up while the close still blocked (a closer thread in it), and exited.
      expect(JSON.parse(out)).toEqual({ queued: [], running: [3] });
    } finally {
      await linger.end();
    }
  });
});
