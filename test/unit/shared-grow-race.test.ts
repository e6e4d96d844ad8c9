/**
 * Threads that share a growable SharedArrayBuffer grow it at once: the
 * worker ledger's marks (SharedFdLedger), which the client's thread and the
 * worker's share. One thread's grow must not fail because another grew the
 * buffer further in the meantime (SharedArrayBuffer.grow throws a
 * RangeError for a length below the current one): a mark that throws
 * leaves the fd open and nobody's. Generated rounds: threads started
 * together, each marking its own rising fd numbers past the buffer's first
 * size, on a fresh buffer each round; every mark must succeed and be seen.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { DIST_SRC } from '../util/nobody';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

const THREADS = 3;
const LEDGER = join(DIST_SRC, 'transports', 'shared-ledger.js');

const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { SharedFdLedger } = require(workerData.ledger);
const gate = new Int32Array(workerData.gate);
parentPort.on('message', ({ marks, fds, round }) => {
  const ledger = SharedFdLedger.attach(marks, 0);
  Atomics.add(gate, 1, 1);
  Atomics.notify(gate, 1);
  // Started together: each waits for the round's signal.
  while (Atomics.load(gate, 0) < round) Atomics.wait(gate, 0, round - 1);
  const failed = [];
  for (const fd of fds) {
    try { ledger.add(fd); } catch (e) { failed.push('add ' + fd + ': ' + e.name + ': ' + e.message); }
  }
  parentPort.postMessage(failed);
});`;

describe('growing a buffer threads share, from several threads at once', () => {
  test('generated: every mark succeeds (no RangeError) and is there afterwards', async () => {
    const gate = new Int32Array(new SharedArrayBuffer(8));
    const workers = Array.from({ length: THREADS }, () => new Worker(WORKER, { eval: true, workerData: { ledger: LEDGER, gate: gate.buffer } }));
    let round = 0;
    try {
      await assertGuarded(
        fc.asyncProperty(
          fc.array(fc.uniqueArray(fc.integer({ min: 1025, max: 200_000 }), { minLength: 1, maxLength: 12 }), { minLength: THREADS, maxLength: THREADS }),
          async (lists) => {
            round += 1;
            Atomics.store(gate, 1, 0);
            // A fresh buffer at a ledger's first size, growable as the library makes it.
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
            workers.forEach((w, i) => w.postMessage({ marks, fds: lists[i]!.sort((a, b) => a - b), round }));
            while (Atomics.load(gate, 1) < THREADS) Atomics.wait(gate, 1, Atomics.load(gate, 1), 5);
            Atomics.store(gate, 0, round);
            Atomics.notify(gate, 0);
            const failed = (await within(Promise.all(results), scaled(20_000), `round ${round}'s threads`).finally(() => listening.forEach((off) => off()))).flat();
            const marked = new Uint8Array(marks);
            const all = lists.flat();
            expect({
              failed,
              unmarked: all.filter((fd) => marked[fd] !== 1),
            }).toEqual({ failed: [], unmarked: [] });
          },
        ),
        { numRuns: 1000 },
      );
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });
});
