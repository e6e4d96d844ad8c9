/**
 * The wrapper of Worker.prototype.terminate (src/terminate-wake.ts), with a
 * binding of the test's that records its calls: it sits on the prototype
 * that holds terminate, so a worker made with the original class is woken
 * when worker_threads.Worker is a subclass at the time the library loads (a
 * recorder's, src/fd-track.ts); it wakes the worker's threadId before
 * Node stops it, passes terminate()'s result on, and wakes nothing for a
 * worker already gone (threadId -1). The end-to-end behaviour, with the
 * addon: test/transports/worker-terminate-sync-dup.test.ts.
 */
import { installTerminateWake, type TerminateWakeBinding } from '../../src/terminate-wake';

// The module object itself (a namespace import would be a copy).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const workerThreads = require('node:worker_threads') as typeof import('node:worker_threads');

test('a worker of the original class, terminated while worker_threads.Worker is a subclass: its threadId woken once, terminate() resolves as Node says', async () => {
  const Original = workerThreads.Worker;
  class Subclass extends Original {}
  const calls: Array<[string, number?]> = [];
  const binding: TerminateWakeBinding = {
    wakeRegisterThread: (id) => void calls.push(['register', id]),
    wakeThread: (id) => {
      calls.push(['wake', id]);
      return true;
    },
    wakeAllThreads: () => void calls.push(['all']),
  };
  (workerThreads as { Worker: unknown }).Worker = Subclass;
  try {
    installTerminateWake(binding);
  } finally {
    (workerThreads as { Worker: unknown }).Worker = Original;
  }
  // Once per binding: a second install adds no second wrapper.
  installTerminateWake(binding);
  const worker = new Original('setInterval(() => {}, 1000)', { eval: true });
  // Not holding jest open should terminate() fail to stop it.
  worker.unref();
  await new Promise((resolve) => worker.once('online', resolve));
  const id = worker.threadId;
  expect(id).toBeGreaterThan(0);
  expect(await worker.terminate()).toBe(1);
  // The thread is gone: threadId -1, nothing to wake.
  expect(worker.threadId).toBe(-1);
  expect(await worker.terminate()).toBeUndefined();
  expect(calls).toEqual([['wake', id]]);
});
