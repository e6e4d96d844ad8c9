/**
 * What a leak check sets aside as fdbridge's own is this process's only,
 * and a list set aside is there only when it has entries: a leak of
 * another watched process at the number of a log line's copy here is that
 * process's leak, and a report with nothing set aside has no `writing` nor
 * `closing` list (absent when none, as FdLeakReport says).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import { checkFdLeaks } from '../../src';
import { closeFd, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { laneWriterFds, startLaneWrite } from '../../src/test-hooks';
import { drainPipe } from '../util/pipe-read';
import { exitOf, fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

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
    const held = await within(
      (async (): Promise<number[]> => {
        for (;;) {
          const added = laneWriterFds().filter((fd) => !had.has(fd));
          if (added.length >= 4) return added;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })(),
      scaled(20_000),
      'the lanes holding 4 more fds',
    );
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
    for (const write of writes) write.cancel();
    await Promise.all(writes.map((write) => write.written));
    closeFd(w);
    await drainPipe(r, Infinity);
    closeFd(r);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60000);
