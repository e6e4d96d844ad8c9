/**
 * ERROR and REFUSED frames are encoded whatever they say: never past
 * MAX_FRAME_BYTES, a text that would not fit cut where it must and saying
 * how much was cut, the error's name and code (which pick the caller's
 * typed error) kept; and any thrown value is described without throwing.
 */
import fc from 'fast-check';

import { describeError, FdBridgeError, isError, QuotaExceededError, stackOf, type RemoteErrorInfo } from '../../src/errors';
import { decodeFrame, encodeError, encodeJson, encodeRefused, FrameType, HEADER_BYTES, MAX_FRAME_BYTES } from '../../src/protocol';

/** Code units JSON escapes or UTF-8 widens: 2, 6 and 3 bytes, a pair's 4, a lone surrogate's 6. */
const UNITS = ['"', '\\', '\x01', '\n', '\u001f', '\u2028', 'é', '😀', '\ud800', '\udc00', 'a'];
const unit = fc.array(fc.constantFrom(...UNITS), { minLength: 1, maxLength: 3 }).map((a) => a.join(''));
/** A text of a generated length (code units): short, around one frame, far past it. */
const text = fc
  .tuple(unit, fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 30_000, max: 200_000 }), fc.integer({ min: 200_000, max: 1_500_000 })))
  .map(([u, n]) => u.repeat(Math.ceil(n / u.length)));
const short = fc.string({ maxLength: 30 });

const CUT = /^([\s\S]*)… \(cut: (\d+) more characters\)$/;

/** `got` is `whole`, or its start with the note saying how many code units were left off (never half a surrogate pair). */
function isWholeOrCut(got: string, whole: string): boolean {
  if (got === whole) return true;
  const m = CUT.exec(got);
  if (m === null) return false;
  const kept = m[1] as string;
  const splitPair = /[\ud800-\udbff]$/.test(kept) && /^[\udc00-\udfff]/.test(whole.slice(kept.length));
  return whole.startsWith(kept) && kept.length + Number(m[2]) === whole.length && !splitPair;
}

const jsonBytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value));

