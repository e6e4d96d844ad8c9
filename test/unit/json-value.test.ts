/**
 * A call's arguments and result as JSON (src/json-value.ts), what every
 * transport sends: the encoders give exactly the JSON of `{ method, args }`
 * and `{ value }` (a value JSON leaves out travels as `{}`), the decoders
 * give back what JSON carries, and the size limit is counted in UTF-8 bytes
 * to the byte: at MAX_CALL_JSON_BYTES the JSON is made, one byte past it is
 * a RangeError (code ERR_FDBRIDGE_CALL_TOO_LARGE) that names the call, its
 * size and the limit. Sizes are generated at and around the limit from
 * characters whose JSON is 1 to 6 bytes; test/attack/call-size.test.ts
 * checks the same limit through every transport. Pure functions: no fd is
 * opened here.
 */
import fc from 'fast-check';

import { argsFromJson, CALL_TOO_LARGE, callToJson, MAX_CALL_JSON_BYTES, resultFromJson, resultToJson, valueToJson } from '../../src/json-value';

const RUNS = { seed: 20261203, numRuns: 100 };

/** One frame's payload: a 192 KiB frame less its 8-byte header. */
const LIMIT = 192 * 1024 - 8;

const bytesOf = (json: string): number => Buffer.byteLength(json);

/** Values as JSON gives them back (no -0, no undefined in objects). */
const jsonValues = fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown);

/** Characters whose JSON inside a string is 1 ('x'), 2 ('"', '\n', 'é'), 3 ('€', one UTF-16 unit), 4 ('😀', two units) or 6 ('\u0001') bytes. */
const UNITS = ['x', '"', '\n', 'é', '€', '😀', '\u0001'];

/**
 * A string of `unit`s, topped up with 'x', whose JSON inside `wrap` (the JSON around an empty string) is exactly `target` bytes.
 */
function stringOfBytes(unit: string, wrap: (s: string) => string, target: number): string {
  const per = bytesOf(JSON.stringify(unit)) - 2;
  const room = target - bytesOf(wrap(''));
  const s = unit.repeat(Math.floor(room / per)) + 'x'.repeat(room % per);
  expect(bytesOf(wrap(s))).toBe(target);
  return s;
}

const asArgs = (s: string): string => JSON.stringify({ method: 'echo', args: [s] });
const asResult = (s: string): string => JSON.stringify({ value: s });

/** The RangeError `fn` must throw for JSON of `bytes` bytes: its code and message. */
function tooLarge(fn: () => unknown): { code: unknown; message: string } {
  let caught: unknown;
  try {
    caught = new Error(`returned ${String(fn())}`);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(RangeError);
  return { code: (caught as { code?: unknown }).code, message: (caught as Error).message };
}

test('the limit is one frame’s payload, and its error code is stable', () => {
  expect(MAX_CALL_JSON_BYTES).toBe(LIMIT);
  expect(CALL_TOO_LARGE).toBe('ERR_FDBRIDGE_CALL_TOO_LARGE');
});

test('a call is the JSON of { method, args }, and its arguments come back as JSON carries them', () => {
  fc.assert(
    fc.property(fc.string(), fc.array(jsonValues, { maxLength: 6 }), (method, args) => {
      const json = callToJson(method, args);
      expect(json).toBe(JSON.stringify({ method, args }));
      expect(argsFromJson(json)).toEqual(args);
    }),
    RUNS,
  );
});

test('a result is the JSON of { value }, {} for a value JSON leaves out, and comes back as JSON carries it', () => {
  fc.assert(
    fc.property(jsonValues, (value) => {
      expect(valueToJson(value)).toBe(JSON.stringify(value));
      const json = resultToJson(value);
      expect(json).toBe(JSON.stringify({ value }));
      expect(resultFromJson(json)).toEqual(value);
    }),
    RUNS,
  );
  for (const left of [undefined, () => 1, Symbol('s')]) {
    expect(valueToJson(left)).toBeUndefined();
    expect(resultToJson(left)).toBe('{}');
  }
  expect(resultFromJson('{}')).toBeUndefined();
  // What JSON.stringify throws, nothing made: a BigInt, a cycle.
  const cycle: { self?: unknown } = {};
  cycle.self = cycle;
  for (const bad of [1n, cycle]) {
    expect(() => callToJson('m', [bad])).toThrow(TypeError);
    expect(() => resultToJson(bad)).toThrow(TypeError);
  }
});

describe('the size limit, counted in UTF-8 bytes of the JSON', () => {
  /** Every unit at -3..+3 bytes of the limit, and generated mixes further out. */
  const cases: Array<[string, number]> = UNITS.flatMap((unit) => [-3, -2, -1, 0, 1, 2, 3].map((delta): [string, number] => [unit, delta]));
  const generated = fc.tuple(
    fc.array(fc.constantFrom(...UNITS), { minLength: 1, maxLength: 4 }).map((u) => u.join('')),
    fc.integer({ min: -24, max: 24 }),
  );

  function checkArgs(unit: string, delta: number): void {
    const s = stringOfBytes(unit, asArgs, LIMIT + delta);
    if (delta <= 0) {
      expect(callToJson('echo', [s])).toBe(asArgs(s));
      return;
    }
    expect(tooLarge(() => callToJson('echo', [s]))).toEqual({
      code: CALL_TOO_LARGE,
      message:
        `echo(): its arguments are ${LIMIT + delta} bytes of JSON ({ method, args }), more than a call carries ` +
        `(MAX_CALL_JSON_BYTES, ${LIMIT} bytes, on every transport); nothing was sent`,
    });
  }

  function checkResult(unit: string, delta: number): void {
    const s = stringOfBytes(unit, asResult, LIMIT + delta);
    if (delta <= 0) {
      expect(valueToJson(s)).toBe(JSON.stringify(s));
      expect(resultToJson(s)).toBe(asResult(s));
      return;
    }
    const expected = {
      code: CALL_TOO_LARGE,
      message:
        `the result is ${LIMIT + delta} bytes of JSON ({ value }), more than a call's result carries ` +
        `(MAX_CALL_JSON_BYTES, ${LIMIT} bytes, on every transport)`,
    };
    expect(tooLarge(() => valueToJson(s))).toEqual(expected);
    expect(tooLarge(() => resultToJson(s))).toEqual(expected);
  }

  test.each(cases)('arguments of %j at the limit plus %d bytes', checkArgs);
  test.each(cases)('a result of %j at the limit plus %d bytes', checkResult);

  test('generated mixes of characters around the limit', () => {
    fc.assert(
      fc.property(generated, fc.boolean(), ([unit, delta], result) => (result ? checkResult(unit, delta) : checkArgs(unit, delta))),
      { ...RUNS, numRuns: 40 },
    );
  });
});
