/**
 * A worker thread that loaded the addon and exits with sockets still open:
 * the per-environment cleanup hook must close every one of them (fds, poll
 * handles, queued sends and the fds they hold) without crashing the process.
 */
import { Worker } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';

import { formatFdTableDiff, openFdTable } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { abstractName, distFile, fixture, settledFdTableDiff, withScope } from './helpers';

type Mode = 'exit' | 'terminate' | 'natural';

interface Ready {
  ready?: boolean;
  error?: string;
  queued: number;
  queuedSends: number;
  received: number;
  dgramWaiting: number;
  sockets: number;
}

async function runWorker(mode: Mode, file: string): Promise<{ ready: Ready; code: number }> {
  distFile('src/socket.js');
  const worker = new Worker(fixture('worker-open-sockets.js'), {
    workerData: { mode, file, name: abstractName(`worker-${mode}`) },
  });
  const exited = new Promise<number>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', resolve);
  });
  const ready = await new Promise<Ready>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  if (mode === 'exit') worker.postMessage('exit');
  if (mode === 'terminate') await worker.terminate();
  return { ready, code: await exited };
}

describe.each<[Mode, number]>([
  ['exit', 0],
  ['natural', 0],
  ['terminate', 1],
])('worker leaves its sockets open and ends (%s)', (mode, expectedCode) => {
  test('no crash, and the process fd table is back where it was', () =>
    withScope(async (s) => {
      const dir = s.dir();
      const file = `${dir}/payload`;
      writeFileSync(file, 'payload');
      const before = openFdTable();
      const { ready, code } = await runWorker(mode, file);
      expect(ready.error).toBeUndefined();
      expect(ready.ready).toBe(true);
      // The worker really had sends waiting in its queue, holding fds, when it ended.
      expect(ready.queued).toBeGreaterThanOrEqual(1);
      expect(ready.queuedSends).toBe(ready.queued);
      expect(ready.received).toBe(2);
      expect(ready.dgramWaiting).toBe(1); // a datagram waiting on a full receiver, its pin polled
      expect(ready.sockets).toBe(19);
      expect(code).toBe(expectedCode);
      const diff = await settledFdTableDiff(before);
      expect(formatFdTableDiff(diff)).toBe('');
    }));
});

test('the addon still works in the main thread after workers came and went', () =>
  withScope(async (s) => {
    const file = `${s.dir()}/payload`;
    writeFileSync(file, 'x');
    const before = openFdTable();
    await Promise.all([runWorker('exit', file), runWorker('terminate', file), runWorker('natural', file)]);
    expect(formatFdTableDiff(await settledFdTableDiff(before))).toBe('');
    const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x));
    await a!.send(Buffer.from('still here'));
    expect((await b!.receive()).data.toString()).toBe('still here');
  }));
