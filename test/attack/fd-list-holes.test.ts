/**
 * A hole in an fd list (`[0, , 2]`, or an array whose length was set) must
 * be refused like the value it reads as (`undefined`): at once, with a
 * TypeError naming the index, before anything is sent. Array.prototype.forEach
 * skips holes, so a sparse list passes the up-front check and reaches the
 * transport; a sparse list of huge length (length = 2^31, no elements) is
 * then walked element by element and cut into 253-fd batches: the caller ran
 * 5 minutes at 3.6 GB RSS without an answer instead of a typed error.
 * Generated: a bad entry (or a hole) anywhere in the first three pieces of
 * a list of any length up to 2^32 - 1 is refused at its index, at once.
 */
import fc from 'fast-check';

import { connect, PROBE_COMMAND } from '../../src';
import { openFdTable } from '../../src/fd';

test('a hole in an fd list is refused at once like undefined, naming its index (direct)', async () => {
  const before = openFdTable();
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    const dense = [0, undefined as unknown as number, 2];
    // eslint-disable-next-line no-sparse-arrays
    const sparse = [0, , 2] as number[];
    expect(() => conn.dupFileDescriptors(dense)).toThrow(/fds\[1\]/);
    let syncError: unknown;
    let pending: Promise<unknown> | undefined;
    try {
      pending = conn.dupFileDescriptors(sparse);
    } catch (e) {
      syncError = e;
    }
    if (pending) await pending.catch(() => undefined);
    expect(syncError).toBeInstanceOf(TypeError);
    expect(String((syncError as Error | undefined)?.message)).toMatch(/fds\[1\]/);
    // A list with a length and no elements: refused at its first index, not walked.
    const huge: number[] = [];
    huge.length = 2 ** 31 - 1;
    expect(() => conn.dupFileDescriptors(huge)).toThrow(/fds\[0\]/);
  } finally {
    await conn.close();
  }
  expect(openFdTable()).toEqual(before);
});

/** Not an fd number: what the check must refuse wherever it sits in a list. */
const refused = fc.constantFrom<unknown>(-1, -0x80000000, 0.5, Number.NaN, Infinity, -Infinity, '3', null, undefined, 3n, {}, [3]);

test.each(['direct', 'child'] as const)(
  'a list refused at its first bad entry, at once, whatever its length and wherever that entry sits (%s)',
  async (transport) => {
    const before = openFdTable();
    const conn = await connect(transport, { command: PROBE_COMMAND });
    try {
      fc.assert(
        fc.property(
          fc.nat(600),
          fc.oneof(refused.map((bad) => ({ bad })), fc.constant('hole' as const)),
          fc.oneof(fc.nat(300), fc.constant(2 ** 32 - 1 - 601)),
          (at, what, after) => {
            // `at` entries that pass the check (numbers, open or not: nothing may be sent), then the bad one, then more.
            const list: unknown[] = Array.from({ length: at }, (_, i) => [0, 1, 2, 0x7fffffff][i % 4]);
            list.length = at + 1 + after;
            if (what !== 'hole') list[at] = what.bad;
            let error: unknown;
            try {
              void conn.dupFileDescriptors(list as number[]);
            } catch (e) {
              error = e;
            }
            expect(error).toBeInstanceOf(TypeError);
            expect((error as Error).message).toBe(`fds[${at}] must be a non-negative integer, not ${String(what === 'hole' ? undefined : what.bad)}`);
          },
        ),
        { numRuns: 150 },
      );
    } finally {
      await conn.close();
    }
    expect(openFdTable()).toEqual(before);
  },
);
