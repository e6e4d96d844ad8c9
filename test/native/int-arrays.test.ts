/**
 * The arrays of fd numbers the addon returns: element by element below 16
 * numbers, from 16 on made by one call into JavaScript from an Int32Array
 * (init's intArray). Either way the caller gets a plain array of the
 * numbers, in order; checked on both sides of the threshold with the calls
 * that return such arrays for every batch (dupAll, pidfdGetfdAll) and the
 * frame channel's DUP_OK (dupFileDescriptors). The jest setup checks the
 * open-fd table after each test.
 */
import fc from 'fast-check';

import { BENCH_PEER_COMMAND } from '../../harness/bench-peer';
import { connect } from '../../src';
import { MAX_FDS_PER_MESSAGE } from '../../src/connection';
import { fdIdentity, openFdTable } from '../../src/fd';
import { native } from './binding';
import { expectFdTable } from './helpers';

/** A plain array (of whichever realm: jest runs the tests in a context of their own), no holes, integers only. */
function expectPlainArray(value: unknown, length: number): asserts value is number[] {
  expect(Array.isArray(value)).toBe(true);
  const list = value as unknown[];
  expect(list).toHaveLength(length);
  for (let i = 0; i < length; i++) {
    expect(Object.prototype.hasOwnProperty.call(list, i)).toBe(true);
    expect(Number.isInteger(list[i])).toBe(true);
  }
}

describe('arrays of fd numbers', () => {
  test('dupAll and pidfdGetfdAll return every number, in order, as a plain array, at every length up to a batch', () => {
    const sources = Array.from({ length: MAX_FDS_PER_MESSAGE }, (_, i) => native.memfd(`source-${i}`));
    const identities = sources.map((fd) => fdIdentity(fd));
    const pidfd = native.pidfdOpen(process.pid, true);
    try {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: MAX_FDS_PER_MESSAGE }), (n) => {
          const before = openFdTable();
          const pins = native.dupAll(sources.slice(0, n));
          expectPlainArray(pins, n);
          pins.forEach((fd, i) => expect(fdIdentity(fd)).toEqual(identities[i]));
          // Pulled in the order listed (reversed here): pulled[i] is a copy of the pin listed i-th.
          const pulled = native.pidfdGetfdAll(pidfd, [...pins].reverse());
          expectPlainArray(pulled, n);
          pulled.forEach((fd, i) => expect(fdIdentity(fd)).toEqual(identities[n - 1 - i]));
          expect(native.closeAll(pulled)).toBe(n);
          expect(native.closeAll(pins)).toBe(n);
          expectFdTable(before);
        }),
        { numRuns: 60 },
      );
    } finally {
      native.closeAll([pidfd, ...sources]);
    }
  });

  test("dupFileDescriptors' reply becomes a plain array of the far side's numbers, below and above 16", async () => {
    const conn = await connect('child', { command: BENCH_PEER_COMMAND });
    const source = native.memfd('source');
    try {
      for (const n of [1, 15, 16, 17, MAX_FDS_PER_MESSAGE]) {
        const got = await conn.dupFileDescriptors(Array.from({ length: n }, () => source));
        expectPlainArray(got, n);
        expect(new Set(got).size).toBe(n);
        expect(await conn.call('closeGiven', got)).toBe(n);
      }
    } finally {
      native.closeAll([source]);
      await conn.close();
    }
  });
});
