/**
 * The fd primitives the rest stands on: dup, close, identity, flags, the
 * open-fd table of a process, pidfd_open / pidfd_getfd, RLIMIT_NOFILE.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync, readFileSync, symlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { ClosedError, SystemError } from '../../src/errors';
import {
  closeFd,
  diffFdTables,
  dupFd,
  fdFlags,
  fdIdentity,
  fdLimit,
  formatFdTableDiff,
  OwnedFd,
  openFdTable,
  sameFile,
  setFdLimit,
} from '../../src/fd';
import { native } from './binding';
import { UnixSocket } from '../../src/socket';
import { collect, expectRangeError, expectSystemError, thrown, withScope } from './helpers';

function exited(child: ChildProcess): Promise<void> {
  return collect(child).then(() => undefined);
}

describe('dup and close', () => {
  test('dupFd gives a new, close-on-exec fd for the same open file (shared offset)', () =>
    withScope(async (s) => {
      const { path, fd } = s.file();
      native.setCloexec(fd.fd, false);
      const dup = s.own(dupFd(fd.fd));
      expect(dup.fd).not.toBe(fd.fd);
      expect(fdFlags(dup.fd).cloexec).toBe(true);
      expect(fdFlags(fd.fd).cloexec).toBe(false);
      expect(sameFile(dup.fd, fd.fd)).toBe(true);
      writeSync(fd.fd, 'ab');
      writeSync(dup.fd, 'cd');
      expect(readFileSync(path, 'utf8')).toBe('abcd');
    }));

  test('dup of a closed fd: EBADF from dup', () => {
    const fd = openSync('/dev/null', 'r');
    closeSync(fd);
    expectSystemError(thrown(() => dupFd(fd)), 'EBADF', 'dup');
  });

  test('closing twice: the second close is a typed EBADF', () => {
    const fd = openSync('/dev/null', 'r');
    closeFd(fd);
    expect(openFdTable().has(fd)).toBe(false);
    const err = thrown(() => closeFd(fd));
    expectSystemError(err, 'EBADF', 'close');
    expect((err as SystemError).errno).toBe(-9);
  });

  test('a negative fd is a RangeError before any syscall', () => {
    expectRangeError(thrown(() => closeFd(-1)), /fd/);
    expectRangeError(thrown(() => dupFd(-3)), /fd/);
  });
});

describe('OwnedFd', () => {
  test('close() is idempotent; fd after close is a ClosedError', () => {
    const owned = new OwnedFd(openSync('/dev/null', 'r'));
    const n = owned.fd;
    owned.close();
    expect(owned.closed).toBe(true);
    expect(openFdTable().has(n)).toBe(false);
    owned.close();
    expect(thrown(() => owned.fd)).toBeInstanceOf(ClosedError);
  });

  test('release() hands the number over and forgets it', () => {
    const owned = new OwnedFd(openSync('/dev/null', 'r'));
    const n = owned.release();
    owned.close(); // no effect: not ours any more
    expect(openFdTable().get(n)).toBe('/dev/null');
    closeFd(n);
  });

  test('`using` closes it at the end of the block', () => {
    let n = -1;
    {
      using owned = new OwnedFd(openSync('/dev/null', 'r'));
      n = owned.fd;
      expect(openFdTable().has(n)).toBe(true);
    }
    expect(openFdTable().has(n)).toBe(false);
  });

  test('rejects what is not an fd', () => {
    expectRangeError(thrown(() => new OwnedFd(-1)), /not an fd/);
    expectRangeError(thrown(() => new OwnedFd(1.5)), /not an fd/);
  });
});

describe('identity and flags', () => {
  test('file types: file, directory, pipe, socket, char device, symlink', () =>
    withScope(async (s) => {
      const dir = s.dir();
      const file = s.file().fd;
      const dirFd = s.own(openSync(dir, 'r'));
      const { read } = s.pipe();
      const [sock] = UnixSocket.pair('stream').map((x) => s.add(x));
      const devNull = s.own(openSync('/dev/null', 'r'));
      const link = join(dir, 'link');
      symlinkSync('/dev/null', link);
      const O_PATH = 0o10000000;
      const linkFd = s.own(openSync(link, O_PATH | fsConstants.O_NOFOLLOW));
      expect(fdIdentity(file.fd).type).toBe('file');
      expect(fdIdentity(dirFd.fd).type).toBe('directory');
      expect(fdIdentity(read.fd).type).toBe('pipe');
      expect(fdIdentity(sock!.fd).type).toBe('socket');
      expect(fdIdentity(devNull.fd).type).toBe('char');
      expect(fdIdentity(linkFd.fd).type).toBe('symlink');
      expect(sameFile(file.fd, dirFd.fd)).toBe(false);
      expect(typeof fdIdentity(file.fd).ino).toBe('bigint');
    }));

  test('flags: close-on-exec and non-blocking, set and read back', () =>
    withScope(async (s) => {
      const { fd } = s.file();
      expect(fdFlags(fd.fd)).toEqual({ cloexec: true, nonblock: false });
      native.setNonblock(fd.fd, true);
      native.setCloexec(fd.fd, false);
      expect(fdFlags(fd.fd)).toEqual({ cloexec: false, nonblock: true });
      native.setNonblock(fd.fd, false);
      native.setCloexec(fd.fd, true);
      expect(fdFlags(fd.fd)).toEqual({ cloexec: true, nonblock: false });
    }));

  test('on a closed fd: typed EBADF', () => {
    const fd = openSync('/dev/null', 'r');
    closeSync(fd);
    expectSystemError(thrown(() => fdIdentity(fd)), 'EBADF', 'statx');
    expectSystemError(thrown(() => fdFlags(fd)), 'EBADF', 'fcntl');
  });
});

describe('open-fd tables', () => {
  test('this process: a new fd appears with its target, and goes away', () =>
    withScope(async (s) => {
      const before = openFdTable();
      const { path, fd } = s.file();
      const during = openFdTable();
      expect(during.get(fd.fd)).toBe(path);
      const diff = diffFdTables(before, during);
      expect(diff).toEqual({ opened: [{ fd: fd.fd, target: path }], closed: [] });
      expect(formatFdTableDiff(diff)).toBe(`+ fd ${fd.fd} -> ${path}`);
      fd.close();
      expect(diffFdTables(before, openFdTable())).toEqual({ opened: [], closed: [] });
      // The directory stream used to read the table is not part of it.
      expect([...openFdTable().values()].some((t) => t.startsWith('/proc/'))).toBe(false);
    }));

  test('a child process (spawned `sleep`): its stdio and the fd handed to it', () =>
    withScope(async (s) => {
      const { path, fd } = s.file('handed-over');
      const child = s.child(spawn('sleep', ['30'], { stdio: ['ignore', 'ignore', 'ignore', fd.fd] }));
      const done = exited(child);
      const table = openFdTable(child.pid!);
      expect(table.get(0)).toBe('/dev/null');
      expect(table.get(3)).toBe(path);
      child.kill('SIGKILL');
      await done;
    }));

  test('a process that does not exist: typed ENOENT', () => {
    expectSystemError(thrown(() => openFdTable(2 ** 22 + 1)), 'ENOENT', 'opendir');
  });
});

describe('pidfd_open and pidfd_getfd', () => {
  test('take a copy of a child\'s fd: same file, close-on-exec', () =>
    withScope(async (s) => {
      const { path, fd } = s.file('in-the-child');
      const child = s.child(spawn('sleep', ['30'], { stdio: ['ignore', 'ignore', 'ignore', fd.fd] }));
      const done = exited(child);
      const pidfd = s.own(native.pidfdOpen(child.pid!));
      expect(fdFlags(pidfd.fd).cloexec).toBe(true);
      expect(openFdTable().get(pidfd.fd)).toBe('anon_inode:[pidfd]');
      const copy = s.own(native.pidfdGetfd(pidfd.fd, 3));
      expect(sameFile(copy.fd, fd.fd)).toBe(true);
      expect(openFdTable().get(copy.fd)).toBe(path);
      expect(fdFlags(copy.fd).cloexec).toBe(true);
      // A target fd the child does not have: typed EBADF.
      const err = thrown(() => native.pidfdGetfd(pidfd.fd, 999));
      expectSystemError(err, 'EBADF', 'pidfd_getfd');
      child.kill('SIGKILL');
      await done;
    }));

  test('a dead (reaped) child: ESRCH', async () => {
    const child = spawn('true', [], { stdio: 'ignore' });
    await exited(child);
    const err = thrown(() => native.pidfdOpen(child.pid!));
    expectSystemError(err, 'ESRCH', 'pidfd_open');
    expect((err as SystemError).errno).toBe(-3);
  });

  test('something that is not a pidfd: EBADF', () =>
    withScope(async (s) => {
      const { fd } = s.file();
      expectSystemError(thrown(() => native.pidfdGetfd(fd.fd, 0)), 'EBADF', 'pidfd_getfd');
      expectSystemError(thrown(() => native.pidfdOpen(-5)), 'EINVAL', 'pidfd_open');
    }));
});

describe('RLIMIT_NOFILE', () => {
  test('read, set to the same value, and an invalid pair is a typed EINVAL', () => {
    const [soft, hard] = fdLimit();
    expect(soft).toBeGreaterThan(0);
    expect(hard).toBeGreaterThanOrEqual(soft);
    setFdLimit(soft);
    expect(fdLimit()).toEqual([soft, hard]);
    if (Number.isFinite(hard)) {
      expectSystemError(thrown(() => setFdLimit(hard + 1, hard)), 'EINVAL', 'setrlimit');
    } else {
      expectRangeError(thrown(() => setFdLimit(-1)), /limit/);
    }
    expect(fdLimit()).toEqual([soft, hard]);
  });
});
