/**
 * The fd operations scenarios and users reach without src/native.ts: the
 * public setFdFlags and openPidfd (src/fd.ts, exported by the package) and
 * the raw-socket helpers of `fdbridge/testing` (src/testing.ts), and the
 * older kernel that src/test-hooks.ts simulates for the tests of fallbacks.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import * as pkg from '../../src';
import { SystemError, TruncatedError } from '../../src/errors';
import { closeFds, fdFlags, makeMemfd, makePipe, openPidfd, sameFile, setFdFlags } from '../../src/fd';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import {
  MAX_FDS_PER_MESSAGE,
  MAX_SOCKET_PATH_BYTES,
  rawConnect,
  rawListen,
  rawShutdown,
  rawSocketPair,
  receiveNow,
  sendNow,
  setPassCred,
  setPassPidfd,
  setPassRights,
} from '../../src/testing';
import { expectRangeError, thrown } from './helpers';

test('the package exports setFdFlags and openPidfd', () => {
  expect(pkg.setFdFlags).toBe(setFdFlags);
  expect(pkg.openPidfd).toBe(openPidfd);
});

describe('setFdFlags', () => {
  test('any sequence of flag changes leaves exactly the flags last set, each independent of the other', () => {
    const [r, w] = makePipe();
    try {
      fc.assert(
        fc.property(fc.array(fc.record({ cloexec: fc.option(fc.boolean(), { nil: undefined }), nonblock: fc.option(fc.boolean(), { nil: undefined }) })), (changes) => {
          setFdFlags(r, { cloexec: true, nonblock: false });
          const expected = { cloexec: true, nonblock: false };
          for (const c of changes) {
            setFdFlags(r, c);
            if (c.cloexec !== undefined) expected.cloexec = c.cloexec;
            if (c.nonblock !== undefined) expected.nonblock = c.nonblock;
            expect(fdFlags(r)).toEqual(expected);
          }
          // The write end is another open file: its flags are untouched.
          expect(fdFlags(w)).toEqual({ cloexec: true, nonblock: false });
        }),
      );
    } finally {
      closeFds([r, w]);
    }
  });

  test('a closed fd is a SystemError EBADF', () => {
    const [r, w] = makePipe();
    closeFds([r, w]);
    expect(() => setFdFlags(r, { nonblock: true })).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => setFdFlags(r, { cloexec: false })).toThrow(SystemError);
  });
});

describe('openPidfd', () => {
  test('a close-on-exec pidfd whose process, once exited, it names as gone (fdinfo Pid: -1)', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const pidfd = openPidfd(child.pid as number);
    try {
      expect(fdFlags(pidfd).cloexec).toBe(true);
      child.kill('SIGKILL');
      await exited;
      // The kernel's Pid: line for a pidfd whose process has exited is -1.
      expect(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8')).toMatch(/^Pid:\s*-1$/m);
    } finally {
      closeFds([pidfd]);
    }
  });

  test('no such process is a SystemError ESRCH', () => {
    expect(() => openPidfd(0x3fffffff)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });
});

describe('fdbridge/testing', () => {
  test('the limits are the kernel’s', () => {
    expect(MAX_FDS_PER_MESSAGE).toBe(253);
    expect(MAX_SOCKET_PATH_BYTES).toBe(107);
  });

  test.each(['stream', 'dgram', 'seqpacket'] as const)('a %s pair carries bytes and fds, one sendmsg and one recvmsg', (kind) => {
    const [a, b] = rawSocketPair(kind);
    const memfd = makeMemfd('public-fd-operations');
    try {
      expect(fdFlags(a)).toEqual({ cloexec: true, nonblock: true });
      expect(receiveNow(b, 16, 4)).toBeNull(); // nothing waiting: null, not a block
      expect(sendNow(a, Buffer.from('hi'), [memfd])).toBe(2);
      const m = receiveNow(b, 16, 4);
      expect(m?.data.toString()).toBe('hi');
      expect(m?.fds).toHaveLength(1);
      const got = (m?.fds ?? [])[0] as number;
      expect(sameFile(got, memfd)).toBe(true);
      expect(fdFlags(got).cloexec).toBe(true);
      closeFds(m?.fds);
    } finally {
      closeFds([a, b, memfd]);
    }
  });

  test('more fds than one message holds: a RangeError before sendmsg, nothing sent', () => {
    const [a, b] = rawSocketPair('seqpacket');
    const memfd = makeMemfd('public-fd-operations');
    try {
      // A RangeError of the addon's realm, not jest's: checked by name (expectRangeError).
      expectRangeError(thrown(() => sendNow(a, Buffer.from('x'), new Array<number>(MAX_FDS_PER_MESSAGE + 1).fill(memfd))), /253/);
      expect(receiveNow(b, 16, MAX_FDS_PER_MESSAGE)).toBeNull();
    } finally {
      closeFds([a, b, memfd]);
    }
  });

  test('fds that do not fit the receive are closed and reported (MSG_CTRUNC)', () => {
    const [a, b] = rawSocketPair('seqpacket');
    const fds = [makeMemfd('a'), makeMemfd('b')];
    try {
      sendNow(a, Buffer.from('x'), fds);
      expect(() => receiveNow(b, 16, 1)).toThrow(TruncatedError);
    } finally {
      closeFds([a, b, ...fds]);
    }
  });

  test('an unknown socket kind is a TypeError', () => {
    expect(() => rawSocketPair('raw' as never)).toThrow(/socket kind must be/);
  });

  test('rawListen and rawConnect meet at a path and at an abstract name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-testing-'));
    const opened: number[] = [];
    try {
      for (const [name, abstract] of [[join(dir, 's.sock'), false], [`fdbridge-testing-${process.pid}`, true]] as const) {
        const listener = rawListen('stream', name, { abstract, mode: 0o600 });
        opened.push(listener);
        opened.push(rawConnect('stream', name, abstract));
      }
      expect(() => rawConnect('stream', join(dir, 'nobody-here.sock'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    } finally {
      closeFds(opened);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('setPassRights off: the sender is refused (Linux 6.16+), or the kernel lacks it (ENOPROTOOPT)', () => {
    const [a, b] = rawSocketPair('seqpacket');
    const memfd = makeMemfd('public-fd-operations');
    try {
      let supported = true;
      try {
        setPassRights(b, false);
      } catch (err) {
        expect((err as SystemError).code).toBe('ENOPROTOOPT');
        supported = false;
      }
      if (supported) expect(() => sendNow(a, Buffer.from('x'), [memfd])).toThrow(expect.objectContaining({ code: 'EPERM' }));
    } finally {
      closeFds([a, b, memfd]);
    }
  });

  test("rawShutdown('write'): the peer reads what was sent, then end of file; 'read' leaves sending open", () => {
    const [a, b] = rawSocketPair('stream');
    try {
      sendNow(a, Buffer.from('last'));
      rawShutdown(a, 'write');
      expect(receiveNow(b, 16, 0)?.data.toString()).toBe('last');
      expect(() => receiveNow(b, 16, 0)).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_EOF' }));
      expect(() => sendNow(a, Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'EPIPE' }));
      rawShutdown(b, 'read');
      expect(sendNow(b, Buffer.from('back'))).toBe(4);
      rawShutdown(b, 'both');
      expect(() => sendNow(b, Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    } finally {
      closeFds([a, b]);
    }
  });

  test('setPassCred and setPassPidfd: each message then brings one more control message, which receiveNow counts', () => {
    const cases: Array<[string, (fd: number) => void, number]> = [
      ['none', () => {}, 0],
      ['SO_PASSCRED', (fd) => setPassCred(fd, true), 1],
      ['SO_PASSPIDFD', (fd) => setPassPidfd(fd, true), 1],
    ];
    for (const [name, turnOn, extra] of cases) {
      const [a, b] = rawSocketPair('seqpacket');
      try {
        try {
          turnOn(b);
        } catch (err) {
          // SO_PASSPIDFD is Linux 6.5+.
          expect([name, (err as SystemError).code]).toEqual(['SO_PASSPIDFD', 'ENOPROTOOPT']);
          continue;
        }
        sendNow(a, Buffer.from('x'));
        const m = receiveNow(b, 16, 0);
        expect([name, m?.data.toString(), m?.fds, m?.otherControlMessages]).toEqual([name, 'x', [], extra]);
      } finally {
        closeFds([a, b]);
      }
    }
  });

  test('simulateKernelWithoutPassRights: setPassRights fails with ENOPROTOOPT until restored, and fds pass meanwhile', () => {
    const [a, b] = rawSocketPair('seqpacket');
    const memfd = makeMemfd('public-fd-operations');
    const restore = simulateKernelWithoutPassRights();
    try {
      expect(() => setPassRights(b, false)).toThrow(expect.objectContaining({ code: 'ENOPROTOOPT', syscall: 'setsockopt(SO_PASSRIGHTS)' }));
      sendNow(a, Buffer.from('x'), [memfd]);
      const m = receiveNow(b, 16, 1);
      expect(m?.fds).toHaveLength(1);
      closeFds(m?.fds);
    } finally {
      restore();
      closeFds([a, b, memfd]);
    }
    // Restored: the real option again (refused, or absent on this kernel).
    const [c, d] = rawSocketPair('seqpacket');
    try {
      let real: unknown;
      try {
        setPassRights(d, false);
      } catch (err) {
        real = err;
      }
      expect(real === undefined || (real as SystemError).code === 'ENOPROTOOPT').toBe(true);
    } finally {
      closeFds([c, d]);
    }
  });
});
