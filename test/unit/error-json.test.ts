/**
 * How much of an error's text reaches the caller when it does not fit one
 * frame: cutToJsonBytes keeps as much of a text's start as fits beside its
 * note (never less), errorJson gives an error that fits, to the byte, whole,
 * and cuts the message, then the stack, only as far as it must; isCutOf
 * tells such a cut of a text from anything else (a READY's cut target from
 * the file now at its number); and a thrown value that cannot be read at
 * all is still described as what it is.
 */
import fc from 'fast-check';

import { cutToJsonBytes, describeError, errorJson, isCutOf, stackOf, type RemoteErrorInfo } from '../../src/errors';

/** Code units JSON escapes or UTF-8 widens (2, 6 and 3 bytes, a pair's 4, a lone surrogate's 6), and plain ones. */
const UNITS = ['"', '\\', '\b', '\t', '\n', '\f', '\r', '\x01', '\x1f', ' ', '~', '\x7f', '\x80', 'é', '\u07ff', '\u0800', '\u2028', '\ud7ff', '😀', '\ud800', '\udbff', '\udc00', '\udfff', '\ue000', '\uffff', 'a'];
const textOf = (maxLength: number): fc.Arbitrary<string> => fc.array(fc.constantFrom(...UNITS), { maxLength, size: 'max' }).map((a) => a.join(''));

// The generated tests end at their first failure, unshrunk (endOnFailure): shrinking texts of
// thousands of code units, each step formatting a diff of them, takes minutes.
const jsonBytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value));
const note = (left: number): string => `… (cut: ${left} more characters)`;
const CUT = /^([\s\S]*)… \(cut: (\d+) more characters\)$/;

/** The code units of the character at `at`: 2 for a surrogate pair, else 1. */
function charUnits(text: string, at: number): number {
  return /^[\ud800-\udbff][\udc00-\udfff]/.test(text.slice(at, at + 2)) ? 2 : 1;
}

/**
 * `got` as cutToJsonBytes(whole, max) must give it: whole if it fits;
 * else the longest start (never half a pair) that fits beside the note of
 * whole.length (the longest note it can have), with the note of what was
 * left off; '' only when that note alone does not fit.
 */
function expectCut(got: string, whole: string, max: number): void {
  if (jsonBytes(whole) <= max) {
    expect(got).toBe(whole);
    return;
  }
  if (jsonBytes(note(whole.length)) > max) {
    expect(got).toBe('');
    return;
  }
  expect(jsonBytes(got)).toBeLessThanOrEqual(max);
  const m = CUT.exec(got);
  expect(m).not.toBeNull();
  const kept = (m as RegExpExecArray)[1] as string;
  expect(whole.startsWith(kept)).toBe(true);
  expect(kept.length).toBeLessThan(whole.length);
  expect(Number((m as RegExpExecArray)[2])).toBe(whole.length - kept.length);
  // Not half a pair, and one more character would not have fit.
  expect(/[\ud800-\udbff]$/.test(kept) && /^[\udc00-\udfff]/.test(whole.slice(kept.length))).toBe(false);
  const more = whole.slice(0, kept.length + charUnits(whole, kept.length));
  expect(jsonBytes(more + note(whole.length))).toBeGreaterThan(max);
}

describe('cutToJsonBytes', () => {
  test('generated: whole when it fits, else the longest start that fits beside its note, never half a pair; empty only where the note alone does not fit', () => {
    fc.assert(
      fc.property(textOf(120), fc.integer({ min: -2, max: 40 }), fc.nat(700), fc.boolean(), (text, nearNote, anywhere, nearNoteCase) => {
        // Around the limits that matter (the note's own size) as well as anywhere.
        const max = nearNoteCase ? jsonBytes(note(text.length)) + nearNote : anywhere;
        expectCut(cutToJsonBytes(text, max), text, max);
      }),
      { numRuns: 2000, endOnFailure: true },
    );
  });

  test('generated: a text whose JSON takes exactly the limit is kept whole; one byte less and it is cut', () => {
    fc.assert(
      fc.property(textOf(200).filter((t) => t.length > 0), (text) => {
        const max = jsonBytes(text);
        expect(cutToJsonBytes(text, max)).toBe(text);
        expectCut(cutToJsonBytes(text, max - 1), text, max - 1);
      }),
      { numRuns: 500, endOnFailure: true },
    );
  });
});

