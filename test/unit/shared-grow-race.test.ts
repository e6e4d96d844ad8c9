/**
 * Threads that share a growable SharedArrayBuffer grow it at once: the
 * command fds' holder stamps (ClientFds, which every thread of the worker
 * transport shares) and the worker ledger's marks (SharedFdLedger). One
 * thread's grow must not fail because another grew the buffer further in
 * the meantime (SharedArrayBuffer.grow throws a RangeError for a length
 * below the current one): a hold or a mark that throws after an adoption
 * leaves the fd open and nobody's. Generated rounds: threads started
 * together, each holding and marking its own rising fd numbers past the
 * buffers' first size, on fresh buffers each round; every hold and mark
 * must succeed and be seen.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { DIST_SRC } from '../util/nobody';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

const THREADS = 3;
const GROWN_BY = join(DIST_SRC, 'client-fds.js');
const LEDGER = join(DIST_SRC, 'transports', 'shared-ledger.js');

const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { attachClientFdHolders, ClientFds } = require(workerData.clientFds);
const { SharedFdLedger } = require(workerData.ledger);
const gate = new Int32Array(workerData.gate);
parentPort.on('message', ({ stamps, marks, fds, round }) => {
  attachClientFdHolders(stamps);
  const held = new ClientFds();
  const ledger = SharedFdLedger.attach(marks, 0);
  Atomics.add(gate, 1, 1);
  Atomics.notify(gate, 1);
  // Started together: each waits for the round's signal.
  while (Atomics.load(gate, 0) < round) Atomics.wait(gate, 0, round - 1);
  const failed = [];
  for (const fd of fds) {
    try { held.hold([fd]); } catch (e) { failed.push('hold ' + fd + ': ' + e.name + ': ' + e.message); }
    try { ledger.add(fd); } catch (e) { failed.push('add ' + fd + ': ' + e.name + ': ' + e.message); }
  }
  parentPort.postMessage(failed);
});`;

describe('growing a buffer threads share, from several threads at once', () => {
  test('generated: every hold and mark succeeds (no RangeError) and is there afterwards', async () => {
    const gate = new Int32Array(new SharedArrayBuffer(8));
    const workers = Array.from({ length: THREADS }, () => new Worker(WORKER, { eval: true, workerData: { clientFds: GROWN_BY, ledger: LEDGER, gate: gate.buffer } }));
    let round = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.uniqueArray(fc.integer({ min: 1025, max: 200_000 }), { minLength: 1, maxLength: 12 }), { minLength: THREADS, maxLength: THREADS }),
          async (lists) => {
            round += 1;
            Atomics.store(gate, 1, 0);
            // Fresh buffers at their first size (the stamps' and a ledger's), growable as the library makes them.
            const stamps = new SharedArrayBuffer(4 * (1 + 1024), { maxByteLength: 4 * (1 + (1 << 20)) });
            const marks = new SharedArrayBuffer(1024, { maxByteLength: 1 << 20 });
            const listening: Array<() => void> = [];
            const results = workers.map(
              (w) =>
                new Promise<string[]>((resolve, reject) => {
                  w.once('message', resolve);
                  w.once('error', reject);
                  listening.push(() => w.off('message', resolve).off('error', reject));
                }),
            );
            workers.forEach((w, i) => w.postMessage({ stamps, marks, fds: lists[i]!.sort((a, b) => a - b), round }));
            while (Atomics.load(gate, 1) < THREADS) Atomics.wait(gate, 1, Atomics.load(gate, 1), 5);
            Atomics.store(gate, 0, round);
            Atomics.notify(gate, 0);
            const failed = (await within(Promise.all(results), scaled(20_000), `round ${round}'s threads`).finally(() => listening.forEach((off) => off()))).flat();
            const view = new Int32Array(stamps);
            const marked = new Uint8Array(marks);
            const all = lists.flat();
            expect({
              failed,
              unstamped: all.filter((fd) => view[1 + fd] === 0 || view[1 + fd] === undefined),
              unmarked: all.filter((fd) => marked[fd] !== 1),
            }).toEqual({ failed: [], unstamped: [], unmarked: [] });
          },
        ),
        { numRuns: 1000 },
      );
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });
});
