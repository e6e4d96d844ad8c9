/**
 * An environment's end (a worker thread terminated, or exiting) closes the
 * fds fdbridge registered on its thread and its JavaScript still held, and
 * the plain fds the addon made for that JavaScript that nothing took and
 * that were not handed on (native.handOver), since threads share the fd
 * table and nothing else would; and only those: an fd handed over stays
 * open (its owner closes it), one a native
 * object of another environment took (a socket) is that object's, and one a
 * libuv stream closes (ownedStream: runtimeCloses) only leaves the registry,
 * for Node has closed it already (a second close would close whatever took
 * the number since).
 */
import { Worker } from 'node:worker_threads';

import { fdIdentity, openFdTable } from '../../src/fd';
import { wrapOwnSocket } from '../../src/socket';
import { native } from './binding';
import { distFile, expectFdTable, withScope } from './helpers';

/** Runs `body` (JS source, with `native` and `fd`, the main thread's fd, in scope) in a worker; it posts what it made; then terminates it. */
async function inTerminatedWorker<T>(fd: number, body: string): Promise<T> {
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const { native } = require(${JSON.stringify(distFile('src/native.js'))});
     const fd = workerData.fd;
     parentPort.postMessage((() => { ${body} })());
     parentPort.on('message', () => undefined); // alive until terminated`,
    { eval: true, workerData: { fd } },
  );
  const made = await new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  // The teardown hands what it closes to the background closer.
  while (native.backgroundClosesPending() > 0 || native.reapsPending() > 0) await new Promise((r) => setTimeout(r, 10));
  return made;
}

test('the fds the worker registered are closed, and leave the registry; of the plain fds it made, those still kept are closed, one handed over stays open', () =>
  withScope(async (s) => {
    const fd = native.memfd('main');
    s.defer(() => native.close(fd));
    const before = openFdTable();
    const owned = native.ownedFdCount();
    const made = await inTerminatedWorker<{ ours: number[]; kept: number[]; plain: number }>(
      fd,
      `const ours = [native.dupHigh(fd), ...native.dupAll([fd, fd]), ...native.socketpair(native.constants.SOCK_STREAM, true), native.pidfdOpen(process.pid, true)];
       const kept = [native.dup(fd), ...native.pipe(), ...native.socketpair(native.constants.SOCK_STREAM), native.memfd('kept'), native.eventfd()];
       const plain = native.dup(fd);
       native.handOver([plain]);
       return { ours, kept, plain };`,
    );
    expect(made.ours).toHaveLength(6);
    expect(made.kept).toHaveLength(7);
    const table = openFdTable();
    expect(made.ours.filter((n) => table.has(n))).toEqual([]);
    // Made for the worker's JavaScript and never taken by anything: nobody else knows them.
    expect(made.kept.filter((n) => table.has(n))).toEqual([]);
    expect(native.ownedFdCount()).toBe(owned);
    // Handed over: whoever it went to closes it (here, this test).
    expect(fdIdentity(made.plain)).toEqual(fdIdentity(fd));
    native.close(made.plain);
    expectFdTable(before);
  }));

test("an fd of the worker's that a socket of this thread took is the socket's: open and usable after the worker's end", () =>
  withScope(async (s) => {
    const before = openFdTable();
    const owned = native.ownedFdCount();
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads');
       const { native } = require(${JSON.stringify(distFile('src/native.js'))});
       parentPort.postMessage(native.socketpair(native.constants.SOCK_SEQPACKET, true));
       parentPort.on('message', () => undefined); // alive until terminated`,
      { eval: true },
    );
    const [x, y] = await new Promise<[number, number]>((resolve) => worker.once('message', resolve));
    // Taken over while the worker lives; it is terminated afterwards.
    const left = wrapOwnSocket(x, 'seqpacket');
    s.defer(() => left.close());
    const right = wrapOwnSocket(y, 'seqpacket');
    s.defer(() => right.close());
    await worker.terminate();
    while (native.backgroundClosesPending() > 0) await new Promise((r) => setTimeout(r, 10));
    await left.send(Buffer.from('still here'));
    expect((await right.receive()).data.toString()).toBe('still here');
    left.close();
    right.close();
    expect(native.ownedFdCount()).toBe(owned);
    expectFdTable(before);
  }));

test('an fd a libuv stream closes (runtimeCloses) only leaves the registry at the worker\'s end', () =>
  withScope(async (s) => {
    const owned = native.ownedFdCount();
    // Nothing closes it in the worker (no stream is made on it): the
    // teardown must leave it open, as it would leave a number Node closed.
    const [stream, peer] = await inTerminatedWorker<[number, number]>(
      -1,
      `const pair = native.socketpair(native.constants.SOCK_STREAM, true);
       native.runtimeCloses(pair[0]);
       return pair;`,
    );
    const table = openFdTable();
    expect([table.has(stream), table.has(peer)]).toEqual([true, false]);
    s.defer(() => native.close(stream));
    expect(native.registration(stream)).toBe(0);
    expect(native.ownedFdCount()).toBe(owned);
  }));

/**
 * A worker thread's event loop fds (ownLoopFds) stay registered until libuv
 * has closed them, after every environment cleanup: a number the loop still
 * holds is never handed to anyone who names it. The teardown is held at its
 * last step (testHoldTeardown), where the environment is gone and the loop
 * is not closed yet.
 */
test("a worker's loop fds are refused (EBADF) until its loop is closed, then leave the registry", () =>
  withScope(async (s) => {
    const [mine, theirs] = native.socketpair(native.constants.SOCK_STREAM, true);
    s.defer(() => native.closeAll([mine, theirs]));
    const before = openFdTable();
    const owned = native.ownedFdCount();
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const { native } = require(${JSON.stringify(distFile('src/native.js'))});
       native.ownLoopFds();
       native.testHoldTeardown(workerData.hold);
       parentPort.postMessage('owned');
       parentPort.on('message', () => undefined); // alive until terminated`,
      { eval: true, workerData: { hold: theirs } },
    );
    await new Promise((resolve) => worker.once('message', resolve));
    const table = openFdTable();
    const loopFds = [...table.keys()].filter((fd) => !before.has(fd) && native.registration(fd) !== 0);
    expect(loopFds.length).toBeGreaterThan(0);
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    void worker.terminate();
    // Said once the teardown is done; it waits for our answer.
    while (!native.pollReadable([mine])[0]) await new Promise((r) => setTimeout(r, 10));
    const named = loopFds.map((fd) => {
      try {
        const copy = native.dupHigh(fd);
        native.close(copy);
        return `${fd}: a copy of ${table.get(fd)}`;
      } catch (err) {
        return `${fd}: ${(err as { code?: string }).code}`;
      }
    });
    expect(named).toEqual(loopFds.map((fd) => `${fd}: EBADF`));
    native.sendNow(mine, Buffer.from('g'));
    await exited;
    expect(loopFds.filter((fd) => native.registration(fd) !== 0)).toEqual([]);
    expect(native.ownedFdCount()).toBe(owned);
    expectFdTable(before);
  }));
