/**
 * The ledgers of the copies given to a command in this process. The worker
 * transport's: an fd marked given is adopted at most once, from any thread
 * that attached the buffer; the sweep closes exactly the copies it gave and
 * that are left unadopted; the buffer grows for fd numbers past its size.
 * Both (the direct command's GivenCopySet too), against a model: adopt,
 * release and sweep take each copy once, and close exactly the copies still
 * given.
 */
import fs from 'node:fs';
import { closeSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { backgroundCloseFds, closeFd, closeOwnFds, fdLimit, makeMemfd, openFdTable, closeFds, setFdLimit } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';
import { GivenCopySet } from '../../src/transports/given-copies';
import { SharedFdLedger } from '../../src/transports/shared-ledger';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

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

  test('a copy given is adopted once, and is the command\'s then (fdbridge\'s no more); a number never given is not adopted', () => {
    const ledger = SharedFdLedger.create();
    const memfd = makeMemfd();
    const copy = ledger.give(memfd);
    try {
      expect(ledger.size).toBe(1);
      expect(fdRegistration(copy)).not.toBe(0);
      expect(ledger.adopt(copy + 1)).toBe(false);
      expect(ledger.adopt(copy)).toBe(true);
      expect(fdRegistration(copy)).toBe(0);
      expect(ledger.adopt(copy)).toBe(false);
      expect(ledger.size).toBe(0);
    } finally {
      closeFds([copy, memfd]);
    }
  });

  test('a number marked but holding no copy given under this ledger\'s owner (closed behind fdbridge\'s back, another ledger\'s copy there now) is not adopted, and that copy stays the other\'s', () => {
    const ledger = SharedFdLedger.create();
    const another = SharedFdLedger.create();
    const memfd = makeMemfd();
    const copy = ledger.give(memfd);
    closeSync(copy); // behind fdbridge's back
    const theirs = another.give(memfd);
    try {
      expect(theirs).toBe(copy);
      expect(ledger.adopt(copy)).toBe(false);
      expect(ledger.size).toBe(0);
      expect(fdRegistration(theirs)).not.toBe(0);
      expect(another.adopt(theirs)).toBe(true);
    } finally {
      closeFds([theirs, memfd]);
    }
  });

  test('an fd number past the buffer grows it (to twice its size, or enough for the fd) and is marked', () => {
    const ledger = SharedFdLedger.create();
    const len = ledger.buffer.byteLength;
    ledger.add(len);
    expect(ledger.buffer.byteLength).toBe(Math.min(nrOpen, len * 2));
    const far = Math.min(nrOpen - 1, len * 5);
    ledger.add(far);
    expect(ledger.buffer.byteLength).toBe(Math.min(nrOpen, far + 1));
    expect(ledger.size).toBe(2);
    // Swept (counted), though no copy is there to close.
    expect(ledger.sweep()).toBe(2);
    expect(ledger.size).toBe(0);
    // The last slot of the buffer is an fd like the others.
    const last = ledger.buffer.byteLength - 1;
    ledger.add(last);
    expect(ledger.buffer.byteLength).toBe(last + 1);
    expect(ledger.size).toBe(1);
    expect(ledger.sweep()).toBe(1);
  });

  test('another view of the same buffer (another thread\'s) sees the marks and takes them', () => {
    const ledger = SharedFdLedger.create();
    const other = SharedFdLedger.attach(ledger.buffer, ledger.owner);
    const memfd = makeMemfd();
    const copy = ledger.give(memfd);
    try {
      expect(other.size).toBe(1);
      expect(other.adopt(copy)).toBe(true);
      expect(ledger.adopt(copy)).toBe(false);
      // Growth made by one view is seen by the other.
      const len = ledger.buffer.byteLength;
      other.add(len + 3);
      expect(ledger.size).toBe(1);
      expect(ledger.sweep()).toBe(1);
    } finally {
      closeFds([copy, memfd]);
    }
  });

  test('sweep closes exactly the copies left unadopted (on the background closer), counts them, and forgets them', async () => {
    const ledger = SharedFdLedger.create();
    const memfd = makeMemfd();
    const fds = [ledger.give(memfd), ...ledger.giveAll([memfd, memfd], 0)];
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
      closeFds([fds[1]!, memfd]);
    }
  });

  test('sweep counts a copy someone else already closed, and goes on; that copy is fdbridge\'s no more', async () => {
    const ledger = SharedFdLedger.create();
    const memfd = makeMemfd();
    const gone = ledger.give(memfd);
    const kept = ledger.give(memfd);
    closeSync(gone);
    expect(ledger.sweep()).toBe(2);
    await ledger.swept();
    expect(openFdTable().has(kept)).toBe(false);
    expect(fdRegistration(gone)).toBe(0);
    closeFds([memfd]);
  });

  test('a fd merely marked (add), not a copy given under this ledger\'s owner, is not closed by the sweep', async () => {
    const ledger = SharedFdLedger.create();
    const fd = makeMemfd();
    ledger.add(fd);
    expect(ledger.sweep()).toBe(1);
    await ledger.swept();
    expect(openFdTable().has(fd)).toBe(true);
    closeFds([fd]);
  });

  test('model: adopt succeeds exactly for copies given and not yet adopted', () => {
    const memfd = makeMemfd();
    try {
      fc.assert(
        fc.property(fc.array(fc.record({ kind: fc.constantFrom('give' as const, 'adopt' as const), at: fc.nat(7) }), { maxLength: 40 }), (ops) => {
          const ledger = SharedFdLedger.create();
          const copies: number[] = [];
          const model = new Set<number>();
          try {
            for (const o of ops) {
              if (o.kind === 'give') {
                const copy = ledger.give(memfd);
                copies.push(copy);
                model.add(copy);
              } else {
                const fd = copies[o.at % Math.max(copies.length, 1)] ?? memfd;
                expect(ledger.adopt(fd)).toBe(model.delete(fd));
              }
              expect(ledger.size).toBe(model.size);
            }
          } finally {
            closeOwnFds(copies);
          }
        }),
      );
    } finally {
      closeFds([memfd]);
    }
  });

  test('two threads adopting the same fds: each fd is adopted exactly once', async () => {
    const ledger = SharedFdLedger.create();
    const memfd = makeMemfd();
    const fds = ledger.giveAll(Array.from({ length: 500 }, () => memfd), 0);
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
    closeFds([...fds, memfd]);
    expect(mine + theirs).toBe(fds.length);
    expect(ledger.size).toBe(0);
  });
});