describe('ERROR frames fit one frame whatever they say', () => {
  test('generated errors: at most MAX_FRAME_BYTES, decodable, name and code kept, message (then stack) cut only when the whole would not fit', () => {
    fc.assert(
      fc.property(
        fc.record({ name: fc.oneof(short, text), message: text, code: fc.option(fc.oneof(short, text), { nil: undefined }), syscall: fc.option(short, { nil: undefined }), stack: fc.option(text, { nil: undefined }) }),
        fc.nat(0xffffffff),
        (given, id) => {
          const info: RemoteErrorInfo = { name: given.name, message: given.message };
          if (given.code !== undefined) info.code = given.code;
          if (given.syscall !== undefined) info.syscall = given.syscall;
          if (given.stack !== undefined) info.stack = given.stack;
          const frame = encodeError(id, info);
          expect(frame.length).toBeLessThanOrEqual(MAX_FRAME_BYTES);
          const decoded = decodeFrame(frame, []);
          if (decoded.type !== FrameType.ERROR) throw new Error(`decoded as type ${decoded.type}`);
          expect(decoded.id).toBe(id);
          const got = decoded.error;
          // A name or code of a real error's length is kept as it is.
          if (jsonBytes(info.name) <= 1024) expect(got.name).toBe(info.name);
          if (info.code !== undefined && jsonBytes(info.code) <= 1024) expect(got.code).toBe(info.code);
          expect(got.syscall).toBe(info.syscall);
          expect({ name: isWholeOrCut(got.name, info.name), message: isWholeOrCut(got.message, info.message) }).toEqual({ name: true, message: true });
          if (got.stack !== undefined) expect(isWholeOrCut(got.stack, info.stack as string)).toBe(true);
          // What fits goes whole: the frame JSON.stringify makes of it.
          if (HEADER_BYTES + jsonBytes(info) <= MAX_FRAME_BYTES) expect(frame.equals(encodeJson(FrameType.ERROR, id, info))).toBe(true);
          // The message is cut only with the stack gone.
          if (got.message !== info.message) expect(got.stack).toBeUndefined();
        },
      ),
      { numRuns: 150 },
    );
  });

  test('generated REFUSED messages: at most MAX_FRAME_BYTES, the message whole or cut, a quota named at its start kept', () => {
    fc.assert(
      fc.property(fc.option(fc.constantFrom('quota connections: ', 'quota uidConnections: '), { nil: '' }), text, (prefix, rest) => {
        const message = prefix + rest;
        const frame = encodeRefused(message);
        expect(frame.length).toBeLessThanOrEqual(MAX_FRAME_BYTES);
        const decoded = decodeFrame(frame, []);
        if (decoded.type !== FrameType.REFUSED) throw new Error(`decoded as type ${decoded.type}`);
        expect(isWholeOrCut(decoded.message, message)).toBe(true);
        expect(decoded.message.startsWith(prefix)).toBe(true);
        if (HEADER_BYTES + jsonBytes({ message }) <= MAX_FRAME_BYTES) expect(frame.equals(encodeJson(FrameType.REFUSED, 0, { message }))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});

/** A Proxy handler every trap of which throws. */
const throwingTraps = new Proxy(
  {},
  {
    get: () => () => {
      throw new Error('trap');
    },
  },
);
const throwingGetter = (what: string): PropertyDescriptor => ({
  get() {
    throw new Error(`${what} getter`);
  },
});

/** Thrown values of odd shapes, and the name describeError must give each. */
const ODD: ReadonlyArray<[string, () => unknown, string]> = [
  ['null', () => null, 'Error'],
  ['undefined', () => undefined, 'Error'],
  ['a symbol', () => Symbol('s'), 'Error'],
  ['an object whose toString throws', () => ({ toString: () => { throw new Error('toString'); } }), 'Error'],
  ['an object whose toString returns an object', () => ({ toString: () => ({}), valueOf: () => ({}) }), 'Error'],
  ['a Proxy whose traps throw', () => new Proxy({}, throwingTraps), 'Error'],
  ['a Proxy of an Error whose traps throw', () => new Proxy(new TypeError('t'), throwingTraps), 'Error'],
  ['a revoked Proxy', () => { const p = Proxy.revocable(new Error('r'), {}); p.revoke(); return p.proxy; }, 'Error'],
  ['an Error whose message getter throws', () => Object.defineProperty(new RangeError('m'), 'message', throwingGetter('message')), 'RangeError'],
  ['an Error whose name getter throws', () => Object.defineProperty(new RangeError('m'), 'name', throwingGetter('name')), 'Error'],
  ['an Error whose name is an object whose toString throws', () => Object.assign(new Error('m'), { name: { toString: () => { throw new Error('name'); } } }), 'Error'],
  ['an Error whose name is a number', () => Object.assign(new Error('m'), { name: 42 }), 'Error'],
  ['an Error whose message is an object', () => Object.assign(new SyntaxError('m'), { message: { a: 1 } }), 'SyntaxError'],
  ['an Error whose stack getter throws', () => Object.defineProperty(new TypeError('m'), 'stack', throwingGetter('stack')), 'TypeError'],
  ['an Error whose code getter throws', () => Object.defineProperty(new TypeError('m'), 'code', throwingGetter('code')), 'TypeError'],
  ['an fdbridge error', () => new QuotaExceededError('calls', 'too many'), 'QuotaExceededError'],
];

describe('any thrown value is described without throwing', () => {
  test.each(ODD)('%s: describeError (with and without the stack) and stackOf give strings; isError and instanceof do not throw', (_what, make, name) => {
    for (const stack of [true, false]) {
      const info = describeError(make(), { stack });
      expect(info.name).toBe(name);
      expect(typeof info.message).toBe('string');
      for (const key of ['code', 'syscall', 'stack'] as const) expect(['undefined', 'string']).toContain(typeof info[key]);
      expect(decodeFrame(encodeError(1, info), []).type).toBe(FrameType.ERROR);
    }
    expect(typeof stackOf(make())).toBe('string');
    expect(typeof isError(make())).toBe('boolean');
    expect(typeof (make() instanceof FdBridgeError)).toBe('boolean');
  });

  test('an Error whose message getter throws is described saying so', () => {
    const info = describeError(Object.defineProperty(new RangeError('m'), 'message', throwingGetter('message')));
    expect(info.message).toBe('(its message could not be read: reading it threw Error: message getter)');
  });
});