describe('isCutOf', () => {
  /** A text that may hold notes of its own (a file's name may), inside it or at its end. */
  const noted = fc.array(fc.oneof(textOf(30), fc.nat(200).map(note)), { maxLength: 4 }).map((parts) => parts.join(''));

  test('generated: what cutToJsonBytes made of a text is a cut of it, and of no text that differs in length or in the start it kept', () => {
    fc.assert(
      fc.property(noted, fc.nat(400), fc.nat(), fc.constantFrom(...UNITS.filter((u) => u.length === 1)), (text, max, at, unit) => {
        expect(isCutOf(text, text)).toBe(true);
        const cut = cutToJsonBytes(text, max);
        if (cut === text || cut === '') return;
        expect(isCutOf(cut, text)).toBe(true);
        const kept = (CUT.exec(cut) as RegExpExecArray)[1] as string;
        expect(isCutOf(cut, `${text}${unit}`)).toBe(false);
        expect(isCutOf(cut, text.slice(0, -1))).toBe(false);
        // One code unit changed: in the start kept, no cut of it; past it, a cut of it all the same.
        const i = at % text.length;
        const other = unit === text[i] ? (unit === 'a' ? '~' : 'a') : unit;
        expect(isCutOf(cut, text.slice(0, i) + other + text.slice(i + 1))).toBe(i >= kept.length);
      }),
      { numRuns: 2000, endOnFailure: true },
    );
  });

  test('generated: a text with no note is a cut of itself only', () => {
    fc.assert(
      fc.property(textOf(60), textOf(60), (a, b) => {
        expect(isCutOf(a, b)).toBe(a === b);
        expect(isCutOf(a, a)).toBe(true);
      }),
      { numRuns: 500, endOnFailure: true },
    );
  });
});

/** RemoteErrorInfo with the optional fields given (undefined: left out). */
function infoOf(given: { name: string; message: string; code: string | undefined; syscall: string | undefined; stack: string | undefined }): RemoteErrorInfo {
  const info: RemoteErrorInfo = { name: given.name, message: given.message };
  if (given.code !== undefined) info.code = given.code;
  if (given.syscall !== undefined) info.syscall = given.syscall;
  if (given.stack !== undefined) info.stack = given.stack;
  return info;
}

const infoArb = fc
  .record({
    name: fc.oneof(textOf(8), textOf(400)),
    message: textOf(1500),
    code: fc.option(fc.oneof(textOf(8), textOf(400)), { nil: undefined }),
    syscall: fc.option(fc.oneof(textOf(8), textOf(400)), { nil: undefined }),
    stack: fc.option(textOf(1500), { nil: undefined }),
  })
  .map(infoOf);

