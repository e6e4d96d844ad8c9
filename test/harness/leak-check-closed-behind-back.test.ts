/**
 * An fd fdbridge held for itself when a check took its baseline, that the
 * code under test closes behind fdbridge's back, is blamed on the code
 * under test (`closed`, marked `fdbridgeOwn`), also when fdbridge then goes
 * to close it itself and finds it closed: a connection's socket (child,
 * pidfd, helper; the connection ends, its close of the socket fails with
 * EBADF), a worker thread's loop fd (libuv's close of it at the thread's
 * end), a copy fdbridge holds (closed on its own or in a run of them). The
 * fds fdbridge closes itself in the same check stay set aside (`ownClosed`),
 * and an fd the code under test opens and leaves open is still a leak.
 */
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, describeFdLeakReport, makePipe, openFdTable, PeerExitedError, PROBE_COMMAND, type Connection, type FdEntry } from '../../src';
import { closeOwnFds } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';
import { helperForSuite } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';

const suite = helperForSuite('fdbridge-behind-back-');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-behind-back-files-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

type Transport = 'child' | 'pidfd' | 'helper' | 'worker';
/** kept: left alone; closed: conn.close(); exits: its command exits; stolen: the program closes its socket (a worker's /dev/null loop fd), then conn.close(). */
type ConnFate = 'kept' | 'closed' | 'exits' | 'stolen';
/** kept: left alone; released: fdbridge closes it; stolen: the program closes it, then fdbridge does. */
type CopyFate = 'kept' | 'released' | 'stolen';

/**
 * The fd of a connection the program closes behind fdbridge's back, one
 * fdbridge registered for it and never closes by itself while the
 * connection lives: its socket, or (`pidfd`) the pidfd watching a child's
 * or pidfd connection's process; a worker's loop fd the loop can go on
 * without (/dev/null: libuv's reserve for EMFILE).
 */
function victimOf(transport: Transport, fds: ReadonlyMap<number, string>, pidfd = false): number {
  const kind = transport === 'worker' ? '/dev/null' : pidfd && transport !== 'helper' ? 'anon_inode:[pidfd]' : 'socket:';
  const found = [...fds].find(([, target]) => target.startsWith(kind));
  if (!found) throw new Error(`no ${kind} fd to steal among ${transport}'s own: ${JSON.stringify([...fds])}`);
  return found[0];
}

const pick = (e: FdEntry): { fd: number; target: string; fdbridgeOwn?: true } => (e.fdbridgeOwn ? { fd: e.fd, target: e.target, fdbridgeOwn: true } : { fd: e.fd, target: e.target });
const byFd = (a: { fd: number }, b: { fd: number }): number => a.fd - b.fd;

