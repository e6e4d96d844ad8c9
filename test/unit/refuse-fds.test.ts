/**
 * src/transports/refuse-fds.ts as its callers rely on it (the client side of
 * child, helper and pidfd connections, a pidfd command side, a helper
 * daemon's listening and accepted sockets): refuseFds turns SO_PASSRIGHTS
 * off and says whether the kernel now refuses fds sent to the socket (the
 * sender's sendmsg fails with EPERM, nothing lands here); acceptFds turns it
 * back on; mayHoldFds says whether fds may wait unread in the socket. On a
 * kernel without the option (before Linux 6.16: ENOPROTOOPT, simulated
 * here) fds pass, refuseFds says false and mayHoldFds true; a closed socket
 * is answered the same way, nothing asked of the kernel; any other failure
 * (not a socket) throws. Generated: the socket's kind, the kernel, whether
 * the socket is closed first, and the order of the calls.
 */
import { spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';

import fc from 'fast-check';

import { SystemError } from '../../src/errors';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { receiveNow, sendNow } from '../../src/testing';
import { failNativeCall, simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { acceptFds, mayHoldFds, refuseFds, refuseFdsOn } from '../../src/transports/refuse-fds';
import { kernelHasPassRights } from '../../scenarios/support/hostile';
import { DIST_SRC } from '../util/nobody';
import { fdTableSettles } from '../util/processes';

const RUNS = { seed: 20261203, numRuns: 60 };
const real = kernelHasPassRights();

/**
 * As on a kernel without SO_PASSRIGHTS: setting it and reading it both fail
 * with ENOPROTOOPT (simulateKernelWithoutPassRights covers the setting).
 * Returns the function that puts the real calls back.
 */
function olderKernel(): () => void {
  const restoreSet = simulateKernelWithoutPassRights();
  const restoreGet = failNativeCall('getPassRights', new SystemError(osConstants.errno.ENOPROTOOPT, 'getsockopt(SO_PASSRIGHTS)'));
  return () => {
    restoreGet();
    restoreSet();
  };
}

/** Whether `to` takes an fd `from` sends it: the fd arrives ('passed', closed here), or the send is refused ('EPERM'). */
function sendAnFd(from: UnixSocket, to: UnixSocket, memfd: number): 'passed' | 'EPERM' {
  try {
    sendNow(from.fd, Buffer.from('x'), [memfd]);
  } catch (err) {
    if ((err as { code?: string }).code === 'EPERM') return 'EPERM';
    throw err;
  }
  const m = receiveNow(to.fd, 16, 4);
  const n = m?.fds.length ?? 0;
  for (const fd of m?.fds ?? []) closeFd(fd);
  expect(n).toBe(1);
  return 'passed';
}

test('the option is present on this kernel (else the refusing half of each case below is not reached)', () => {
  expect(real).toBe(true);
});

test('refuseFds, acceptFds and mayHoldFds on a socket open or closed, on this kernel or one without SO_PASSRIGHTS, in any order', () => {
  const before = openFdTable();
  const memfd = makeMemfd('refuse-fds');
  try {
    fc.assert(
      fc.property(
        fc.constantFrom('stream' as const, 'seqpacket' as const, 'dgram' as const),
        fc.boolean(),
        fc.boolean(),
        fc.array(fc.constantFrom('refuse' as const, 'refuseOn' as const, 'accept' as const), { minLength: 1, maxLength: 5 }),
        (kind, older, closed, calls) => {
          const [ours, peer] = UnixSocket.pair(kind);
          const restore = older ? olderKernel() : () => undefined;
          try {
            if (closed) ours.close();
            // The kernel passes fds until something turns the option off.
            let refusing = false;
            for (const call of calls) {
              if (call === 'accept') {
                acceptFds(ours);
                refusing = false;
              } else {
                const said = call === 'refuse' ? refuseFds(ours) : refuseFdsOn(ours.fd);
                const refuses = !older && !closed;
                expect(said).toBe(refuses);
                if (refuses) refusing = true;
              }
              expect(mayHoldFds(ours)).toBe(!refusing);
              if (!closed) expect(sendAnFd(peer, ours, memfd)).toBe(refusing ? 'EPERM' : 'passed');
            }
          } finally {
            restore();
            ours.close();
            peer.close();
          }
        },
      ),
      RUNS,
    );
  } finally {
    closeFd(memfd);
  }
  expect(openFdTable()).toEqual(before);
});

test('a failure other than a missing option throws, on this kernel and on one without it: an fd that is not a socket (ENOTSOCK)', () => {
  const memfd = makeMemfd('not-a-socket');
  const notASocket = { fd: memfd } as unknown as UnixSocket;
  try {
    for (const older of [false, true]) {
      const restore = older ? olderKernel() : () => undefined;
      try {
        // The simulated older kernel fails every setting with ENOPROTOOPT, as a real one does before it looks at the fd.
        if (!older) {
          expect(() => refuseFds(notASocket)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
          expect(() => refuseFdsOn(memfd)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
          expect(() => acceptFds(notASocket)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
          expect(() => mayHoldFds(notASocket)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
        } else {
          expect(refuseFds(notASocket)).toBe(false);
          expect(mayHoldFds(notASocket)).toBe(true);
        }
      } finally {
        restore();
      }
    }
    // The errors are SystemErrors, as every failed system call of fdbridge's.
    expect(() => refuseFdsOn(memfd)).toThrow(SystemError);
  } finally {
    closeFd(memfd);
  }
});

/** In a process of its own whose fd 0 is a socket (as inetd starts a server): fd 0 is a number like any other. */
const AT_FD_0 = String.raw`
const { acceptFds, mayHoldFds, refuseFdsOn } = require(process.argv[1] + '/transports/refuse-fds.js');
const stdin = { fd: 0 };
const seen = [mayHoldFds(stdin), refuseFdsOn(0), mayHoldFds(stdin)];
acceptFds(stdin);
seen.push(mayHoldFds(stdin));
console.log(JSON.stringify(seen));
`;

test('a socket at fd 0 is refused, accepted and looked at as any other', async () => {
  const before = openFdTable();
  const [a, b] = UnixSocket.pair('stream');
  try {
    const r = spawnSync(process.execPath, ['-e', AT_FD_0, DIST_SRC], { stdio: [b.fd, 'pipe', 'pipe'], encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr, seen: JSON.parse(r.stdout) as boolean[] }).toEqual({ status: 0, stderr: '', seen: [true, true, false, true] });
  } finally {
    a.close();
    b.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
