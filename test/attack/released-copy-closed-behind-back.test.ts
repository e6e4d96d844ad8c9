/**
 * A batch of more than one piece (MAX_FDS_PER_MESSAGE fds each) whose later
 * piece fails (a closed fd: EBADF) releases the copies its earlier pieces
 * made for a direct or worker command: all or nothing. The release runs
 * once every piece has settled, after dupFileDescriptors returned its
 * promise: the program may close one of those copies behind fdbridge's
 * back by then and open a file of its own at that number. The release
 * leaves that file alone, as the connection's close does for a copy the
 * command did not adopt (unadopted-copy-closed-behind-back.test.ts), and
 * closes every other copy of the batch.
 */
import { closeSync, fstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND } from '../../src';
import { MAX_FDS_PER_MESSAGE } from '../../src/connection';
import { closeFd, closeFds, diffFdTables, dupFd, makeMemfd, openFdTable } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';
import { openAt } from '../util/open-at';
import { scaled } from '../util/time-scale';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-released-copy-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const identity = (fd: number): string => {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
};

/** The batch: two pieces, the second holding the closed fd. */
const BATCH = MAX_FDS_PER_MESSAGE + 40;

test.each([['direct'], ['worker']] as const)(
  "generated (%s): the copies a failed batch made are released, and a number among them the program closed and opened a file of its own at keeps that file",
  async (transport) => {
    const path = join(dir, `program-${transport}`);
    writeFileSync(path, 'the program\'s own file\n');
    const conn = await connect(transport, { command: PROBE_COMMAND });
    const memfd = makeMemfd('released-copy');
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.uniqueArray(fc.nat(MAX_FDS_PER_MESSAGE - 1), { minLength: 1, maxLength: 3 }),
          fc.integer({ min: MAX_FDS_PER_MESSAGE, max: BATCH - 1 }),
          async (picks, closedAt) => {
            const fds = Array.from({ length: BATCH }, () => dupFd(memfd));
            const programs: number[] = [];
            try {
              closeFd(fds[closedAt] as number);
              const before = openFdTable();
              const batch = conn.dupFileDescriptors(fds);
              // The first piece's copies are made now; the second fails, and
              // the release waits for both to settle.
              const copies = diffFdTables(before, openFdTable()).opened.map((e) => e.fd).sort((a, b) => a - b);
              expect(copies).toHaveLength(MAX_FDS_PER_MESSAGE);
              const taken = picks.map((i) => copies[i] as number).sort((a, b) => a - b);
              for (const n of taken) closeSync(n); // behind fdbridge's back
              for (const n of taken) programs.push(openAt(path, n));
              const file = identity(programs[0] as number);
              await expect(batch).rejects.toMatchObject({ code: 'EBADF' });
              // The program's files are still open at their numbers, and still that file.
              for (const n of taken) {
                expect(identity(n)).toBe(file);
                expect(openFdTable().get(n)).toBe(path);
                expect(fdRegistration(n)).toBe(0);
              }
              // Every other copy is closed: the table is as before, but for the program's files.
              const after = openFdTable();
              for (const n of taken) after.delete(n);
              expect(after).toEqual(before);
            } finally {
              closeFds(programs);
              closeFds(fds.filter((_, i) => i !== closedAt));
            }
          },
        ),
        { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261202), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 6) },
      );
    } finally {
      await conn.close();
      closeFd(memfd);
    }
  },
  scaled(60_000),
);
