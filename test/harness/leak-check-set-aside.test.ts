/**
 * What a leak check sets aside as fdbridge's own is this process's only,
 * and a list set aside is there only when it has entries: a leak of
 * another watched process at the number of a log line's copy here is that
 * process's leak, and a report with nothing set aside has no `writing` nor
 * `closing` list (absent when none, as FdLeakReport says). Nor does such a
 * leak make the check wait as it waits for a copy of this process's that
 * leaves the lanes, or is made, while the fd tables are read.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import { checkFdLeaks } from '../../src';
import { closeFd, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { beforeLaneWriterFdsRead, laneWriterFds, startLaneWrite } from '../../src/test-hooks';
import { endStuckWrites, lanesGrow, untilLanesLack } from '../util/lane-fds';
import { exitOf, fdTableSettles } from '../util/processes';

/** More than a pipe holds: a line of this size stays in its write until the pipe is read. */
const STUCK = 150_000;

test('a check that finds a leak and no line in a write has no `writing` and no `closing` in its report', async () => {
  let leaked = -1;
  try {
    const report = await checkFdLeaks(() => void (leaked = makeMemfd('leak-check-set-aside')), { settleMs: 0 });
    expect(report.leaks.map((e) => e.fd)).toEqual([leaked]);
    expect('writing' in report).toBe(false);
    expect('closing' in report).toBe(false);
  } finally {
    if (leaked >= 0) closeFd(leaked);
  }
});

/** A child that, on a line on stdin, opens /dev/null until it gets number `n` (closing the others) and prints the number it got. */
const TAKER = `
const fs = require('node:fs');
const n = Number(process.argv[1]);
process.stdin.once('data', () => {
  const extra = [];
  let fd = fs.openSync('/dev/null', 'r');
  while (fd < n) { extra.push(fd); fd = fs.openSync('/dev/null', 'r'); }
  for (const e of extra) fs.closeSync(e);
  process.stdout.write(fd + '\\n');
});
process.stdout.write('ready\\n');
`;

test("a leak of another watched process at the number of a log line's copy in this one is that process's leak, not set aside", async () => {
  const before = openFdTable(process.pid);
  const [r, w] = makePipe(); // read only at the end
  const had = new Set(laneWriterFds());
  // Two lines stuck in their writes into the full pipe: each holds a copy of it here, and an eventfd.
  const writes = [0, 1].map(() => startLaneWrite(w, Buffer.alloc(STUCK, 'l'), 2 ** 32 + 7));
  try {
    const held = await lanesGrow(had, 4);
    const n = Math.min(...held);
    const taker = spawn(process.execPath, ['-e', TAKER, String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const lines = createInterface({ input: taker.stdout! })[Symbol.asyncIterator]();
      expect((await lines.next()).value).toBe('ready');
      const report = await checkFdLeaks(
        async () => {
          taker.stdin!.write('go\n');
          // The number it got: `n` unless its own table had that number open already.
          expect(Number((await lines.next()).value)).toBe(n);
        },
        { processes: [{ pid: taker.pid!, role: 'taker' }], settleMs: 0 },
      );
      expect(report.leaks).toEqual([{ pid: taker.pid, role: 'taker', fd: n, target: '/dev/null' }]);
      expect(report.writing).toBeUndefined();
    } finally {
      taker.kill();
      await exitOf(taker);
    }
  } finally {
    await endStuckWrites(writes, r, w);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60000);

test.each(['ended', 'made'] as const)(
  "a leak of another watched process at the number of a log line's copy here that is %s after the fd tables were read is that process's leak, found at the check's first look (no wait: only this process's copies are waited for)",
  async (copy) => {
    const before = openFdTable(process.pid);
    const [r, w] = makePipe(); // read only at the end
    const owner = 2 ** 32 + (copy === 'ended' ? 8 : 9);
    const writes: Array<ReturnType<typeof startLaneWrite>> = [];
    const stick = async (): Promise<number> => {
      const had = new Set(laneWriterFds());
      writes.push(startLaneWrite(w, Buffer.alloc(STUCK, 'l'), owner));
      return Math.min(...(await lanesGrow(had, 2))); // its copy and its eventfd
    };
    try {
      // A line's fd at `n` from before the check. For `made`, ended before
      // the check (its number free again here) and made again right before
      // the check's second look at the lanes: the lowest free number above
      // fdbridge's floor, `n` again.
      const n = await stick();
      if (copy === 'made') {
        writes[0]!.cancel();
        await writes[0]!.written;
      }
      const taker = spawn(process.execPath, ['-e', TAKER, String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
      try {
        const lines = createInterface({ input: taker.stdout! })[Symbol.asyncIterator]();
        expect((await lines.next()).value).toBe('ready');
        let reads = 0;
        let changed: number[] = [];
        const report = await checkFdLeaks(
          async () => {
            taker.stdin!.write('go\n');
            expect(Number((await lines.next()).value)).toBe(n);
            beforeLaneWriterFdsRead((i) => {
              reads++;
              if (i !== 1) return;
              const had = new Set(laneWriterFds());
              if (copy === 'made') {
                writes.push(startLaneWrite(w, Buffer.alloc(STUCK, 'l'), owner));
                changed = laneWriterFds().filter((fd) => !had.has(fd));
              } else {
                writes[0]!.cancel();
                untilLanesLack([n]);
                changed = [...had].filter((fd) => !laneWriterFds().includes(fd));
              }
            });
          },
          { processes: [{ pid: taker.pid!, role: 'taker' }], settleMs: 0 },
        ).finally(() => beforeLaneWriterFdsRead(undefined));
        // The line's fd at `n` left the lanes, or was made there, between the tables and the second look.
        expect(changed).toContain(n);
        expect({ reads, leaks: report.leaks, closed: report.closed }).toEqual({
          reads: 2,
          leaks: [{ pid: taker.pid, role: 'taker', fd: n, target: '/dev/null' }],
          closed: [],
        });
      } finally {
        taker.kill();
        await exitOf(taker);
      }
    } finally {
      await endStuckWrites(writes, r, w);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  60000,
);
