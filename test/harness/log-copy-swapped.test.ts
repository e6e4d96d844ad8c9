/**
 * A log line waits (its pipe full, or its lane's threads busy) with
 * fdbridge's own copy of the log fd. A program that closes that copy's
 * number behind fdbridge's back, a bug fdbridge survives, and opens a file
 * of its own there: the line is never written into that file, the file is
 * never closed by fdbridge, the lanes do not list it as theirs (a leak check
 * would set it aside in `writing`), and the line fails EBADF (or ECANCELED
 * when its connection ends first).
 */
import { closeSync, fstatSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, fdIdentity, makePipe, openFdTable } from '../../src/fd';
import { laneWriterFds, startLaneWrite } from '../../src/test-hooks';
import { lanesGrow } from '../util/lane-fds';
import { openAt } from '../util/open-at';
import { drainPipe } from '../util/pipe-read';
import { fdTableSettles } from '../util/processes';
import { assertGuarded } from '../util/wait-for';

/** More than a pipe holds: a line of this size stays in its write until the pipe is read. */
const STUCK = 150_000;

const identity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

test("generated: a line's copy closed behind fdbridge's back is neither written into, listed, nor closed", async () => {
  const before = openFdTable(process.pid);
  const dir = mkdtempSync(join(tmpdir(), 'fdb-log-swap-'));
  const programPath = join(dir, 'program');
  writeFileSync(programPath, '');
  let run = 0;
  try {
    await assertGuarded(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.nat(),
        fc.constantFrom('freed' as const, 'program-file' as const),
        fc.constantFrom('drain' as const, 'cancel' as const),
        async (lines, pick, swap, end) => {
          // A lane of this run's own: two threads, so a third line waits for one with its copy.
          const owner = 2 ** 34 + run++;
          const [r, w] = makePipe(); // read only at the end
          const had = new Set(laneWriterFds());
          const writes = Array.from({ length: lines }, () => startLaneWrite(w, Buffer.alloc(STUCK, 'l'), owner));
          // Each line's copy, and the eventfd each of the (at most two) running lines waits on.
          const grown = await lanesGrow(had, lines + Math.min(lines, 2));
          const copies = grown.filter((fd) => identity(fd) === identity(w)).sort((a, b) => a - b);
          expect(copies).toHaveLength(lines);
          const swapped = copies[pick % lines]!;
          closeSync(swapped); // behind fdbridge's back
          const program = swap === 'program-file' ? openAt(programPath, swapped) : undefined;
          // The lanes no longer call the number theirs.
          expect(laneWriterFds()).not.toContain(swapped);
          if (end === 'cancel') for (const write of writes) write.cancel();
          // Read to its end of file: every line's copy still held is closed once its write ends.
          closeFd(w);
          const drained = drainPipe(r, Infinity);
          const results = await Promise.all(writes.map((write) => write.written));
          const mine = copies.indexOf(swapped);
          for (let i = 0; i < lines; i++) {
            // The swapped line fails EBADF, or ECANCELED when the cancel reached it before its next write.
            if (i === mine) expect([-osConstants.errno.EBADF, ...(end === 'cancel' ? [-osConstants.errno.ECANCELED] : [])]).toContain(results[i]);
            else expect(results[i]).toBe(end === 'cancel' ? -osConstants.errno.ECANCELED : STUCK);
          }
          await drained;
          if (program !== undefined) {
            // Still open at its number, the program's file, and nothing written into it.
            const st = statSync(programPath);
            expect(identity(program)).toBe(`${st.dev}:${st.ino}`);
            expect(fstatSync(program).size).toBe(0);
            closeSync(program);
          }
          closeFd(r);
        },
      ),
      { numRuns: 16, examples: [[1, 0, 'program-file', 'drain'], [3, 2, 'program-file', 'cancel'], [3, 2, 'program-file', 'drain']] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);