describe.each([
  ['GivenCopySet (direct)', () => new GivenCopySet()],
  ['SharedFdLedger (worker)', () => SharedFdLedger.create()],
] as const)('%s: release()', (_name, make) => {
  /** Turns the event loop until `ok()` holds. */
  async function until(ok: () => boolean): Promise<void> {
    while (!ok()) await new Promise((r) => setImmediate(r));
  }

  (hasPython() ? test : test.skip)(
    "resolves once its own batch is closed, while a close this ledger handed over earlier is still blocked (a lingering socket's last reference)",
    async () => {
      const before = [...openFdTable().keys()].sort((a, b) => a - b);
      const linger = await lingeringSocket(1);
      try {
        const ledger = make();
        const lingering = ledger.give(linger.fd);
        closeFd(linger.fd); // the caller's copy: the ledger's is the socket's last reference
        const order: string[] = [];
        // Blocks for the linger time, until python resets the peer (linger.end()).
        const earlier = ledger.release([lingering]).then(() => order.push('earlier'));
        await until(() => backgroundCloseFds().running.includes(lingering));
        const memfd = makeMemfd();
        const copy = ledger.give(memfd);
        closeFd(memfd);
        await ledger.release([copy]).then(() => order.push('later'));
        // Expected: ['later'], the blocked close still running. A wait on every
        // batch the ledger handed over gave up on the blocked one first
        // (CLOSES_GIVE_UP_MS, its timer made before): ['earlier', 'later'].
        expect([order, backgroundCloseFds().running]).toEqual([['later'], [lingering]]);
        await linger.end(); // resets the peer: the blocked close returns
        await earlier;
        expect(order).toEqual(['later', 'earlier']);
      } finally {
        await linger.end();
      }
      expect([...openFdTable().keys()].sort((a, b) => a - b)).toEqual(before);
    },
  );
});

