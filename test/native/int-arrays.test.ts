/**
 * The arrays of fd numbers the addon returns: element by element below 16
 * numbers, from 16 on made by one call into JavaScript from an Int32Array
 * (init's intArray). Either way the caller gets a plain array of the
 * numbers, in order; checked on both sides of the threshold with the calls
 * that return such arrays for every batch (dupAll, pidfdGetfdAll) and the
 * frame channel's DUP_OK (dupFileDescriptors).
 *
 * And the lists it reads: from 16 numbers on, fdList passes an Int32Array
 * when every entry is an int32, read in one copy; anything else goes
 * element by element as before. dupFileDescriptors checks its list and
 * makes those Int32Arrays in one walk (checkedFdLists), which must give
 * what the check (validateFds), a copy per 253-fd piece and fdList give.
 * Generated lists (holes, fractions, NaN, negatives, past 2^31 - 1,
 * strings...) give the same result or the same error either way, called
 * directly and through dupFileDescriptors. The jest setup checks the
 * open-fd table after each test.
 */
import fc from 'fast-check';

import { BENCH_PEER_COMMAND } from '../../harness/bench-peer';
import { connect } from '../../src';
import { MAX_FDS_PER_MESSAGE } from '../../src/connection';
import { fdIdentity, openFdTable, validateFd, validateFds, type FdIdentity } from '../../src/fd';
import type { TransportName } from '../../src/transports';
import { checkedFdLists, fdList, native, nativeModule, type FdList } from './binding';
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

/** An entry of a generated fd list: one of the test's open fds, something that is not an fd number, or a hole. */
const HOLE = Symbol('hole');
type Entry = { source: number } | { other: unknown };
const notAnFd = fc.constantFrom<unknown>(
  -1, -2, -0x80000000, -0, 0.5, 3.25, Number.NaN, Infinity, -Infinity,
  0x7fffffff, 0x80000000, 2 ** 40, Number.MAX_SAFE_INTEGER, '3', null, undefined, 3n, {}, [3], HOLE,
);
const entry: fc.Arbitrary<Entry> = fc.oneof(
  { weight: 30, arbitrary: fc.nat(3).map((source) => ({ source })) },
  { weight: 1, arbitrary: notAnFd.map((other) => ({ other })) },
);
/** Lengths on both sides of 16 and of a message's 253. */
const entries = fc.oneof(
  fc.array(entry, { maxLength: 20 }),
  fc.array(entry, { minLength: 14, maxLength: 18 }),
  fc.array(entry, { minLength: 240, maxLength: 260 }),
);

/** Lists fdList passes as an Int32Array: 16 entries or more, each one an open fd or another int32. */
const int32Entry: fc.Arbitrary<Entry> = fc.oneof(
  { weight: 30, arbitrary: fc.nat(3).map((source) => ({ source })) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(-1, -2, -0x80000000, -0, 0x7fffffff).map((other) => ({ other })) },
);
const int32Entries = fc.oneof(fc.array(int32Entry, { minLength: 16, maxLength: 20 }), fc.array(int32Entry, { minLength: 240, maxLength: 260 }));

function listOf(sources: readonly number[], es: readonly Entry[]): number[] {
  const list: unknown[] = [];
  list.length = es.length;
  es.forEach((e, i) => {
    if ('source' in e) list[i] = sources[e.source];
    else if (e.other !== HOLE) list[i] = e.other;
  });
  return list as number[];
}

/** Whether fdList should pass `list` as an Int32Array: 16 entries or more, every one an int32 (no holes). */
function expectInt32(list: readonly unknown[]): boolean {
  if (list.length < 16) return false;
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (!(i in list) || typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) return false;
  }
  return true;
}

type Outcome = { value: unknown } | { error: { type: string; message: string; code?: unknown; errno?: unknown; syscall?: unknown } };

/** What `f` returned (as `seen` makes it comparable, closing what it opened) or threw. */
function outcomeOf<T>(f: () => T, seen: (v: T) => unknown): Outcome {
  let v: T;
  try {
    v = f();
  } catch (err) {
    const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
    return { error: { type: e.constructor.name, message: e.message, code: e.code, errno: e.errno, syscall: e.syscall } };
  }
  return { value: seen(v) };
}

/** Identities of fds the call made here, closed once read. */
function identitiesClosed(fds: number[]): FdIdentity[] {
  const ids = fds.map((fd) => fdIdentity(fd));
  expect(native.closeAll(fds)).toBe(fds.length);
  return ids;
}

