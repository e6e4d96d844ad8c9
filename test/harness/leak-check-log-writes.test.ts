/**
 * A leak check never blames the code under test for the copy of a log fd
 * that a log line being written holds. The log command writes each line
 * into a copy of its log fd, made as the line is handed over, on a thread
 * of its lane (and, while the fd takes no more, waits with an eventfd to be
 * woken by). A write into a pipe nobody reads waits until the connection
 * closes; a write(2) into a terminal whose output is stopped cannot be
 * cancelled at all and keeps its copy after the connection's end, until
 * the terminal takes the line. Those fds are fdbridge's (`writing` in the
 * report), never leaks; a file the code under test opens and leaves open
 * beside them still is one.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, describeFdLeakReport, LOG_COMMAND, type Connection } from '../../src';
import { ClosedError } from '../../src/errors';
import { closeFd, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { afterLaneWriterFdsRead, beforeLaneWriterFdsRead, laneWriterFds, startLaneWrite } from '../../src/test-hooks';
import { hasPython, PYTHON } from '../util/linger-attacker';
import { DIST_SRC } from '../util/nobody';
import { endStuckWrites, lanesGrow, untilLanesLack } from '../util/lane-fds';
import { drainPipe } from '../util/pipe-read';
import { exitOf, fdTableSettles } from '../util/processes';
import { assertGuarded } from '../util/wait-for';

/** More than a pipe holds: a line of this size stays in its write until the pipe is read. */
const STUCK = 150_000;