describe.each([
  ['GivenCopySet (direct)', () => new GivenCopySet()],
  ['SharedFdLedger (worker)', () => SharedFdLedger.create()],
] as const)('%s: give, adopt, release, sweep', (_name, make) => {
  type Op =
    | { kind: 'give' }
    | { kind: 'giveAll'; n: number }
    | { kind: 'adopt'; at: number }
    | { kind: 'release'; picks: number[] }
    | { kind: 'sweep' };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.constant({ kind: 'give' as const }),
    fc.record({ kind: fc.constant('giveAll' as const), n: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ kind: fc.constant('adopt' as const), at: fc.nat(15) }),
    fc.record({ kind: fc.constant('release' as const), picks: fc.array(fc.nat(15), { maxLength: 5 }) }),
    fc.constant({ kind: 'sweep' as const }),
  );

  test('generated: against a model of the copies given and not yet adopted, released or swept: adopt takes each once and makes it the command\'s; release and sweep close exactly those still given, and leave the adopted ones and the caller\'s own fd open', async () => {
    const before = [...openFdTable().keys()].sort((a, b) => a - b);
    const memfd = makeMemfd();
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
          const ledger = make();
          /** The model: copies given and not yet adopted, released or swept. */
          const given = new Set<number>();
          /** The copies the "command" adopted: its own, open until it closes them. */
          const adopted: number[] = [];
          /** Numbers to pick from: every copy made so far, and the caller's own fd (never given). */
          const seen: number[] = [memfd];
          const pick = (at: number): number => seen[at % seen.length] as number;
          const open = (fd: number): boolean => openFdTable().has(fd);
          try {
            for (const o of ops) {
              if (o.kind === 'give' || o.kind === 'giveAll') {
                const copies = o.kind === 'give' ? [ledger.give(memfd)] : ledger.giveAll(Array.from({ length: o.n }, () => memfd), 0);
                for (const d of copies) {
                  expect(given.has(d) || adopted.includes(d) || d === memfd).toBe(false);
                  expect(fdRegistration(d)).not.toBe(0);
                  given.add(d);
                  seen.push(d);
                }
              } else if (o.kind === 'adopt') {
                const fd = pick(o.at);
                const expected = given.delete(fd);
                expect(ledger.adopt(fd)).toBe(expected);
                if (expected) {
                  adopted.push(fd);
                  // The command's now: fdbridge no longer holds it.
                  expect(fdRegistration(fd)).toBe(0);
                }
              } else if (o.kind === 'release') {
                const fds = o.picks.map(pick);
                const closing = [...new Set(fds.filter((fd) => given.has(fd)))];
                await ledger.release(fds);
                // Resolved once its own copies are closed.
                for (const fd of closing) {
                  expect(open(fd)).toBe(false);
                  given.delete(fd);
                }
              } else {
                expect(ledger.sweep()).toBe(given.size);
                await ledger.swept();
                for (const fd of given) expect(open(fd)).toBe(false);
                given.clear();
              }
              expect(ledger.size).toBe(given.size);
              for (const fd of [...given, ...adopted, memfd]) expect(open(fd)).toBe(true);
            }
          } finally {
            ledger.sweep();
            await ledger.swept();
            closeFds(adopted);
          }
        }),
        { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261202), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 60) },
      );
    } finally {
      closeFd(memfd);
    }
    expect([...openFdTable().keys()].sort((a, b) => a - b)).toEqual(before);
  });
});
