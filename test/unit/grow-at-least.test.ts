/**
 * growAtLeast when another thread grows the buffer between this thread's
 * look at its length and its own grow: the other grow is staged in the
 * buffer's `grow` (the first call grows it by another amount, as that
 * thread would have, and throws the RangeError SharedArrayBuffer.grow gives
 * for a length below the current one). Generated sizes: whatever the other
 * thread grew it to, growAtLeast returns once the buffer holds the bytes
 * asked for (at most its maxByteLength) and throws only for a failure that
 * is not a race.
 */
import fc from 'fast-check';

import { growAtLeast } from '../../src/transports/shared-ledger';

const MAX = 1 << 16;

/** A buffer of `start` bytes whose first grow is overtaken by another thread's grow to `other`. */
function racedBuffer(start: number, other: number): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(start, { maxByteLength: MAX });
  const grow = buffer.grow.bind(buffer);
  let raced = false;
  Object.defineProperty(buffer, 'grow', {
    value: (to: number): void => {
      if (!raced) {
        raced = true;
        grow(other);
        if (to < other) throw new RangeError('SharedArrayBuffer.prototype.grow: Invalid length parameter');
      }
      grow(to);
    },
  });
  return buffer;
}

describe('growAtLeast', () => {
  test('another thread growing the buffer meanwhile, to any size, is no failure', () => {
    fc.assert(
      fc.property(fc.integer({ min: 4, max: MAX / 4 }), fc.integer({ min: 1, max: MAX }), fc.integer({ min: 0, max: MAX }), (start, wanted, grownBy) => {
        const other = Math.min(MAX, start + grownBy);
        const buffer = racedBuffer(start, other);
        growAtLeast(buffer, wanted);
        expect(buffer.byteLength).toBeGreaterThanOrEqual(Math.min(MAX, wanted));
      }),
      { numRuns: 500 },
    );
  });

  test('a grow that fails without a race is thrown', () => {
    const buffer = new SharedArrayBuffer(8, { maxByteLength: MAX });
    Object.defineProperty(buffer, 'grow', {
      value: (): void => {
        throw new RangeError('Array buffer allocation failed');
      },
    });
    expect(() => growAtLeast(buffer, 64)).toThrow('Array buffer allocation failed');
    expect(buffer.byteLength).toBe(8);
  });
});
