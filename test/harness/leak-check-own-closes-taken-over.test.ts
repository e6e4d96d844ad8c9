/**
 * A number fdbridge held for itself at a check's baseline, whose
 * registration ends during the check, and that holds a file at the end, is
 * a leak, whatever file it holds: the code under test's file opened at the
 * number (the baseline's file opened again there included, which the tables
 * alone cannot tell from the baseline's fd), fdbridge letting go of its fd
 * without closing it, a command that adopted fdbridge's copy and keeps it
 * (as a copy given and adopted during the check and kept is). One closed
 * and left free is only set aside (`ownClosed`); one fdbridge still holds
 * is nothing.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, openFdTable, PROBE_COMMAND, type FdEntry } from '../../src';
import { closeFds, closeOwnFd, makeMemfd } from '../../src/fd';
import { fdRegistration, forgetOwnFd, holdOwnCopy } from '../../src/test-hooks';
import { openAt } from '../util/open-at';
import { fdTableSettles } from '../util/processes';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-own-taken-over-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * What happens in the check to an fd fdbridge holds: nothing; closed by
 * fdbridge; let go of by fdbridge without a close; closed by fdbridge and
 * its file opened again at the number by the program; closed by fdbridge
 * and another file opened at the number by the program.
 */
type Fate = 'kept' | 'closed' | 'let go' | 'same file again' | 'other file';

const entry = (e: FdEntry): { fd: number; target: string } => ({ fd: e.fd, target: e.target });
const byFd = (a: { fd: number }, b: { fd: number }): number => a.fd - b.fd;

test("generated: fdbridge's fds at the baseline, closed, let go of, or their numbers taken by the program's files: every number open at the end that is no longer fdbridge's is a leak", async () => {
  let serial = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom<Fate>('kept', 'closed', 'let go', 'same file again', 'other file'), { minLength: 1, maxLength: 4 }), async (fates) => {
      const before = openFdTable();
      const path = join(dir, `file-${serial++}`);
      const other = join(dir, `other-${serial++}`);
      writeFileSync(path, 'baseline');
      writeFileSync(other, 'other');
      const file = openSync(path, 'r');
      // Every number open at the end that the test must close: the program's, or fdbridge's let go of.
      const programs: number[] = [];
      const held = fates.map(() => holdOwnCopy(file));
      try {
        const target = openFdTable().get(held[0] as number) as string;
        const registrations = held.map((fd) => fdRegistration(fd));
        const report = await checkFdLeaks(
          () => {
            held.forEach((fd, i) => {
              const fate = fates[i] as Fate;
              if (fate === 'let go') {
                forgetOwnFd(fd, registrations[i] as number);
                programs.push(fd);
              } else if (fate !== 'kept') {
                closeOwnFd(fd);
              }
            });
            // Lowest first: openAt opens until the kernel gives the number (the lowest free one).
            for (const [fd, i] of held.map((fd, i) => [fd, i] as const).sort((a, b) => a[0] - b[0])) {
              const fate = fates[i] as Fate;
              if (fate === 'same file again') programs.push(openAt(path, fd));
              else if (fate === 'other file') programs.push(openAt(other, fd));
            }
          },
          { settleMs: 50 },
        );
        const at = (...which: Fate[]): number[] => held.filter((_, i) => which.includes(fates[i] as Fate));
        expect(report.closed).toEqual([]);
        expect(report.leaks.map(entry).sort(byFd)).toEqual(
          at('let go', 'same file again', 'other file')
            .map((fd) => ({ fd, target: fates[held.indexOf(fd)] === 'other file' ? openFdTable().get(fd) : target }))
            .sort(byFd),
        );
        // Set aside: the baseline's fds of fdbridge's that are gone from their numbers (closed, or another file there now).
        expect((report.ownClosed ?? []).map(entry).sort(byFd)).toEqual(at('closed', 'other file').map((fd) => ({ fd, target })).sort(byFd));
      } finally {
        for (const fd of programs) closeSync(fd);
        for (const [i, fd] of held.entries()) if (fates[i] === 'kept') closeOwnFd(fd);
        closeSync(file);
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    }),
    { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261203), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 12) },
  );
});

test('a copy given to a direct command before the check, adopted by the command in the check: kept, it is a leak; closed with the connection in the check, it is set aside', async () => {
  const before = openFdTable();
  const memfd = makeMemfd('own-taken-over');
  try {
    for (const closeInCheck of [false, true]) {
      const conn = await connect('direct', { command: PROBE_COMMAND });
      try {
        const copy = await conn.dupFileDescriptor(memfd);
        const target = openFdTable().get(copy) as string;
        const report = await checkFdLeaks(
          async () => {
            await conn.call('adopt', [copy]);
            if (closeInCheck) await conn.close();
          },
          { settleMs: 50 },
        );
        const self = { pid: process.pid, role: 'self', fd: copy, target };
        if (closeInCheck) {
          expect(report.leaks).toEqual([]);
          expect(report.ownClosed).toContainEqual(self);
        } else {
          expect(report.leaks).toEqual([self]);
          expect(report.ownClosed).toBeUndefined();
        }
        expect(report.closed).toEqual([]);
      } finally {
        await conn.close();
      }
    }
  } finally {
    closeFds([memfd]);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