test('generated: fdbridge\'s own fds closed behind its back are in `closed` (fdbridgeOwn) whoever closes them after, its own closes in `ownClosed`, the program\'s closes and leaks as they are', async () => {
  let serial = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc
          .record({
            transport: fc.constantFrom<Transport>('child', 'pidfd', 'helper', 'worker'),
            fate: fc.constantFrom<ConnFate>('kept', 'closed', 'exits', 'stolen'),
            // A stolen child's or pidfd connection loses its pidfd instead of its socket.
            pidfd: fc.boolean(),
          })
          // A helper connection's command runs in the shared daemon: its exit would end the daemon.
          .filter((c) => !(c.transport === 'helper' && c.fate === 'exits')),
        { minLength: 1, maxLength: 3 },
      ),
      fc.array(fc.constantFrom<CopyFate>('kept', 'released', 'stolen'), { maxLength: 3 }),
      fc.array(fc.boolean(), { maxLength: 2 }),
      fc.boolean(),
      async (conns, copyFates, files, leaks) => {
        const made: Connection[] = [];
        const [r, w] = makePipe();
        // fdbridge's own copies of the pipe's read end, made before the check.
        const copies = copyFates.map(() => holdOwnCopy(r));
        // Open before the check, the program's own; those marked true it closes in the check.
        const before = files.map(() => openSync(join(dir, `before-${serial++}`), 'w'));
        let leaked: number | undefined;
        try {
          const victims: number[] = [];
          for (const c of conns) {
            const had = registeredFds();
            const conn = await connect(c.transport, { command: PROBE_COMMAND, socketPath: suite.socketPath });
            made.push(conn);
            await conn.call('echo', 1);
            victims.push(c.fate === 'stolen' ? victimOf(c.transport, registeredSince(had), c.pidfd) : -1);
          }
          const table = openFdTable();
          const ours = registeredFds();
          const target = (fd: number): string => table.get(fd) as string;
          const closedByProgram = before.filter((_, i) => files[i]);
          const stolenCopies = copies.filter((_, i) => copyFates[i] === 'stolen');
          const stolen = [...victims.filter((fd) => fd >= 0), ...stolenCopies];
          const leakPath = join(dir, `leak-${serial++}`);
          const report = await checkFdLeaks(
            async () => {
              if (leaks) leaked = openSync(leakPath, 'w');
              for (const fd of closedByProgram) closeSync(fd);
              for (const fd of stolen) closeSync(fd);
              // fdbridge closes its copies, the stolen ones among them (one call: a run of numbers).
              closeOwnFds(copies.filter((_, i) => copyFates[i] !== 'kept'));
              await Promise.all(
                conns.map(async (c, i) => {
                  const conn = made[i] as Connection;
                  if (c.fate === 'exits') await expect(conn.call('exit', 1)).rejects.toBeInstanceOf(PeerExitedError);
                  else if (c.fate === 'closed' || c.fate === 'stolen') await conn.close();
                }),
              );
            },
            { settleMs: 300 },
          );
          expect(report.leaks.map(pick)).toEqual(leaks ? [{ fd: leaked, target: leakPath }] : []);
          const expectedClosed = [
            ...closedByProgram.map((fd) => ({ fd, target: target(fd) })),
            ...stolen.map((fd) => ({ fd, target: target(fd), fdbridgeOwn: true as const })),
          ].sort(byFd);
          expect(report.closed.map(pick).sort(byFd)).toEqual(expectedClosed);
          const lines = describeFdLeakReport(report).split('\n');
          for (const fd of stolen) {
            expect(lines).toContain(`  fd ${fd} -> ${target(fd)} (fdbridge's own fd, open before the test, closed during it by someone other than fdbridge)`);
          }
          // Each set aside was fdbridge's before the check, is closed now, and was not the program's to close.
          const now = openFdTable();
          for (const e of report.ownClosed ?? []) {
            expect(ours.has(e.fd)).toBe(true);
            expect(stolen).not.toContain(e.fd);
            expect(now.get(e.fd)).not.toBe(e.target);
          }
          // A stolen helper connection had no fd of fdbridge's but its socket; a child's or pidfd's has its pidfd, a worker its other loop fds.
          const closesOwn = (c: (typeof conns)[number]): boolean => c.fate === 'closed' || c.fate === 'exits' || (c.fate === 'stolen' && c.transport !== 'helper');
          const fdbridgeClosed = conns.some(closesOwn) || copyFates.includes('released');
          if (fdbridgeClosed) expect(report.ownClosed?.length ?? 0).toBeGreaterThan(0);
          else expect(report.ownClosed).toBeUndefined();
        } finally {
          await Promise.all(made.map((conn) => conn.close()));
          closeOwnFds(copies.filter((_, i) => copyFates[i] === 'kept'));
          for (const fd of before.filter((_, i) => !files[i])) closeSync(fd);
          if (leaked !== undefined) closeSync(leaked);
          closeSync(r);
          closeSync(w);
        }
      },
    ),
    { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261201), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 8) },
  );
});

test.each([['child'], ['pidfd'], ['helper'], ['worker']] as const)(
  "%s: the connection's fd closed behind fdbridge's back, then the connection closed, is blamed with the message that it was fdbridge's",
  async (transport) => {
    const had = registeredFds();
    const conn = await connect(transport, { command: PROBE_COMMAND, socketPath: suite.socketPath });
    try {
      await conn.call('echo', 1);
      const table = openFdTable();
      const victim = victimOf(transport, registeredSince(had));
      const report = await checkFdLeaks(
        async () => {
          closeSync(victim);
          await conn.close();
        },
        { settleMs: 100 },
      );
      expect(report.leaks).toEqual([]);
      expect(report.closed).toEqual([{ pid: process.pid, role: 'self', fd: victim, target: table.get(victim), fdbridgeOwn: true }]);
      expect((report.ownClosed ?? []).map((e) => e.fd)).not.toContain(victim);
      expect(describeFdLeakReport(report).split('\n').slice(0, 2)).toEqual([
        '1 fd closed that was open before:',
        `  fd ${victim} -> ${table.get(victim)} (fdbridge's own fd, open before the test, closed during it by someone other than fdbridge)`,
      ]);
    } finally {
      await conn.close();
    }
  },
);
