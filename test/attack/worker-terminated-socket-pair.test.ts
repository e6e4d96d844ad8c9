/**
 * A worker thread terminated (worker.terminate(): a pool shrinking, a test
 * runner's timeout) while it makes sockets with UnixSocket.pair() must not
 * leave a socket open in the process: threads share the fd table, and the
 * environment's teardown closes every UnixSocket it still had. pair() gets
 * the two fds from socketpair(2) as plain numbers and only then wraps them:
 * a termination there (its `catch` does not run: a terminated thread's
 * JavaScript stops, uncatchably) leaves the fds owned by nobody. The
 * worker here makes and closes pairs in a loop, so a termination lands in
 * or out of that window; each of ROUNDS rounds is checked: after the
 * worker's exit and its environment's teardown (the background closer
 * idle), the fd table is what it was.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';

import { formatFdTableDiff, diffFdTables, openFdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { backgroundClosesPending, reapsPending } from '../../src/test-hooks';

const ROUNDS = 50;

const WORKER = `
const { parentPort } = require('node:worker_threads');
const { UnixSocket } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
parentPort.postMessage('looping');
for (;;) {
  const [a, b] = UnixSocket.pair();
  a.close();
  b.close();
}
`;

async function teardownsDone(): Promise<void> {
  while (reapsPending() !== 0 || backgroundClosesPending() !== 0) await new Promise((r) => setTimeout(r, 10));
}

test('terminating a worker that makes socket pairs leaves no socket open in the process', async () => {
  // The addon loaded here first, as it is in a process that uses it: its own fds are in the baseline.
  await teardownsDone();
  const before = openFdTable();
  const leftAfter: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const worker = new Worker(WORKER, { eval: true });
    // Posted before the loop; the termination lands somewhere in it.
    await new Promise((resolve) => worker.once('message', resolve));
    await worker.terminate();
    await teardownsDone();
    const diff = diffFdTables(before, openFdTable());
    if (diff.opened.length > 0 || diff.closed.length > 0) leftAfter.push(`round ${round}: ${formatFdTableDiff(diff)}`);
  }
  expect(leftAfter).toEqual([]);
}, 120_000);
