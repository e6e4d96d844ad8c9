/**
 * The leak checker, given generated programs with real leaks and with none,
 * must blame exactly what the program left open and exactly the fds it
 * closed that were open before (no runtime fd, no fd the program closed
 * again, nothing it did not touch). The reference is kept beside the
 * program as it runs: every fd it opens, dups or closes, by number and
 * target. Files get a path of their own per open, so that a number closed
 * and reopened is never the same target (two opens of one path at one
 * number cannot be told apart from outside the process). A longer run:
 *   FDBRIDGE_ATTACK_SEED=77 FDBRIDGE_ATTACK_RUNS=1500 npx jest test/attack/leak-check-model.test.ts --testTimeout=900000
 */
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, watch } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { checkFdLeaks } from '../../src';
import { closeFd, dupFd, makeEventfd, makeMemfd, makePipe, openFdTable } from '../../src/fd';

type Op =
  | { op: 'open'; kind: 'file' | 'devnull' | 'pipe' | 'memfd' | 'eventfd' }
  | { op: 'dup'; which: number }
  | { op: 'close'; which: number }
  | { op: 'closeBefore'; which: number }
  | { op: 'yield' }
  /** What makes the runtime open fds of its own, each cleaned up before it resolves: none is the program's leak. */
  | { op: 'runtime'; what: 'spawn' | 'watch' | 'worker' | 'server' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('open' as const), kind: fc.constantFrom('file' as const, 'devnull' as const, 'pipe' as const, 'memfd' as const, 'eventfd' as const) }),
  fc.record({ op: fc.constant('dup' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('close' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('close' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('closeBefore' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('yield' as const) }),
  fc.record({ op: fc.constant('runtime' as const), what: fc.constantFrom('spawn' as const, 'watch' as const, 'worker' as const, 'server' as const) }),
);

async function useRuntime(what: 'spawn' | 'watch' | 'worker' | 'server', dir: string): Promise<void> {
  if (what === 'spawn') await promisify(execFile)('true');
  else if (what === 'watch') watch(dir).close();
  else if (what === 'worker') {
    const worker = new Worker('0', { eval: true });
    await new Promise((resolve) => worker.once('exit', resolve));
  } else {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

interface Entry {
  fd: number;
  target: string;
}
const byFd = (a: Entry, b: Entry): number => a.fd - b.fd;

test('generated programs: the report names exactly the fds left open and the fds closed that were open before', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-leakcheck-'));
  let serial = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 25 }), fc.integer({ min: 0, max: 4 }), async (ops, preCount) => {
        // Open before the check: some the program may close (wrongly).
        const before: number[] = Array.from({ length: preCount }, () => openSync(join(dir, `before-${serial++}`), 'w'));
        const target = (fd: number): string => openFdTable().get(fd) as string;
        const opened: number[] = []; // the program's fds still open
        const beforeLeft = [...before];
        const closedBefore: Entry[] = [];
        const report = await checkFdLeaks(
          async () => {
            for (const o of ops) {
              if (o.op === 'open') {
                if (o.kind === 'file') opened.push(openSync(join(dir, `opened-${serial++}`), 'w'));
                else if (o.kind === 'devnull') opened.push(openSync('/dev/null', 'r'));
                else if (o.kind === 'pipe') opened.push(...makePipe());
                else if (o.kind === 'memfd') opened.push(makeMemfd(`leak-model-${serial++}`));
                else opened.push(makeEventfd());
              } else if (o.op === 'dup' && opened.length > 0) {
                opened.push(dupFd(opened[o.which % opened.length] as number));
              } else if (o.op === 'close' && opened.length > 0) {
                const [fd] = opened.splice(o.which % opened.length, 1);
                closeFd(fd as number);
              } else if (o.op === 'closeBefore' && beforeLeft.length > 0) {
                const [fd] = beforeLeft.splice(o.which % beforeLeft.length, 1);
                closedBefore.push({ fd: fd as number, target: target(fd as number) });
                closeSync(fd as number);
              } else if (o.op === 'yield') {
                await new Promise((resolve) => setImmediate(resolve));
              } else if (o.op === 'runtime') {
                await useRuntime(o.what, dir);
              }
            }
          },
          { settleMs: 50 },
        );
        try {
          const leaked = opened.map((fd) => ({ fd, target: target(fd) }));
          // A number the program closed (open before) and then reused for one of its own is both.
          expect({
            leaks: report.leaks.map(({ fd, target: t }) => ({ fd, target: t })).sort(byFd),
            closed: report.closed.map(({ fd, target: t }) => ({ fd, target: t })).sort(byFd),
          }).toEqual({ leaks: leaked.sort(byFd), closed: closedBefore.sort(byFd) });
          expect(report.leaks.every((l) => l.pid === process.pid)).toBe(true);
        } finally {
          for (const fd of opened) closeFd(fd);
          for (const fd of beforeLeft) closeSync(fd);
        }
      }),
      { seed: Number(process.env.FDBRIDGE_ATTACK_SEED ?? 20261130), numRuns: Number(process.env.FDBRIDGE_ATTACK_RUNS ?? 60) },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
