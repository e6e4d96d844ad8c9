/**
 * A leak check never blames the code under test for a copy fdbridge is
 * closing. When the thread that held a direct or worker command ends
 * (worker.terminate(), before anyone calls close()), the duplicates the
 * command was given and did not adopt are the library's to close, and it
 * hands them to its background closer (a copy can be its file's last
 * reference, and the close of a lingering TCP socket blocks). A check made
 * right away, with no settle time at all, must wait for those closes
 * (bounded) before it compares, and find nothing leaked.
 *
 * And a copy that has to wait for a closer thread, every one it may use
 * being in a close that blocks (lingering TCP sockets whose last reference
 * was such a copy), is reported as fdbridge's, set aside (`closing`), never
 * as the test's leak.
 *
 * Generated: the transport (direct, in a worker thread of the test's that
 * is terminated; worker, whose command's thread is terminated), how many
 * duplicates, and how many of them the command adopts. Those are the
 * command's: terminated, it never closes them, and the check must report
 * exactly them, no more (they are closed by the test afterwards).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { checkFdLeaks, connect, describeFdLeakReport } from '../../src';
import { backgroundCloseFds, closeFd, makeMemfd } from '../../src/fd';
import { afterLaneWriterFdsRead, backgroundClosesPending, closerThreads } from '../../src/test-hooks';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { DIST_SRC } from '../util/nobody';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const PROBE = { module: join(DIST_SRC, 'commands', 'probe-command.js'), export: 'ProbeCommand' };

/** A worker thread of the test's: a direct connection, `dups` duplicates of `fd` (main's), `adopt` of them adopted; posts the adopted ones and waits to be terminated. */
const DIRECT_HOLDER = `
const { parentPort, workerData: { fd, dups, adopt, probe } } = require('node:worker_threads');
const { connect } = require(${JSON.stringify(DIST_SRC)});
(async () => {
  const conn = await connect('direct', { command: probe });
  const given = [];
  for (let i = 0; i < dups; i++) given.push(await conn.dupFileDescriptor(fd));
  await conn.call('adopt', given.slice(0, adopt));
  parentPort.postMessage({ adopted: given.slice(0, adopt) });
})().catch((err) => parentPort.postMessage(String(err)));`;

async function directHeldThenTerminated(fd: number, dups: number, adopt: number): Promise<number[]> {
  const worker = new Worker(DIRECT_HOLDER, { eval: true, workerData: { fd, dups, adopt, probe: PROBE } });
  const ready = await new Promise<unknown>((resolve) => worker.once('message', resolve));
  await worker.terminate();
  expect(ready).toEqual({ adopted: expect.any(Array) });
  return (ready as { adopted: number[] }).adopted;
}

test("a check made right after a direct or worker command's thread is terminated waits for the library's background closes of the duplicates it did not adopt", async () => {
  const fd = makeMemfd('leak-check-background-closes');
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('direct', 'worker'), fc.integer({ min: 1, max: 64 }), fc.nat({ max: 64 }), async (transport, dups, adoptAsked) => {
        const adopt = Math.min(adoptAsked, dups);
        const adopted: number[] = [];
        const conn = transport === 'worker' ? await connect('worker', { command: PROBE }) : undefined;
        try {
          const report = await checkFdLeaks(
            async () => {
              if (!conn) {
                adopted.push(...(await directHeldThenTerminated(fd, dups, adopt)));
                return;
              }
              const given: number[] = [];
              for (let i = 0; i < dups; i++) given.push(await conn.dupFileDescriptor(fd));
              await conn.call('adopt', given.slice(0, adopt));
              adopted.push(...given.slice(0, adopt));
              await (conn as unknown as { worker: Worker }).worker.terminate();
            },
            { settleMs: 0 },
          );
          // Exactly the adopted copies, which the terminated command never closed: none of those fdbridge was closing.
          const target = report.leaks[0]?.target ?? '';
          expect(report.leaks.map((l) => l.fd).sort((a, b) => a - b)).toEqual([...adopted].sort((a, b) => a - b));
          expect(report.leaks.every((l) => l.target === target && target.startsWith('/memfd:leak-check-background-closes'))).toBe(true);
        } finally {
          for (const a of adopted) closeFd(a);
          await conn?.close();
        }
      }),
      // Each run starts a thread that loads the library (about 70 ms of CPU,
      // the whole of a run's cost): 15 runs, which try both transports.
      { numRuns: 15 },
    );
  } finally {
    closeFd(fd);
  }
});

