/**
 * The argument checks every public call makes before it does anything
 * (src/validate.ts), as a caller relies on them: a value of the wrong type
 * is a TypeError with code ERR_INVALID_ARG_TYPE, a number that is not an
 * integer in range a RangeError with code ERR_OUT_OF_RANGE, each naming the
 * argument, what it must be and the bad value as it reads in a message; a
 * good value comes back as it was. Generated values of every JavaScript
 * kind, and numbers at and around the bounds. Pure functions: no fd is
 * opened here.
 */
import fc from 'fast-check';

import { describeValue, invalidType, validateFdArgument, validateInteger } from '../../src/validate';

const RUNS = { seed: 20261203, numRuns: 300 };

/** A value of one kind, and how a message must show it. */
const described: fc.Arbitrary<{ value: unknown; reads: string }> = fc.oneof(
  fc.string().map((s) => ({ value: s, reads: JSON.stringify(s) })),
  fc.bigInt().map((n) => ({ value: n, reads: `${n}n` })),
  fc.array(fc.anything(), { maxLength: 3 }).map((a) => ({ value: a, reads: 'an array' })),
  fc.constantFrom<unknown>(() => 1, function named() {}, class Shape {}, async () => undefined, Math.max).map((f) => ({ value: f, reads: 'a function' })),
  fc.string().map((s) => ({ value: Symbol(s), reads: 'a symbol' })),
  fc
    .oneof(
      fc.object(),
      fc.constantFrom<object>(Object.create(null) as object, new Date(0), new Map(), /x/, new Error('e'), new Uint8Array(2), Object(1) as object),
      // Its own toString is no function, or throws: the message must not call it.
      fc.anything().map((v) => ({ toString: v })),
      fc.constant({
        toString(): string {
          throw new Error('toString called');
        },
      }),
    )
    .map((o) => ({ value: o, reads: 'an object' })),
  fc.constantFrom(null, undefined, true, false).map((v) => ({ value: v, reads: String(v) })),
  fc.double().map((n) => ({ value: n, reads: String(n) })),
);

/** A range of integers, small or at the ends of the safe integers. */
const ranges: fc.Arbitrary<[number, number]> = fc
  .tuple(fc.oneof(fc.integer({ min: -1000, max: 1000 }), fc.maxSafeInteger().map((n) => -n), fc.constant(0)), fc.oneof(fc.nat(1000), fc.constant(2 ** 31 - 1)))
  .map(([min, span]) => [min, Math.min(min + span, Number.MAX_SAFE_INTEGER)]);

/** A number at, inside, just outside or far outside [min, max], or not an integer at all. */
function numbersAround(min: number, max: number): fc.Arbitrary<number> {
  return fc.oneof(
    fc.constantFrom(min, max, min - 1, max + 1, min + 0.5, max - 0.5, NaN, Infinity, -Infinity, -0),
    fc.integer({ min: Math.max(min - 3, Number.MIN_SAFE_INTEGER), max: Math.min(max + 3, Number.MAX_SAFE_INTEGER) }),
    fc.double(),
  );
}

/** What `fn` threw (fails the test if it returned). */
function thrown(fn: () => unknown): Error {
  let caught: unknown;
  try {
    const value = fn();
    caught = new Error(`returned ${String(value)}`);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(Error);
  return caught as Error;
}

test('describeValue: a string quoted, a bigint with its n, and arrays, functions, symbols and objects by their kind; the rest as String() reads it', () => {
  fc.assert(
    fc.property(described, ({ value, reads }) => {
      expect(describeValue(value)).toBe(reads);
    }),
    RUNS,
  );
});

test('invalidType: a TypeError (ERR_INVALID_ARG_TYPE) that names the argument, what it must be, and the value', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), described, (name, expected, { value, reads }) => {
      const err = invalidType(name, expected, value);
      expect(err).toBeInstanceOf(TypeError);
      expect({ message: err.message, code: (err as { code?: unknown }).code }).toEqual({
        message: `${name} must be ${expected}, not ${reads}`,
        code: 'ERR_INVALID_ARG_TYPE',
      });
    }),
    RUNS,
  );
});

test('validateInteger: an integer from min to max comes back as it is; another number is a RangeError, anything else a TypeError, each naming the argument', () => {
  fc.assert(
    fc.property(
      fc.string(),
      ranges.chain(([min, max]) => fc.tuple(fc.constant(min), fc.constant(max), numbersAround(min, max))),
      (name, [min, max, value]) => {
        if (Number.isInteger(value) && value >= min && value <= max) {
          expect(validateInteger(value, name, min, max)).toBe(value);
          return;
        }
        const err = thrown(() => validateInteger(value, name, min, max));
        expect(err).toBeInstanceOf(RangeError);
        expect({ message: err.message, code: (err as { code?: unknown }).code }).toEqual({
          message: `${name} must be an integer from ${min} to ${max}, not ${value}`,
          code: 'ERR_OUT_OF_RANGE',
        });
      },
    ),
    RUNS,
  );
  fc.assert(
    fc.property(
      fc.string(),
      ranges,
      described.filter((d) => typeof d.value !== 'number'),
      (name, [min, max], { value, reads }) => {
        const err = thrown(() => validateInteger(value, name, min, max));
        expect(err).toBeInstanceOf(TypeError);
        expect({ message: err.message, code: (err as { code?: unknown }).code }).toEqual({
          message: `${name} must be an integer from ${min} to ${max}, not ${reads}`,
          code: 'ERR_INVALID_ARG_TYPE',
        });
      },
    ),
    RUNS,
  );
});

test('validateFdArgument: an fd number is an integer from 0 to 2^31 - 1', () => {
  for (const fd of [0, 1, 2 ** 31 - 1]) expect(validateFdArgument(fd, 'fd')).toBe(fd);
  for (const fd of [-1, 2 ** 31, 2 ** 32, 0.5, NaN]) {
    const err = thrown(() => validateFdArgument(fd, 'dup: fd'));
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toBe(`dup: fd must be an integer from 0 to 2147483647, not ${fd}`);
  }
  expect(thrown(() => validateFdArgument('3', 'dup: fd'))).toBeInstanceOf(TypeError);
});
