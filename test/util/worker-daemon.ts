import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { packageRoot } from '../../src/paths';

/**
 * Starts a HelperDaemon (the compiled library, diagnostics on) at
 * `socketPath` on a worker thread of this process: its event loop is not
 * this thread's. Resolves once it listens, with the function that closes
 * it and waits for the thread's exit.
 */
export async function daemonOnWorkerThread(socketPath: string): Promise<{ stop(): Promise<void> }> {
  const thread = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const { HelperDaemon } = require(workerData.index);
     const daemon = HelperDaemon.start({ diagnostics: true, socketPath: workerData.socketPath });
     parentPort.postMessage('listening');
     parentPort.once('message', () => daemon.close().then(() => parentPort.close()));`,
    { eval: true, workerData: { socketPath, index: join(packageRoot, 'dist', 'src', 'index.js') } },
  );
  const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
  await new Promise((resolve, reject) => {
    thread.once('message', resolve);
    thread.once('error', reject);
  });
  return {
    stop: async () => {
      thread.postMessage('stop');
      await exited;
    },
  };
}
