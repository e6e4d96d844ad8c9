/**
 * The fd helpers beyond dup/close/identity (test/native/fd-primitives.test.ts):
 * the fds they make, cleanup that must not stop at a closed fd, the fd
 * floor and limit, and the table diff the leak checks are built on.
 */
import { openSync, readlinkSync } from 'node:fs';

import fc from 'fast-check';

import { SystemError } from '../../src/errors';
import {
  closeFd,
  closeFds,
  diffFdTables,
  dupFd,
  fdFlags,
  fdFloor,
  fdIdentity,
  fdLimit,
  formatFdTableDiff,
  makeEventfd,
  makeMemfd,
  makePipe,
  openFdTable,
  OwnedFd,
  sameFile,
  setFdLimit,
  setFdFlags,
  type FdTable,
} from '../../src/fd';

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

  test('model: the diff is exactly the symmetric difference of the (fd, target) pairs', () => {
    const entries = fc.array(fc.tuple(fc.integer({ min: 0, max: 12 }), fc.constantFrom('a', 'b', 'c')), { maxLength: 12 });
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