(hasPython() ? test : test.skip)("copies still queued on the closer behind lingering closes when the check stops waiting are set aside as fdbridge's, not reported as the test's leaks", async () => {
  // More lingering sockets than the closer has shared threads: one connection's copies of them cannot all be in a close at once.
  const count = closerThreads().max + 2;
  const linger = await lingeringSocket(count);
  try {
    const report = await checkFdLeaks(
      async () => {
        const conn = await connect('direct', { command: PROBE });
        try {
          for (const fd of linger.fds) await conn.dupFileDescriptor(fd); // not adopted: the connection's to close
        } finally {
          for (const fd of linger.fds) closeFd(fd); // the caller's copies: the duplicates are the last references now
          await conn.close();
        }
      },
      { settleMs: 0 },
    );
    // At least the two past the shared threads stay queued for the linger time (this owner has
    // closes running, so no reserve thread is its); threads still starting may have taken
    // others of those the check found queued since.
    const queued = backgroundCloseFds().queued;
    const closing = new Set((report.closing ?? []).map((e) => e.fd));
    expect({ leaks: report.leaks, queued: queued.length >= 2, setAside: queued.filter((fd) => !closing.has(fd)) }).toEqual({
      leaks: [],
      queued: true,
      setAside: [],
    });
    expect((report.closing ?? []).every((e) => e.pid === process.pid && /^socket:\[\d+\]$/.test(e.target))).toBe(true);
    // Named as fdbridge's where a report is printed.
    const printed = describeFdLeakReport({ ...report, leaks: [{ pid: process.pid, role: 'self', fd: 999, target: '/tmp/x' }] });
    expect(printed).toContain("set aside (fdbridge's own copies, queued on its background closer");
    expect(printed).toContain(`fd ${queued[0]} -> socket:[`);
  } finally {
    await linger.end(); // resets the peers: every close ends
    while (backgroundClosesPending() > 0) await new Promise((r) => setTimeout(r, 10));
  }
});

(hasPython() ? test : test.skip)("with settleMs 0, a check still waits (past its settle time, up to the closer's give-up time) for copies of fdbridge's queued on the closer behind closes that block, and reports neither leaks nor `closing` once they are closed", async () => {
  // More lingering sockets than the closer has shared threads: some of the copies wait in its queue.
  const count = closerThreads().max + 2;
  const linger = await lingeringSocket(count);
  const guard = new HangGuard(scaled(20_000));
  try {
    const report = await checkFdLeaks(
      async () => {
        const conn = await connect('direct', { command: PROBE });
        const copies: number[] = [];
        try {
          for (const fd of linger.fds) copies.push(await conn.dupFileDescriptor(fd)); // not adopted: the connection's to close
        } finally {
          for (const fd of linger.fds) closeFd(fd); // the caller's copies: the duplicates are the last references now
          await conn.close();
        }
        await guard.until('a copy queued on the background closer', backgroundCloseFds, (fds) => fds.queued.some((fd) => copies.includes(fd)));
        // Once the check has read the fd tables (its second read of the log
        // lanes, n 1, comes after its first look's tables): the watcher,
        // told of every thread, finds a closer thread blocked in a close and
        // has every connection reset, which ends all those closes.
        afterLaneWriterFdsRead((n) => {
          if (n === 1) for (const tid of readdirSync('/proc/self/task')) linger.watch(Number(tid));
        });
      },
      { settleMs: 0 },
    ).finally(() => afterLaneWriterFdsRead(undefined));
    expect({ leaks: report.leaks, closing: report.closing, closed: report.closed.map((e) => e.fd).sort((a, b) => a - b) }).toEqual({
      leaks: [],
      closing: undefined,
      closed: [...linger.fds].sort((a, b) => a - b),
    });
  } finally {
    await linger.end();
    // A guard of its own: after a wait that ran out the test's guard, the failure reported is that wait's.
    await new HangGuard(scaled(20_000)).until('the background closes done', backgroundClosesPending, (n) => n === 0);
  }
}, scaled(60_000));
