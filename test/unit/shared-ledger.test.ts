/**
 * The worker transport's fd ledger: an fd marked given is adopted at most
 * once, from any thread that attached the buffer; the sweep closes exactly
 * the fds left unadopted; the buffer grows for fd numbers past its size.
 */
import fs from 'node:fs';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { fdLimit, makeMemfd, openFdTable, closeFds, setFdLimit } from '../../src/fd';
import { SharedFdLedger } from '../../src/transports/shared-ledger';

const nrOpen = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());

describe('SharedFdLedger', () => {
  test('create(): one byte per fd up to the soft limit (at least 1024), growable to the kernel ceiling nr_open', () => {
    const ledger = SharedFdLedger.create();
    const [soft] = fdLimit();
    expect(ledger.buffer.maxByteLength).toBe(nrOpen);
    expect(ledger.buffer.byteLength).toBe(Math.min(nrOpen, Math.max(soft, 1024)));
    expect(ledger.buffer.growable).toBe(true);
    expect(ledger.size).toBe(0);
  });

  test('a soft limit under 1024 still gets 1024 slots at first', () => {
    const [soft, hard] = fdLimit();
    setFdLimit(256, hard);
    try {
      expect(SharedFdLedger.create().buffer.byteLength).toBe(Math.min(nrOpen, 1024));
    } finally {
      setFdLimit(soft, hard);
    }
  });

  test('no readable nr_open (a /proc that hides it, or says nothing): the ceiling is 2^20, the default nr_open', () => {
    const real = fs.readFileSync;
    for (const answer of ['4096\n', 'unreadable', '', 'garbage\n']) {
      const spy = jest.spyOn(fs, 'readFileSync').mockImplementation(((path: fs.PathOrFileDescriptor, options?: unknown) => {
        if (path !== '/proc/sys/fs/nr_open') return real(path, options as BufferEncoding);
        if (answer === 'unreadable') throw Object.assign(new Error('EACCES: staged'), { code: 'EACCES' });
        // As readFileSync answers: text when asked for utf8, else a Buffer.
        return options === 'utf8' || (options as { encoding?: string } | undefined)?.encoding === 'utf8' ? answer : Buffer.from(answer);
      }) as typeof fs.readFileSync);
      try {
        // (A readable one is the ceiling, however small: that this stand-in is the one read.)
        expect([answer, SharedFdLedger.create().buffer.maxByteLength]).toEqual([answer, answer === '4096\n' ? 4096 : 1 << 20]);
      } finally {
        spy.mockRestore();
      }
    }
  });

  test('an fd given is adopted once; one never given is not adopted', () => {
    const ledger = SharedFdLedger.create();
    ledger.add(7);
    expect(ledger.size).toBe(1);
    expect(ledger.adopt(8)).toBe(false);
    expect(ledger.adopt(7)).toBe(true);
    expect(ledger.adopt(7)).toBe(false);
    expect(ledger.size).toBe(0);
  });

  test('an fd number past the buffer grows it (to twice its size, or enough for the fd) and is adopted', () => {
    const ledger = SharedFdLedger.create();
    const len = ledger.buffer.byteLength;
    expect(ledger.adopt(len)).toBe(false);
    ledger.add(len);
    expect(ledger.buffer.byteLength).toBe(Math.min(nrOpen, len * 2));
    const far = Math.min(nrOpen - 1, len * 5);
    ledger.add(far);
    expect(ledger.buffer.byteLength).toBe(Math.min(nrOpen, far + 1));
    expect(ledger.size).toBe(2);
    expect(ledger.adopt(len)).toBe(true);
    expect(ledger.adopt(far)).toBe(true);
    // The last slot of the buffer is an fd like the others.
    const last = ledger.buffer.byteLength - 1;
    ledger.add(last);
    expect(ledger.buffer.byteLength).toBe(last + 1);
    expect(ledger.adopt(last)).toBe(true);
  });

  test('another view of the same buffer (another thread\'s) sees the marks and takes them', () => {
    const ledger = SharedFdLedger.create();
    const other = SharedFdLedger.attach(ledger.buffer);
    ledger.add(5);
    expect(other.size).toBe(1);
    expect(other.adopt(5)).toBe(true);
    expect(ledger.adopt(5)).toBe(false);
    // Growth made by one view is seen by the other.
    const len = ledger.buffer.byteLength;
    other.add(len + 3);
    expect(ledger.adopt(len + 3)).toBe(true);
  });

  test('sweep closes exactly the fds left unadopted (on the background closer), counts them, and forgets them', async () => {
    const ledger = SharedFdLedger.create();
    const fds = [makeMemfd(), makeMemfd(), makeMemfd()];
    for (const fd of fds) ledger.add(fd);
    expect(ledger.adopt(fds[1]!)).toBe(true);
    try {
      expect(ledger.sweep()).toBe(2);
      await ledger.swept();
      const table = openFdTable();
      expect(table.has(fds[0]!)).toBe(false);
      expect(table.has(fds[1]!)).toBe(true);
      expect(table.has(fds[2]!)).toBe(false);
      expect(ledger.size).toBe(0);
      expect(ledger.sweep()).toBe(0);
    } finally {
      closeFds([fds[1]!]);
    }
  });

  test('sweep counts a marked fd someone else already closed, and goes on', async () => {
    const ledger = SharedFdLedger.create();
    const gone = makeMemfd();
    const kept = makeMemfd();
    ledger.add(gone);
    ledger.add(kept);
    closeFds([gone]);
    expect(ledger.sweep()).toBe(2);
    await ledger.swept();
    expect(openFdTable().has(kept)).toBe(false);
  });

  test('model: adopt succeeds exactly for given, not yet adopted fds', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), fd: fc.integer({ min: 0, max: 3000 }) }),
      fc.record({ kind: fc.constant('adopt' as const), fd: fc.integer({ min: 0, max: 3000 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const ledger = SharedFdLedger.create();
        const model = new Set<number>();
        for (const o of ops) {
          if (o.kind === 'add') {
            ledger.add(o.fd);
            model.add(o.fd);
          } else {
            expect(ledger.adopt(o.fd)).toBe(model.delete(o.fd));
          }
          expect(ledger.size).toBe(model.size);
        }
      }),
    );
  });

  test('two threads adopting the same fds: each fd is adopted exactly once', async () => {
    const ledger = SharedFdLedger.create();
    const fds = Array.from({ length: 500 }, (_, i) => i + 100);
    for (const fd of fds) ledger.add(fd);
    // The other thread runs the same compare-and-swap on the shared bytes.
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const view = new Uint8Array(workerData.buffer);
       let n = 0;
       for (const fd of workerData.fds) if (Atomics.compareExchange(view, fd, 1, 0) === 1) n++;
       parentPort.postMessage(n);`,
      { eval: true, workerData: { buffer: ledger.buffer, fds } },
    );
    let mine = 0;
    for (const fd of fds) if (ledger.adopt(fd)) mine++;
    const theirs = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(mine + theirs).toBe(fds.length);
    expect(ledger.size).toBe(0);
  });
});
