/**
 * fds fdbridge held for itself when a check took its baseline, and closed
 * during the check (a connection's socket and pidfd once its command died
 * or the connection was closed, the loop fds of a worker thread it ran),
 * are reported in `ownClosed`, never in `closed`; an fd the code under test
 * closed is in `closed` whoever held it, also one of fdbridge's closed
 * behind its back.
 */
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, closeFd, connect, describeFdLeakReport, makePipe, openFdTable, PeerExitedError, PROBE_COMMAND, type Connection } from '../../src';
import { closeOwnFd, HeldCopies } from '../../src/fd';
import { backgroundClosesPending, fdRegistration, forgetOwnFd, holdOwnCopy } from '../../src/test-hooks';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { registeredFds } from '../util/registered-fds';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-own-closes-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

type Fate = 'kept' | 'exits' | 'closed';

test('generated: connections made before a check whose commands die or that are closed in it, beside fds the program closes: `closed` is exactly the program\'s, the rest `ownClosed`', async () => {
  let serial = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ transport: fc.constantFrom('worker' as const, 'child' as const, 'pidfd' as const), fate: fc.constantFrom<Fate>('kept', 'exits', 'closed') }), { minLength: 1, maxLength: 3 }),
      fc.array(fc.boolean(), { maxLength: 3 }),
      async (conns, files) => {
        const made: Connection[] = [];
        // Open before the check, the program's own; those marked true it closes in the check.
        const before = files.map(() => openSync(join(dir, `before-${serial++}`), 'w'));
        const left = before.filter((_, i) => !files[i]);
        try {
          for (const c of conns) made.push(await connect(c.transport, { command: PROBE_COMMAND }));
          const table = openFdTable();
          const ours = registeredFds();
          const closedByProgram = before.filter((_, i) => files[i]).map((fd) => ({ fd, target: table.get(fd) }));
          const report = await checkFdLeaks(async () => {
            for (const { fd } of closedByProgram) closeSync(fd);
            await Promise.all(
              conns.map(async (c, i) => {
                const conn = made[i] as Connection;
                if (c.fate === 'exits') await expect(conn.call('exit', 1)).rejects.toBeInstanceOf(PeerExitedError);
                else if (c.fate === 'closed') await conn.close();
              }),
            );
          }, { settleMs: 500 });
          const entry = (e: { fd: number; target: string }): { fd: number; target: string } => ({ fd: e.fd, target: e.target });
          expect(report.leaks).toEqual([]);
          expect(report.closed.map(entry).sort((a, b) => a.fd - b.fd)).toEqual(closedByProgram);
          // Each set aside was fdbridge's before the check, and is closed now.
          const now = openFdTable();
          for (const e of report.ownClosed ?? []) {
            expect(ours.has(e.fd)).toBe(true);
            expect(now.get(e.fd)).not.toBe(e.target);
          }
          // A connection that ended took some of its fds with it (the worker's loop, the socket and pidfd).
          if (conns.some((c) => c.fate !== 'kept')) expect(report.ownClosed?.length ?? 0).toBeGreaterThan(0);
          else expect(report.ownClosed).toBeUndefined();
        } finally {
          await Promise.all(made.map((conn) => conn.close()));
          for (const fd of left) closeSync(fd);
        }
      },
    ),
    { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261201), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 6) },
  );
});

test('an fd fdbridge held, closed by fdbridge in the check, is set aside; closed behind its back by the code under test, it is blamed', async () => {
  const [r, w] = makePipe();
  try {
    const ours = holdOwnCopy(r);
    const target = openFdTable().get(ours) as string;
    const released = await checkFdLeaks(() => closeOwnFd(ours), { settleMs: 50 });
    expect(released).toEqual({ leaks: [], closed: [], gone: [], ownClosed: [{ pid: process.pid, role: 'self', fd: ours, target }] });

    const stolen = holdOwnCopy(r);
    const registration = fdRegistration(stolen);
    try {
      // The registry still has it as fdbridge's: the check waits for fdbridge's close, which never comes.
      const report = await checkFdLeaks(() => closeSync(stolen), { settleMs: 50 });
      expect(report).toEqual({ leaks: [], closed: [{ pid: process.pid, role: 'self', fd: stolen, target, fdbridgeOwn: true }], gone: [] });
      expect(describeFdLeakReport(report)).toBe(
        `1 fd closed that was open before:\n  fd ${stolen} -> ${target} (fdbridge's own fd, open before the test, closed during it by someone other than fdbridge)`,
      );
    } finally {
      forgetOwnFd(stolen, registration);
    }
  } finally {
    closeSync(r);
    closeSync(w);
  }
});

(hasPython() ? test : test.skip)("an fd fdbridge held, whose close on its background closer blocks (a lingering TCP socket's last reference), is set aside at once, not waited for", async () => {
  const linger = await lingeringSocket(1);
  try {
    const copy = holdOwnCopy(linger.fd);
    const target = openFdTable().get(copy) as string;
    closeFd(linger.fd); // the copy is the socket's last reference: its close blocks for the linger time
    const held = new HeldCopies();
    const report = await checkFdLeaks(
      async () => {
        held.close([copy]);
        // Until a closer thread is in its close (close(2) has taken the number out of the table).
        while (openFdTable().has(copy)) await new Promise((r) => setTimeout(r, 10));
      },
      { settleMs: 0 },
    );
    // Out of the table (close(2) took the number), still registered until its close returns.
    expect(fdRegistration(copy)).not.toBe(0);
    expect(report).toEqual({ leaks: [], closed: [], gone: [], ownClosed: [{ pid: process.pid, role: 'self', fd: copy, target }] });
  } finally {
    await linger.end(); // resets the peer: the close ends
    while (backgroundClosesPending() > 0) await new Promise((r) => setTimeout(r, 10));
  }
});
