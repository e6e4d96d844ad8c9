/**
 * A remote connection holds fds of fdbridge's own: its ends of the via
 * process's stdin, stdout and stderr (socketpairs above the fd floor,
 * registered) and the pidfd watching the via. The stderr end is a libuv
 * stream's to close (ownedStream), and libuv's close reports nothing: one
 * the code under test closed behind fdbridge's back must still be blamed on
 * it (`closed`, fdbridgeOwn), as the ends fdbridge closes itself are, not
 * set aside in `ownClosed` as if fdbridge had closed it. The ones fdbridge
 * does close stay set aside, and a leak of the code under test's own is
 * still reported.
 */
import { closeSync } from 'node:fs';

import fc from 'fast-check';

import { checkFdLeaks, connect, makeMemfd, openFdTable, PROBE_COMMAND, type FdEntry } from '../../src';
import { closeFd } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';

const fdsOf = (entries: readonly FdEntry[] | undefined): number[] => (entries ?? []).map((e) => e.fd).sort((a, b) => a - b);

test("generated: a remote connection's own fd closed behind fdbridge's back is in `closed` (fdbridgeOwn), its stderr end (closed by libuv) included; the rest it closes in `ownClosed`", async () => {
  const before = openFdTable(process.pid);
  await fc.assert(
    fc.asyncProperty(fc.constantFrom('stdin' as const, 'stdout' as const, 'stderr' as const, 'pidfd' as const, undefined), fc.boolean(), async (victim, leakOne) => {
      const had = registeredFds();
      const conn = await connect('remote', { command: PROBE_COMMAND });
      let leaked: number | undefined;
      try {
        const own = [...registeredSince(had)];
        // The via's three socketpairs are made in that order, each at the lowest free number above the floor.
        const sockets = own.filter(([, t]) => t.startsWith('socket:')).map(([fd]) => fd).sort((a, b) => a - b);
        const pidfds = own.filter(([, t]) => t === 'anon_inode:[pidfd]').map(([fd]) => fd);
        expect([sockets.length, pidfds.length]).toEqual([3, 1]);
        const ends = { stdin: sockets[0], stdout: sockets[1], stderr: sockets[2], pidfd: pidfds[0] };
        const stolen = victim === undefined ? undefined : (ends[victim] as number);
        const report = await checkFdLeaks(async () => {
          if (stolen !== undefined) closeSync(stolen);
          if (leakOne) leaked = makeMemfd('leak-check-remote-behind-back');
          await conn.close();
        });
        expect(fdsOf(report.leaks)).toEqual(leakOne ? [leaked] : []);
        // Fails before for the stderr end: closed [] and the end in ownClosed.
        expect(report.closed.map((e) => ({ fd: e.fd, fdbridgeOwn: e.fdbridgeOwn }))).toEqual(stolen === undefined ? [] : [{ fd: stolen, fdbridgeOwn: true }]);
        expect(fdsOf(report.ownClosed)).toEqual(own.map(([fd]) => fd).filter((fd) => fd !== stolen).sort((a, b) => a - b));
      } finally {
        if (leaked !== undefined) closeFd(leaked);
        await conn.close();
      }
    }),
    { numRuns: 6, examples: [['stderr', false], ['stderr', true], ['stdin', false], [undefined, true]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);