test("generated: lines stuck in their writes into a pipe nobody reads are fdbridge's (`writing`), not leaks; the code under test's own leak is still reported", async () => {
  const before = openFdTable(process.pid);
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('direct' as const, 'worker' as const),
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.boolean(),
      async (transport, lines, closeInside, leakOne) => {
        const [r, w] = makePipe(); // read only at the end
        const logged: Array<Promise<unknown>> = [];
        let leaked: number | undefined;
        let conn: Connection | undefined;
        const open = async (): Promise<Connection> => {
          const c = await connect(transport, { command: LOG_COMMAND });
          await c.call('redirectLogToFd', await c.dupFileDescriptor(w));
          return c;
        };
        try {
          // A connection the check closes is made in it (the command's log fd is then the check's too).
          if (!closeInside) conn = await open();
          const report = await checkFdLeaks(
            async () => {
              conn ??= await open();
              for (let i = 0; i < lines; i++) logged.push(conn.call('log', 'l'.repeat(STUCK)).catch((e: unknown) => e));
              // The first line waits in its write once the pipe is full: its copy, and the eventfd it waits with.
              while (laneWriterFds().length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
              if (leakOne) leaked = makeMemfd('leak-check-log-writes');
              if (closeInside) await conn.close();
            },
            { settleMs: 0 },
          );
          const text = describeFdLeakReport(report);
          // Only the code under test's own file is a leak.
          expect(report.leaks.map((e) => e.fd)).toEqual(leakOne ? [leaked] : []);
          expect(report.closed).toEqual([]);
          if (closeInside) {
            // The connection's end cancelled the writes: their copies are closed, or on their way (the
            // lane thread wakes from its poll on its own time): never leaks, at most the two set aside.
            for (const e of report.writing ?? []) expect(e.target).toMatch(/^(pipe:\[\d+\]|anon_inode:\[eventfd\])$/);
            expect((report.writing ?? []).length).toBeLessThanOrEqual(2);
          } else {
            // The line in its write holds its copy of the pipe and the eventfd it waits with (the
            // command hands its lines over one at a time): both the lanes', nothing else.
            const held = new Set(laneWriterFds());
            expect(report.writing?.map((e) => e.target).sort()).toEqual(['anon_inode:[eventfd]', expect.stringMatching(/^pipe:\[\d+\]$/)]);
            for (const e of report.writing ?? []) expect(held.has(e.fd)).toBe(true);
            if (leakOne) expect(text).toContain("set aside (fdbridge's own copies of a log fd, held by a log line whose write has not returned");
          }
        } finally {
          if (leaked !== undefined) closeFd(leaked);
          await conn?.close();
          // Cancelled by the close: each line fails with ClosedError, some of it written.
          for (const result of await Promise.all(logged)) expect(result).toBeInstanceOf(ClosedError);
          // Read to its end of file: the lines' copies are closed once cancelled.
          closeFd(w);
          await drainPipe(r, Infinity);
          closeFd(r);
        }
      },
    ),
    { numRuns: 12, examples: [['direct', 1, false, false], ['worker', 3, false, true], ['direct', 2, true, true]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);

test("generated: a line handed over while a check reads the fd tables (after its look at the lanes, before the tables) is the lanes' copy, set aside in `writing`, never a leak", async () => {
  const before = openFdTable(process.pid);
  let run = 0;
  await assertGuarded(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      fc.boolean(),
      async (meanwhile, stuckInside, leakOne) => {
        // A lane of this run's own: its two threads stuck in writes into a
        // full pipe, so that each line handed over meanwhile waits in the
        // lane's queue with its copy (and no eventfd: no thread took it).
        const owner = 2 ** 32 + run++;
        const [r, w] = makePipe(); // read only at the end
        const writes: Array<ReturnType<typeof startLaneWrite>> = [];
        let stuck: number[] = [];
        let made: number[] = [];
        let leaked: number | undefined;
        const stick = async (): Promise<void> => {
          const had = new Set(laneWriterFds());
          for (let i = 0; i < 2; i++) writes.push(startLaneWrite(w, Buffer.alloc(STUCK, 'l'), owner));
          // Each line's copy, and the eventfd each thread waits on once the pipe is full.
          stuck = await lanesGrow(had, 4);
        };
        try {
          if (!stuckInside) await stick();
          const report = await checkFdLeaks(
            async () => {
              if (stuckInside) await stick();
              if (leakOne) leaked = makeMemfd('leak-check-log-writes-meanwhile');
              afterLaneWriterFdsRead((n) => {
                if (n !== 0) return;
                const had = new Set(laneWriterFds());
                for (let i = 0; i < meanwhile; i++) writes.push(startLaneWrite(w, Buffer.from('queued\n'), owner));
                made = laneWriterFds().filter((fd) => !had.has(fd));
              });
            },
            { settleMs: 0 },
          );
          // The lines handed over at the check's first look at the lanes, one copy each.
          expect(made).toHaveLength(meanwhile);
          expect(report.leaks.map((e) => e.fd)).toEqual(leakOne ? [leaked] : []);
          expect(report.closed).toEqual([]);
          const writing = (report.writing ?? []).map((e) => e.fd).sort((a, b) => a - b);
          expect(writing).toEqual([...made, ...(stuckInside ? stuck : [])].sort((a, b) => a - b));
          for (const e of report.writing ?? []) expect(e.target).toMatch(/^(pipe:\[\d+\]|anon_inode:\[eventfd\])$/);
        } finally {
          afterLaneWriterFdsRead(undefined);
          if (leaked !== undefined) closeFd(leaked);
          await endStuckWrites(writes, r, w);
        }
      },
    ),
    { numRuns: 10, examples: [[1, false, false], [3, true, true], [2, false, true]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);

/** `writes` lines stuck in their writes into `w` (a pipe nobody reads) on a lane of `owner`'s: each line's copy and the eventfd it waits with. */
async function stuckLines(w: number, writes: number, owner: number): Promise<{ lines: Array<ReturnType<typeof startLaneWrite>>; fds: number[] }> {
  const had = new Set(laneWriterFds());
  const lines = Array.from({ length: writes }, () => startLaneWrite(w, Buffer.alloc(STUCK, 'l'), owner));
  return { lines, fds: writes === 0 ? [] : await lanesGrow(had, 2 * writes) };
}

test("generated: a line's copy that leaves the lanes after the check read the fd tables (its write ended, the copy handed on to the closer) is waited for, never a leak", async () => {
  const before = openFdTable(process.pid);
  let run = 0;
  await assertGuarded(
    fc.asyncProperty(fc.integer({ min: 1, max: 2 }), fc.boolean(), async (writes, leakOne) => {
      const owner = 2 ** 33 + run++;
      const [r, w] = makePipe(); // read only at the end
      let stuck: Awaited<ReturnType<typeof stuckLines>> = { lines: [], fds: [] };
      let ended = false;
      let leaked: number | undefined;
      try {
        const report = await checkFdLeaks(
          async () => {
            stuck = await stuckLines(w, writes, owner);
            if (leakOne) leaked = makeMemfd('leak-check-log-writes-handed-on');
            // Right before the check's second read of the lanes (after its
            // first look's tables, which show the copies and eventfds): the
            // writes end, and their fds leave the lanes (each copy for the
            // closer, each eventfd closed) before that read.
            beforeLaneWriterFdsRead((n) => {
              if (n !== 1) return;
              for (const line of stuck.lines) line.cancel();
              untilLanesLack(stuck.fds);
              ended = true;
            });
          },
          { settleMs: 0 },
        ).finally(() => beforeLaneWriterFdsRead(undefined));
        expect(ended).toBe(true);
        expect({ leaks: report.leaks.map((e) => e.fd), closed: report.closed, closing: report.closing, writing: report.writing }).toEqual({
          leaks: leakOne ? [leaked] : [],
          closed: [],
          closing: undefined,
          writing: undefined,
        });
      } finally {
        if (leaked !== undefined) closeFd(leaked);
        await endStuckWrites(stuck.lines, r, w);
      }
    }),
    { numRuns: 6, examples: [[1, false], [2, true]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);

test("generated: with settleMs 0, a check whose leaks are the test's own and lines' fds still in their writes decides at its first look (no wait for fdbridge: the lanes read once for that look, once to decide)", async () => {
  const before = openFdTable(process.pid);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 1, max: 3 }), async (writes, leaks) => {
      const owner = 2 ** 34 + run++;
      const [r, w] = makePipe(); // read only at the end
      let stuck: Awaited<ReturnType<typeof stuckLines>> = { lines: [], fds: [] };
      const leaked: number[] = [];
      let reads = 0;
      try {
        const report = await checkFdLeaks(
          async () => {
            stuck = await stuckLines(w, writes, owner);
            for (let i = 0; i < leaks; i++) leaked.push(makeMemfd('leak-check-log-writes-first-look'));
            afterLaneWriterFdsRead(() => void reads++);
          },
          { settleMs: 0 },
        ).finally(() => afterLaneWriterFdsRead(undefined));
        expect({ reads, leaks: report.leaks.map((e) => e.fd), writing: (report.writing ?? []).map((e) => e.fd).sort((a, b) => a - b) }).toEqual({
          reads: 2,
          leaks: leaked,
          writing: [...stuck.fds].sort((a, b) => a - b),
        });
      } finally {
        for (const fd of leaked) closeFd(fd);
        await endStuckWrites(stuck.lines, r, w);
      }
    }),
    // A failing run is a check waiting out the closer's give-up time (5 s a check): reported as found, not shrunk.
    { numRuns: 6, examples: [[1, 1], [2, 3], [0, 2]], endOnFailure: true },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);

/** python3: a pty whose output is stopped, then exec node with the slave's number (argv: node, script, slave). */
const STOPPED_PTY = `
import os, sys, termios
m, s = os.openpty()
termios.tcflow(s, termios.TCOOFF)
os.set_inheritable(m, True)
os.set_inheritable(s, True)
os.execv(sys.argv[1], [sys.argv[1], '-e', sys.argv[2], sys.argv[3], str(s)])
`;

/** A check around a connection whose line is stuck in a write(2) into the stopped terminal, closed in the check: prints the report. */
const CHECKED = `
const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
const [transport, slave] = [process.argv[1], Number(process.argv[2])];
(async () => {
  const report = await L.checkFdLeaks(async () => {
    const c = await L.connect(transport, { command: L.LOG_COMMAND });
    await c.call('redirectLogToFd', await c.dupFileDescriptor(slave));
    const line = c.call('log', 'x'.repeat(4000)).catch((e) => e.code);
    await new Promise((r) => setTimeout(r, 300));
    await c.close();
    await line;
  }, { settleMs: 0 });
  console.log(JSON.stringify({ report }));
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ failed: String(e) })); process.exit(1); });
`;

const testWithPython = hasPython() ? test : test.skip;

testWithPython.each(['direct', 'worker'])(
  '%s: a line stuck in write(2) into a stopped terminal after the connection closed holds its copy of the terminal, set aside as fdbridge\'s, not a leak',
  async (transport) => {
    const child = spawn(PYTHON, ['-c', STOPPED_PTY, process.execPath, CHECKED, transport], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    const { report } = JSON.parse(out) as { report: { leaks: unknown[]; writing?: Array<{ target: string }> } };
    expect(report.leaks).toEqual([]);
    expect(report.writing?.map((e) => e.target)).toEqual([expect.stringMatching(/^\/dev\/pts\/\d+$/)]);
  },
  60000,
);