describe('fd lists read from an Int32Array', () => {
  test('fdList gives an Int32Array of the same numbers exactly when the list has 16 or more int32 entries, else the list itself', () => {
    fc.assert(
      fc.property(entries, (es) => {
        const list = listOf([3, 4, 5, 0x7fffffff], es);
        const got = fdList(list);
        if (expectInt32(list)) {
          expect(got).toBeInstanceOf(Int32Array);
          expect(Array.from(got)).toEqual(list.map((v) => v + 0)); // -0 as 0
        } else {
          expect(got).toBe(list);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('checkedFdLists gives what validateFds, a copy per piece and fdList give, or the same TypeError', () => {
    /** The walks it replaces: the check, `above` from the numbers, then each piece copied and given to fdList. */
    const reference = (list: readonly unknown[], size: number): { lists: FdList[]; above: number } => {
      validateFds(list);
      const numbers = list as readonly number[];
      let above = 0;
      for (const fd of numbers) if (fd >= above) above = Math.min(fd + 1, 0x7fffffff);
      const lists: FdList[] = [];
      for (let i = 0; i < numbers.length; i += size) lists.push(fdList(numbers.slice(i, i + size)));
      return { lists, above };
    };
    const comparable = (got: { lists: FdList[]; above: number }) => ({
      above: got.above,
      lists: got.lists.map((l) => ({ int32: l instanceof Int32Array, numbers: Array.from(l, (v) => v + 0) })), // -0 as 0
    });
    const check = (fd: unknown, i: number): void => {
      validateFd(fd, `fds[${i}]`);
    };
    let int32Pieces = 0;
    let plainPieces = 0;
    fc.assert(
      fc.property(fc.oneof(entries, int32Entries), fc.constantFrom(1, 5, 15, 16, 17, 100, MAX_FDS_PER_MESSAGE), (es, size) => {
        const list = listOf([3, 4, 5, 0x7fffffff], es);
        const expected = outcomeOf(() => reference(list, size), comparable);
        const got = outcomeOf(() => checkedFdLists(list, size, check), comparable);
        expect(got).toEqual(expected);
        if ('value' in got) {
          for (const l of (got.value as ReturnType<typeof comparable>).lists) {
            if (l.int32) int32Pieces++;
            else plainPieces++;
          }
        }
      }),
      { numRuns: 500 },
    );
    // Both forms of piece were compared.
    expect(int32Pieces).toBeGreaterThan(0);
    expect(plainPieces).toBeGreaterThan(0);
  });

  test('checkedFdLists reads each entry once, and allocates a piece only when the walk reaches it', () => {
    fc.assert(
      fc.property(fc.nat(600), fc.integer({ min: 1, max: 2 ** 32 - 1 }), (valid, extra) => {
        // `valid` good entries, read through a getter that counts, then a length set far past them.
        const reads = new Array<number>(valid).fill(0);
        const list: unknown[] = [];
        for (let i = 0; i < valid; i++) {
          Object.defineProperty(list, i, {
            get: () => {
              reads[i] = (reads[i] as number) + 1;
              return i % 7;
            },
            enumerable: true,
          });
        }
        list.length = Math.min(2 ** 32 - 1, valid + extra);
        expect(() => checkedFdLists(list, MAX_FDS_PER_MESSAGE, (fd, i) => validateFd(fd, `fds[${i}]`))).toThrow(
          new TypeError(`fds[${valid}] must be a non-negative integer, not undefined`),
        );
        expect(reads.every((n) => n === 1)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  test('dupAll, pidfdGetfdAll and closeAll give the same result or the same error for a list and for fdList of it', () => {
    const sources = [native.memfd('list-0'), native.memfd('list-1'), native.memfd('list-2'), native.memfd('list-3')];
    const pidfd = native.pidfdOpen(process.pid, true);
    let typed = 0;
    try {
      fc.assert(
        fc.property(entries, int32Entries, fc.constantFrom(undefined, 0, 500), (es, es32, above) => {
          for (const list of [listOf(sources, es), listOf(sources, es32)]) {
            const before = openFdTable();
            const viaInt32 = fdList(list);
            if (viaInt32 instanceof Int32Array) typed++;
            const closedOnly = (a: number[]) => identitiesClosed(a);
            expect(outcomeOf(() => native.dupAll(viaInt32, above), closedOnly)).toEqual(outcomeOf(() => native.dupAll(list, above), closedOnly));
            expectFdTable(before);
            expect(outcomeOf(() => native.pidfdGetfdAll(pidfd, viaInt32), closedOnly)).toEqual(
              outcomeOf(() => native.pidfdGetfdAll(pidfd, list), closedOnly),
            );
            expectFdTable(before);
            // closeAll closes what it is given: each side gets copies of its own in
            // the sources' places, and -0, which it takes as fd 0, becomes a number
            // no fd has (the other entries are no open fd of anyone's).
            const closes = (make: (l: number[]) => FdList) => {
              const copies = sources.map((fd) => native.dup(fd));
              const mine = list.map((v) => (sources.includes(v) ? (copies[sources.indexOf(v)] as number) : Object.is(v, -0) ? 0x7fffffff : v));
              const n = outcomeOf(() => native.closeAll(make(mine)), (count) => count);
              const open = copies.filter((fd) => native.closeAll([fd]) === 1); // the copies it was not given
              return { n, open: open.length };
            };
            expect(closes((l) => fdList(l))).toEqual(closes((l) => l));
            expectFdTable(before);
          }
        }),
        { numRuns: 150 },
      );
    } finally {
      native.closeAll([pidfd, ...sources]);
    }
    // Every run's second list took the Int32Array path.
    expect(typed).toBeGreaterThanOrEqual(150);
  });

  test('an Int32Array view is read from its own offset and length', () => {
    const sources = Array.from({ length: 40 }, (_, i) => native.memfd(`view-${i}`));
    const before = openFdTable();
    try {
      const view = new Int32Array(sources).subarray(7, 30);
      const dups = native.dupAll(view);
      expect(dups.map((fd) => fdIdentity(fd))).toEqual(sources.slice(7, 30).map((fd) => fdIdentity(fd)));
      expect(native.closeAll(new Int32Array(dups))).toBe(dups.length);
      expectFdTable(before);
    } finally {
      native.closeAll(sources);
    }
  });

  describe.each<TransportName>(['direct', 'child', 'pidfd'])('dupFileDescriptors on %s', (transport) => {
    test('the same numbers or the same error with checkedFdLists and fdList as with the list checked, then read element by element', async () => {
      const conn = await connect(transport, { command: BENCH_PEER_COMMAND });
      const sources = [native.memfd('dup-0'), native.memfd('dup-1'), native.memfd('dup-2'), native.memfd('dup-3')];
      /** Far-side numbers are not comparable between two calls: their count, distinct, closed there once counted. */
      const settle = async (p: () => Promise<number[]>): Promise<Outcome> => {
        let got: number[];
        try {
          got = await p();
        } catch (err) {
          return outcomeOf(() => {
            throw err;
          }, () => undefined);
        }
        expect(await conn.call('closeGiven', got)).toBe(got.length);
        return { value: { n: got.length, distinct: new Set(got).size } };
      };
      let elementwiseCalls = 0;
      let walkCalls = 0;
      try {
        await fc.assert(
          fc.asyncProperty(fc.oneof(entries, int32Entries), async (es) => {
            const list = listOf(sources, es);
            const viaInt32 = await settle(() => conn.dupFileDescriptors(list));
            // The list checked, then copied per piece and read element by element, as before checkedFdLists.
            const walk = jest.spyOn(nativeModule, 'checkedFdLists').mockImplementation((l, size) => {
              walkCalls++;
              validateFds(l);
              const numbers = l as readonly number[];
              let above = 0;
              for (const fd of numbers) if (fd >= above) above = Math.min(fd + 1, 0x7fffffff);
              const lists: number[][] = [];
              for (let i = 0; i < numbers.length; i += size) lists.push(numbers.slice(i, i + size));
              return { lists, above };
            });
            const spy = jest.spyOn(nativeModule, 'fdList').mockImplementation((l) => {
              elementwiseCalls++;
              return l;
            });
            let elementwise: Outcome;
            try {
              elementwise = await settle(() => conn.dupFileDescriptors(list));
            } finally {
              spy.mockRestore();
              walk.mockRestore();
            }
            expect(viaInt32).toEqual(elementwise);
          }),
          { numRuns: 40 },
        );
        // The replaced walk and fdList were the ones dupFileDescriptors and the transport call.
        expect(walkCalls).toBeGreaterThan(0);
        expect(elementwiseCalls).toBeGreaterThan(0);
      } finally {
        await conn.close();
        native.closeAll(sources);
      }
    });
  });
});
