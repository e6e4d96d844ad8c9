/**
 * ownLoopFds registers the io_uring rings of the calling thread's own event
 * loop (libuv 1.45+, Node 22 and later, gives each loop one as it starts)
 * and no other thread's: not the main loop's, not another worker's. libuv
 * does not say which ring is whose; registered in its place, another
 * thread's ring would be refused (EBADF) while it is open, stay refused
 * after its loop closed it (a new fd at its number included), and leave
 * the registry when the registering thread ends, though its own loop may
 * still hold it. On Node 20 no loop has a ring: nothing is registered, and
 * nothing new appears.
 */
import { Worker } from 'node:worker_threads';

import { openFdTable, type FdTable } from '../../src/fd';
import { native } from './binding';
import { distFile } from './helpers';

const RING = 'anon_inode:[io_uring]';

function ringFds(table: FdTable = openFdTable()): number[] {
  return [...table].filter(([, target]) => target === RING).map(([fd]) => fd).sort((a, b) => a - b);
}

/** A worker that posts once it runs (after `ownLoopFds()` when `own`) and stays until terminated. */
async function startWorker(own: boolean): Promise<Worker> {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const { native } = require(${JSON.stringify(distFile('src/native.js'))});
     parentPort.postMessage(${own ? 'native.ownLoopFds()' : '0'});
     parentPort.on('message', () => undefined); // alive until terminated`,
    { eval: true },
  );
  await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return worker;
}

test("a worker registers its own loop's rings, not the main loop's or another worker's", async () => {
  const other = await startWorker(false);
  let owner: Worker | undefined;
  try {
    const before = openFdTable();
    owner = await startWorker(true);
    const after = openFdTable();
    // The new rings are the owner's loop's: nothing else started meanwhile.
    const its = ringFds(after).filter((fd) => before.get(fd) !== RING);
    const registered = ringFds(after).filter((fd) => native.registration(fd) !== 0);
    expect(registered).toEqual(its);
    // The other worker's ring, and the main loop's, stay unregistered once it is gone.
    await other.terminate();
    expect(ringFds().filter((fd) => native.registration(fd) !== 0)).toEqual(its);
    await owner.terminate();
    owner = undefined;
    expect(ringFds().filter((fd) => native.registration(fd) !== 0)).toEqual([]);
  } finally {
    await other.terminate();
    await owner?.terminate();
  }
});