describe('errorJson', () => {
  test('generated: an error whose JSON takes exactly the limit goes whole (every field as it is); a byte less and it is cut to fit', () => {
    fc.assert(
      fc.property(infoArb, (info) => {
        const max = jsonBytes(info);
        fc.pre(max > 4096);
        expect(errorJson(info, max)).toBe(JSON.stringify(info));
        const cut = errorJson(info, max - 1);
        expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(max - 1);
      }),
      { numRuns: 200, endOnFailure: true },
    );
  });

  test('generated: past the limit, name, code and syscall are cut to 1 KiB each, then the message, then the stack, each only as far as it must, the stack left out where not even its note fits', () => {
    fc.assert(
      fc.property(infoArb, fc.integer({ min: 4096, max: 9000 }), (info, max) => {
        const json = errorJson(info, max);
        expect(Buffer.byteLength(json)).toBeLessThanOrEqual(max);
        const got = JSON.parse(json) as RemoteErrorInfo;
        if (jsonBytes(info) <= max) {
          expect(json).toBe(JSON.stringify(info));
          return;
        }
        expect(Object.keys(got)).toEqual(Object.keys(info).filter((k) => k !== 'stack' || got.stack !== undefined));
        expectCut(got.name, info.name, 1024);
        if (info.code !== undefined) expectCut(got.code as string, info.code, 1024);
        if (info.syscall !== undefined) expectCut(got.syscall as string, info.syscall, 1024);
        // The message's room: all the limit leaves beside the short fields.
        const { stack: _stack, ...rest } = got;
        expectCut(got.message, info.message, max - jsonBytes({ ...rest, message: '' }) + 2);
        if (info.stack === undefined) return;
        if (got.message !== info.message || got.stack === undefined) {
          // Left out: it was cut to nothing, the note of its length not fitting after the rest.
          expect(got.stack).toBeUndefined();
          if (info.stack !== '') expect(jsonBytes({ ...rest, stack: note(info.stack.length) })).toBeGreaterThan(max);
          return;
        }
        expectCut(got.stack, info.stack, max - jsonBytes(rest) - Buffer.byteLength(',"stack":'));
      }),
      { numRuns: 300, endOnFailure: true },
    );
  });
});

describe('a thrown value that cannot be read', () => {
  test('a Proxy whose every trap throws is described as a value that cannot be shown (not as an error whose message could not be read)', () => {
    const proxy = new Proxy(
      {},
      {
        get: () => () => {
          throw new Error('trap');
        },
      },
    );
    const thrown = new Proxy({}, proxy);
    for (const stack of [true, false]) expect(describeError(thrown, { stack })).toEqual({ name: 'Error', message: '(a value of type object that cannot be shown)' });
  });
});

describe('an error whose message is no string', () => {
  test.each([
    ['an object', { a: 1 }, '[object Object]'],
    ['a number', 42, '42'],
    ['null', null, 'null'],
    ['an array', ['x', 'y'], 'x,y'],
    ['undefined (no message)', undefined, ''],
  ])('%s: the message the caller gets is its string form', (_what, message, shownAs) => {
    const info = describeError(Object.assign(new SyntaxError('m'), { message }));
    expect(info).toMatchObject({ name: 'SyntaxError', message: shownAs });
  });
});

describe('stackOf', () => {
  test('an error with a stack gives its stack; anything else, or a stack that is no string, its string form', () => {
    const err = new RangeError('out of range');
    expect(stackOf(err)).toBe(err.stack);
    expect(stackOf(Object.assign(new Error('m'), { stack: 5 }))).toBe('Error: m');
    expect(stackOf('boom')).toBe('boom');
    expect(stackOf(null)).toBe('null');
    expect(stackOf(undefined)).toBe('undefined');
  });
});

describe('describeError names only the fields an error has', () => {
  // The direct transport's RemoteError carries the description as it is made (the worker's, as structured
  // clone copies it): a key with undefined in it would pass for a field the error has ('code' in err.remote).
  test.each([
    ['no code, syscall or stack', () => Object.assign(new Error('e'), { stack: undefined }), { name: 'Error', message: 'e' }],
    ['a code that is no string', () => Object.assign(new TypeError('t'), { code: 5, stack: undefined }), { name: 'TypeError', message: 't' }],
    ['a code only', () => Object.assign(new Error('e'), { code: 'ERR_X', stack: undefined }), { name: 'Error', message: 'e', code: 'ERR_X' }],
    ['a syscall only', () => Object.assign(new Error('e'), { syscall: 'dup', stack: undefined }), { name: 'Error', message: 'e', syscall: 'dup' }],
  ])('%s', (_what, make, want) => {
    expect(describeError(make())).toStrictEqual(want);
    expect(describeError(make(), { stack: false })).toStrictEqual(want);
  });
});
