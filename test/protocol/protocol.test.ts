/**
 * The wire format, as a peer on the other end of the socket relies on it:
 * every frame the encoders make decodes to what was encoded (generated over
 * ids, fd lists and JSON values), the header is exactly type/0/0/id, and
 * everything that is not a well-formed frame is a ProtocolError naming what
 * is wrong, never a crash, a wrong frame, or a frame with fds it must not carry.
 * Pure functions: no fd is opened here.
 */
import fc from 'fast-check';

import { cutToJsonBytes, isCutOf, ProtocolError } from '../../src/errors';
import {
  decodeFrame,
  encodeCall,
  encodeDup,
  encodeEmpty,
  encodeFdList,
  encodeGetfd,
  encodeJson,
  encodeReady,
  encodeResult,
  FrameType,
  HEADER_BYTES,
  MAX_FRAME_BYTES,
  PIN_BYTES,
  READY_TARGET_BYTES,
  readyJson,
  readyPayload,
  type Frame,
  type FrameTypeValue,
} from '../../src/protocol';

const SEED = Number(process.env['FDBRIDGE_FUZZ_SEED'] ?? 17);
const RUNS = { seed: SEED, numRuns: 200 };

/** A raw frame: header fields as given, then the payload. */
function raw(type: number, id: number, payload: Buffer | string = Buffer.alloc(0), flags = 0, reserved = 0): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const buf = Buffer.alloc(HEADER_BYTES + body.length);
  buf[0] = type;
  buf[1] = flags;
  buf.writeUInt16LE(reserved, 2);
  buf.writeUInt32LE(id >>> 0, 4);
  body.copy(buf, HEADER_BYTES);
  return buf;
}

/** The ProtocolError `decode` throws (fails the test if it returns or throws anything else). */
function protocolErrorOf(decode: () => unknown): ProtocolError {
  let caught: unknown;
  try {
    caught = new Error(`decoded ${JSON.stringify(decode())}`);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect((caught as ProtocolError).code).toBe('ERR_FDBRIDGE_PROTOCOL');
  return caught as ProtocolError;
}

/** The ProtocolError decodeFrame throws for `data`. */
function rejection(data: Buffer, fds: readonly number[] = []): ProtocolError {
  return protocolErrorOf(() => decodeFrame(data, fds));
}

const ids = fc.integer({ min: 0, max: 0xffffffff });
const fdNumbers = fc.integer({ min: 0, max: 0x7fffffff });
const fdLists = fc.array(fdNumbers, { minLength: 1, maxLength: 253 });
const jsonValues = fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown);
const fdListTypes = fc.constantFrom(FrameType.DUP_OK, FrameType.RELEASE);
const u64s = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const pinLists = fc.array(fc.record({ fd: fdNumbers, dev: u64s, ino: u64s }), { minLength: 1, maxLength: 253 });

/** A well-formed frame of any type as a peer sends it: its bytes, the fds beside it, and what it decodes to. */
interface Sent {
  data: Buffer;
  fds: number[];
  frame: Frame;
}
const sent = (data: Buffer, frame: Frame, fds: number[] = []): Sent => ({ data, fds, frame });
const commands = fc.record(
  { name: fc.string(), module: fc.string(), export: fc.string(), args: fc.array(jsonValues, { maxLength: 3 }) },
  { requiredKeys: ['module'] },
);
const errorInfos = fc.record({ name: fc.string(), message: fc.string(), code: fc.string(), syscall: fc.string(), stack: fc.string() }, { requiredKeys: ['name', 'message'] });
const sentFrames: fc.Arbitrary<Sent> = fc.oneof(
  fc.tuple(fdListTypes, ids, fc.array(fdNumbers, { minLength: 1, maxLength: 40 })).map(([type, id, fds]) => sent(encodeFdList(type, id, fds), { type, id, fds })),
  fc.tuple(ids, pinLists.filter((p) => p.length <= 40)).map(([id, pins]) => {
    const fds = pins.map((p) => p.fd);
    const files = pins.map(({ dev, ino }) => ({ dev, ino }));
    return sent(encodeGetfd(id, fds, files), { type: FrameType.GETFD, id, fds, files });
  }),
  fc.tuple(ids, fc.array(fdNumbers, { minLength: 1, maxLength: 5 })).map(([id, fds]) => sent(encodeDup(id), { type: FrameType.DUP, id, fds }, fds)),
  fc.tuple(ids, fc.string(), fc.array(jsonValues, { maxLength: 3 })).map(([id, method, args]) => sent(encodeCall(id, method, args), { type: FrameType.CALL, id, method, args })),
  fc.tuple(ids, jsonValues).map(([id, value]) => sent(encodeResult(id, value), { type: FrameType.RESULT, id, value })),
  fc.tuple(ids, fc.nat(), commands, fc.option(fc.nat({ max: 0x7fffffff }), { nil: undefined })).map(([id, version, command, probeFd]) => {
    const hello = probeFd === undefined ? { version, command } : { version, command, pull: 'pidfd' as const, probeFd };
    return sent(encodeJson(FrameType.HELLO, id, hello), { type: FrameType.HELLO, id, hello });
  }),
  fc.tuple(ids, fc.nat(), fc.nat()).map(([id, pid, threadId]) => sent(encodeJson(FrameType.READY, id, { pid, threadId }), { type: FrameType.READY, id, ready: { pid, threadId } })),
  fc.tuple(ids, fc.nat(), fc.nat(), fc.array(fc.record({ fd: fc.nat(), target: fc.string() }), { maxLength: 4 })).map(([id, pid, threadId, constructorFds]) =>
    sent(encodeReady(id, { pid, threadId, constructorFds }), { type: FrameType.READY, id, ready: { pid, threadId, constructorFds } }),
  ),
  fc.tuple(ids, fc.string()).map(([id, message]) => sent(encodeJson(FrameType.REFUSED, id, { message }), { type: FrameType.REFUSED, id, message })),
  fc.tuple(ids, errorInfos).map(([id, error]) => sent(encodeJson(FrameType.ERROR, id, error), { type: FrameType.ERROR, id, error })),
  fc.tuple(fc.constantFrom(FrameType.CLOSE, FrameType.CLOSED), ids).map(([type, id]) => sent(encodeEmpty(type, id), { type, id })),
);

describe('round trips', () => {
  test('fd-list frames (DUP_OK, RELEASE) carry 1..253 fd numbers in order', () => {
    fc.assert(
      fc.property(fdListTypes, ids, fdLists, (type, id, fds) => {
        expect(decodeFrame(encodeFdList(type, id, fds), [])).toEqual({ type, id, fds });
      }),
      RUNS,
    );
  });

  test('GETFD carries 1..253 pins in order: each fd number and the device and inode of its file', () => {
    fc.assert(
      fc.property(ids, pinLists, (id, pins) => {
        const fds = pins.map((p) => p.fd);
        const files = pins.map(({ dev, ino }) => ({ dev, ino }));
        const data = encodeGetfd(id, fds, files);
        expect(data.length).toBe(HEADER_BYTES + PIN_BYTES * pins.length);
        expect(decodeFrame(data, [])).toEqual({ type: FrameType.GETFD, id, fds, files });
      }),
      RUNS,
    );
  });

  test('a GETFD names one file for each fd', () => {
    fc.assert(
      fc.property(ids, pinLists, fc.integer({ min: -1, max: 1 }).filter((d) => d !== 0), (id, pins, off) => {
        const fds = pins.map((p) => p.fd);
        const files = pins.map(({ dev, ino }) => ({ dev, ino })).slice(0, Math.max(0, pins.length + off));
        if (files.length === fds.length) files.push({ dev: 0n, ino: 0n });
        expect(() => encodeGetfd(id, fds, files)).toThrow(new RangeError(`a GETFD names a file for each fd: ${fds.length} fd(s), ${files.length} file(s)`));
      }),
      RUNS,
    );
  });

  test('CALL carries a method name and any JSON arguments', () => {
    fc.assert(
      fc.property(ids, fc.string(), fc.array(jsonValues, { maxLength: 5 }), (id, method, args) => {
        expect(decodeFrame(encodeCall(id, method, args), [])).toEqual({ type: FrameType.CALL, id, method, args });
      }),
      RUNS,
    );
  });

  test('RESULT carries any JSON value, and undefined as no value at all', () => {
    fc.assert(
      fc.property(ids, jsonValues, (id, value) => {
        expect(decodeFrame(encodeResult(id, value), [])).toEqual({ type: FrameType.RESULT, id, value });
      }),
      RUNS,
    );
    const none = encodeResult(3, undefined);
    expect(none.toString('utf8', HEADER_BYTES)).toBe('{}');
    const frame = decodeFrame(none, []);
    expect(frame).toEqual({ type: FrameType.RESULT, id: 3, value: undefined });
    expect(decodeFrame(encodeResult(3, null), [])).toEqual({ type: FrameType.RESULT, id: 3, value: null });
  });

  test('DUP has no payload; the fds that came with it are the frame\'s, copied', () => {
    fc.assert(
      fc.property(ids, fdLists, (id, fds) => {
        const data = encodeDup(id);
        expect(data.length).toBe(HEADER_BYTES);
        const frame = decodeFrame(data, fds);
        expect(frame).toEqual({ type: FrameType.DUP, id, fds });
        expect((frame as { fds: number[] }).fds).not.toBe(fds);
      }),
      RUNS,
    );
  });

  test('CLOSE and CLOSED are a bare header', () => {
    for (const type of [FrameType.CLOSE, FrameType.CLOSED] as const) {
      const data = encodeEmpty(type, 42);
      expect(data.length).toBe(HEADER_BYTES);
      expect(decodeFrame(data, [])).toEqual({ type, id: 42 });
    }
  });

  test('HELLO, READY, REFUSED and ERROR keep exactly their fields', () => {
    const command = { module: '/abs/command.js', export: 'Probe', args: [1, 'two', { three: [3] }] };
    expect(decodeFrame(encodeJson(FrameType.HELLO, 1, { version: 1, command }), [])).toEqual({
      type: FrameType.HELLO,
      id: 1,
      hello: { version: 1, command },
    });
    const bare = decodeFrame(encodeJson(FrameType.HELLO, 1, { version: 2, command: { module: 'm' } }), []);
    expect(bare).toEqual({ type: FrameType.HELLO, id: 1, hello: { version: 2, command: { module: 'm' } } });
    expect(Object.keys((bare as { hello: object }).hello)).toEqual(['version', 'command']);
    expect(Object.keys((bare as { hello: { command: object } }).hello.command)).toEqual(['module']);
    for (const probeFd of [0, 7, 0x7fffffff]) {
      expect(decodeFrame(encodeJson(FrameType.HELLO, 1, { version: 1, command, pull: 'pidfd', probeFd }), [])).toEqual({
        type: FrameType.HELLO,
        id: 1,
        hello: { version: 1, command, pull: 'pidfd', probeFd },
      });
    }
    expect(decodeFrame(encodeJson(FrameType.READY, 9, { pid: 123, threadId: 0, extra: true }), [])).toEqual({
      type: FrameType.READY,
      id: 9,
      ready: { pid: 123, threadId: 0 },
    });
    expect(decodeFrame(encodeJson(FrameType.REFUSED, 0, { message: 'no' }), [])).toEqual({ type: FrameType.REFUSED, id: 0, message: 'no' });
    expect(decodeFrame(encodeJson(FrameType.ERROR, 5, { name: 'SystemError', message: 'bad', code: 'EMFILE', syscall: 'pidfd_getfd', stack: 'at x' }), [])).toEqual({
      type: FrameType.ERROR,
      id: 5,
      error: { name: 'SystemError', message: 'bad', code: 'EMFILE', syscall: 'pidfd_getfd', stack: 'at x' },
    });
    // code, syscall and stack are kept only when they are strings.
    const plain = decodeFrame(encodeJson(FrameType.ERROR, 5, { name: 'Error', message: 'm', code: 7, syscall: 1, stack: null }), []);
    expect(plain).toEqual({ type: FrameType.ERROR, id: 5, error: { name: 'Error', message: 'm' } });
    expect(Object.keys((plain as { error: object }).error)).toEqual(['name', 'message']);
  });
});

describe('every frame type, generated', () => {
  test('decodes to what was encoded, with the fds that came with it', () => {
    fc.assert(
      fc.property(sentFrames, ({ data, fds, frame }) => {
        expect(decodeFrame(data, fds)).toEqual(frame);
      }),
      RUNS,
    );
  });

  test('cut short anywhere, it is refused; an fd list cut at a whole fd (a GETFD at a whole pin) is its first fds', () => {
    fc.assert(
      fc.property(sentFrames, ({ data, fds, frame }) => {
        for (let cut = 0; cut < data.length; cut++) {
          const part = data.subarray(0, cut);
          const whole = (cut - HEADER_BYTES) / (frame.type === FrameType.GETFD ? PIN_BYTES : 4);
          if (frame.type === FrameType.GETFD && cut > HEADER_BYTES && Number.isInteger(whole)) {
            expect(decodeFrame(part, fds)).toEqual({ ...frame, fds: frame.fds.slice(0, whole), files: frame.files.slice(0, whole) });
          } else if ('fds' in frame && frame.type !== FrameType.DUP && cut > HEADER_BYTES && Number.isInteger(whole)) {
            expect(decodeFrame(part, fds)).toEqual({ ...frame, fds: frame.fds.slice(0, whole) });
          } else {
            rejection(part, fds);
          }
        }
      }),
      { ...RUNS, numRuns: 100 },
    );
  });

  test('one of its flags or reserved bytes set, it is refused, naming its type', () => {
    fc.assert(
      fc.property(sentFrames, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 255 }), ({ data, fds }, at, byte) => {
        const bad = Buffer.from(data);
        bad[at] = byte;
        expect(rejection(bad, fds).message).toBe(`malformed frame: non-zero flags or reserved bytes (type ${data[0]})`);
      }),
      RUNS,
    );
  });

  test('with fds beside it, any type but DUP is refused', () => {
    fc.assert(
      fc.property(
        sentFrames.filter((s) => s.frame.type !== FrameType.DUP),
        fc.array(fdNumbers, { minLength: 1, maxLength: 4 }),
        ({ data }, fds) => {
          expect(rejection(data, fds).message).toBe(`unexpected fds: ${fds.length} fd(s) arrived with a frame of type ${data[0]}`);
        },
      ),
      RUNS,
    );
  });
});

describe('the header', () => {
  test('is type, then three zero bytes, then the id as a little-endian u32 (ids wrap to 32 bits)', () => {
    fc.assert(
      fc.property(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), (id) => {
        const data = encodeCall(id, 'm', []);
        expect([...data.subarray(0, 4)]).toEqual([FrameType.CALL, 0, 0, 0]);
        expect(data.readUInt32LE(4)).toBe(id >>> 0);
        expect(decodeFrame(data, []).id).toBe(id >>> 0);
      }),
      RUNS,
    );
  });

  test('a message shorter than the header, non-zero flags or reserved bytes, or an unknown type is rejected', () => {
    for (let n = 0; n < HEADER_BYTES; n++) {
      expect(rejection(Buffer.alloc(n, FrameType.CLOSE)).message).toMatch(new RegExp(`${n} bytes is shorter than the 8-byte header`));
    }
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 255 }), fc.integer({ min: 1, max: 0xffff }), (flags, reserved) => {
        expect(rejection(raw(FrameType.CLOSE, 1, '', flags, 0)).message).toMatch(/non-zero flags or reserved bytes \(type 10\)/);
        expect(rejection(raw(FrameType.CLOSE, 1, '', 0, reserved)).message).toMatch(/non-zero flags or reserved/);
      }),
      { ...RUNS, numRuns: 50 },
    );
    for (const type of [0, 13, 99, 255]) expect(rejection(raw(type, 1)).message).toMatch(new RegExp(`unknown type ${type}$`));
  });
});

describe('fds only where they belong', () => {
  test('a DUP with a payload or without fds is rejected', () => {
    expect(rejection(raw(FrameType.DUP, 1, Buffer.alloc(4)), [5]).message).toMatch(/DUP frame: it has a payload/);
    expect(rejection(raw(FrameType.DUP, 1), []).message).toMatch(/DUP frame: no fds arrived with it/);
  });

  test('fds on any other frame are rejected, even on an otherwise good frame', () => {
    const good: Array<[FrameTypeValue, Buffer]> = [
      [FrameType.DUP_OK, encodeFdList(FrameType.DUP_OK, 1, [3])],
      [FrameType.CALL, encodeCall(1, 'm', [])],
      [FrameType.RESULT, encodeResult(1, 1)],
      [FrameType.CLOSE, encodeEmpty(FrameType.CLOSE, 1)],
    ];
    for (const [type, data] of good) {
      expect(rejection(data, [9]).message).toBe(`unexpected fds: 1 fd(s) arrived with a frame of type ${type}`);
      expect(rejection(data, [9, 10]).message).toMatch(/^unexpected fds: 2 fd\(s\)/);
    }
  });

  test('an fd list carries int32 numbers exactly; one past int32 is a RangeError, nothing made', () => {
    const ends = [-0x80000000, 0x7fffffff, -1, 0];
    const data = encodeFdList(FrameType.RELEASE, 1, ends);
    expect(ends.map((_, i) => data.readInt32LE(HEADER_BYTES + 4 * i))).toEqual(ends);
    const pastInt32 = fc.oneof(
      fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 32 + 3, 2 ** 53, -(2 ** 31) - 1, -(2 ** 32)),
      fc.nat().map((n) => 2 ** 31 + n),
      fc.nat().map((n) => -(2 ** 31) - 1 - n),
    );
    fc.assert(
      fc.property(fdListTypes, ids, fc.array(fdNumbers, { maxLength: 20 }), pastInt32, fc.array(fdNumbers, { maxLength: 20 }), (type, id, before, bad, after) => {
        let caught: unknown;
        try {
          caught = encodeFdList(type, id, [...before, bad, ...after]);
        } catch (err) {
          caught = err;
        }
        expect(caught).toBeInstanceOf(RangeError);
        expect(caught).toMatchObject({ code: 'ERR_OUT_OF_RANGE', message: `an fd list frame carries int32 fd numbers, not ${bad}` });
      }),
      RUNS,
    );
  });

  test('GETFD pins: 1..253 of 20 bytes, no fd number negative', () => {
    for (const bytes of [0, 1, 4, 19, 21, 40 + 4, 254 * 20, 300 * 20]) {
      expect(rejection(raw(FrameType.GETFD, 1, Buffer.alloc(bytes))).message).toBe(
        `malformed GETFD frame: ${bytes} payload bytes is not 1..253 pins of 20 bytes`,
      );
    }
    expect(decodeFrame(raw(FrameType.GETFD, 1, Buffer.alloc(253 * 20)), [])).toEqual({
      type: FrameType.GETFD,
      id: 1,
      fds: new Array(253).fill(0),
      files: new Array(253).fill({ dev: 0n, ino: 0n }),
    });
    const negative = Buffer.alloc(40);
    negative.writeInt32LE(4, 0);
    negative.writeInt32LE(-1, 20);
    expect(rejection(raw(FrameType.GETFD, 1, negative)).message).toBe('malformed GETFD frame: fd -1 is negative');
  });

  test('fd lists: 1..253 whole int32s, none negative', () => {
    const names = { [FrameType.DUP_OK]: 'DUP_OK', [FrameType.RELEASE]: 'RELEASE' } as const;
    for (const type of [FrameType.DUP_OK, FrameType.RELEASE] as const) {
      const name = names[type];
      for (const bytes of [0, 1, 3, 5, 254 * 4, 300 * 4]) {
        expect(rejection(raw(type, 1, Buffer.alloc(bytes))).message).toBe(
          `malformed ${name} frame: ${bytes} payload bytes is not 1..253 int32 fd numbers`,
        );
      }
      expect(decodeFrame(raw(type, 1, Buffer.alloc(253 * 4)), [])).toEqual({ type, id: 1, fds: new Array(253).fill(0) });
      const negative = Buffer.alloc(8);
      negative.writeInt32LE(4, 0);
      negative.writeInt32LE(-1, 4);
      expect(rejection(raw(type, 1, negative)).message).toBe(`malformed ${name} frame: fd -1 is negative`);
    }
  });
});

describe('JSON payloads', () => {
  const jsonTypes = [FrameType.HELLO, FrameType.READY, FrameType.REFUSED, FrameType.CALL, FrameType.RESULT, FrameType.ERROR];

  test('a payload that is not JSON is rejected, with the parse error as cause', () => {
    for (const type of jsonTypes) {
      const err = rejection(raw(type, 1, '{"a":'));
      expect(err.message).toBe('malformed frame: its JSON payload does not parse');
      expect(err.cause).toBeInstanceOf(SyntaxError);
    }
  });

  test('JSON that is not an object (null, an array, a number, a string, a boolean) is rejected', () => {
    for (const type of jsonTypes) {
      for (const payload of ['null', '[]', '[1]', '5', '"s"', 'true']) {
        expect(rejection(raw(type, 1, payload)).message).toBe('malformed frame: its payload is not a JSON object');
      }
    }
  });

  test('HELLO: version an integer, command an object with a string module, string export, array args', () => {
    const hello = (o: unknown): string => rejection(encodeJson(FrameType.HELLO, 1, o)).message;
    const command = { module: 'm' };
    for (const version of [undefined, '1', 1.5, null, true]) {
      expect(hello({ version, command })).toBe('malformed HELLO frame: "version" is not an integer');
    }
    for (const c of [undefined, null, 5, 'm']) expect(hello({ version: 1, command: c })).toBe('malformed HELLO frame: "command" is not an object');
    for (const module of [undefined, 5, null, ['m']]) expect(hello({ version: 1, command: { module } })).toBe('malformed HELLO frame: "module" is not a string');
    expect(hello({ version: 1, command: { module: 'm', export: 5 } })).toBe('malformed HELLO frame: "export" is not a string');
    expect(hello({ version: 1, command: { module: 'm', export: null } })).toBe('malformed HELLO frame: "export" is not a string');
    for (const args of [5, 'a', {}, null]) {
      expect(hello({ version: 1, command: { module: 'm', args } })).toBe('malformed HELLO frame: "args" is not an array');
    }
  });

  test('HELLO: a named command needs no module; a name that is not a string is rejected; neither name nor module needs the module', () => {
    const decode = (command: object): unknown => decodeFrame(encodeJson(FrameType.HELLO, 3, { version: 1, command }), []);
    expect(decode({ name: 'log' })).toEqual({ type: FrameType.HELLO, id: 3, hello: { version: 1, command: { name: 'log' } } });
    expect(decode({ name: 'log', module: '/m.js', export: 'X', args: [1] })).toEqual({
      type: FrameType.HELLO,
      id: 3,
      hello: { version: 1, command: { name: 'log', module: '/m.js', export: 'X', args: [1] } },
    });
    const hello = (command: object): string => rejection(encodeJson(FrameType.HELLO, 1, { version: 1, command })).message;
    for (const name of [5, null, ['log'], {}]) expect(hello({ name })).toBe('malformed HELLO frame: "name" is not a string');
    expect(hello({ name: 'log', module: 5 })).toBe('malformed HELLO frame: "module" is not a string');
    expect(hello({})).toBe('malformed HELLO frame: "module" is not a string');
  });

  test('HELLO: pull is "pidfd" or absent, and then probeFd is an int32 fd number', () => {
    const hello = (o: object): string => rejection(encodeJson(FrameType.HELLO, 1, { version: 1, command: { module: 'm' }, ...o })).message;
    for (const pull of ['PIDFD', 'socket', 1, null, true]) expect(hello({ pull, probeFd: 3 })).toBe('malformed HELLO frame: "pull" is not "pidfd"');
    for (const probeFd of [undefined, '3', 3.5, null]) expect(hello({ pull: 'pidfd', probeFd })).toBe('malformed HELLO frame: "probeFd" is not an integer');
    for (const probeFd of [-1, -(2 ** 31), 0x80000000, 2 ** 40]) {
      expect(hello({ pull: 'pidfd', probeFd })).toBe(`malformed HELLO frame: "probeFd" ${probeFd} is not an fd number`);
    }
    // Without pull, probeFd means nothing and is not looked at.
    const frame = decodeFrame(encodeJson(FrameType.HELLO, 1, { version: 1, command: { module: 'm' }, probeFd: -5 }), []);
    expect(frame).toEqual({ type: FrameType.HELLO, id: 1, hello: { version: 1, command: { module: 'm' } } });
  });

  test('generated: a READY of any number of constructorFds, of any target length, fits one frame: targets cut past READY_TARGET_BYTES, the entries past the frame counted in constructorFdsOmitted', () => {
    // Code units JSON escapes or UTF-8 widens, and plain ASCII.
    const unit = fc.constantFrom('a', '/', '"', '\\', '\x01', '\n', 'é', '\u2028', '😀', '\ud800');
    fc.assert(
      fc.property(fc.nat(8000), fc.array(unit, { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 4096 }), fc.nat(0x7fffffff), (count, units, length, pid) => {
        const base = units.join('').repeat(Math.ceil(length / units.join('').length));
        const constructorFds = Array.from({ length: count }, (_, i) => ({ fd: i + 3, target: `${base}${i}` }));
        const data = encodeReady(9, { pid, threadId: 0, constructorFds });
        expect(data.length).toBeLessThanOrEqual(MAX_FRAME_BYTES);
        const frame = decodeFrame(data, []);
        if (frame.type !== FrameType.READY) throw new Error(`decoded as type ${frame.type}`);
        const { ready } = frame;
        const named = ready.constructorFds ?? [];
        expect({ pid: ready.pid, total: named.length + (ready.constructorFdsOmitted ?? 0) }).toEqual({ pid, total: count });
        named.forEach((e, i) => {
          const sent = constructorFds[i] as { fd: number; target: string };
          expect({ fd: e.fd, cutOf: isCutOf(e.target, sent.target), cut: e.target !== sent.target }).toEqual({
            fd: sent.fd,
            cutOf: true,
            cut: Buffer.byteLength(JSON.stringify(sent.target)) > READY_TARGET_BYTES,
          });
        });
        // Left out only past what one frame holds: the next entry, cut, would not have fit with the count after it.
        if (ready.constructorFdsOmitted === undefined) return;
        const sent = constructorFds[named.length] as { fd: number; target: string };
        const next = { fd: sent.fd, target: cutToJsonBytes(sent.target, READY_TARGET_BYTES) };
        const withNext = Buffer.byteLength(JSON.stringify({ pid, threadId: 0, constructorFds: [...named, next] })) + Buffer.byteLength(`,"constructorFdsOmitted":${count}`);
        expect(withNext).toBeGreaterThan(MAX_FRAME_BYTES - HEADER_BYTES);
      }),
      { seed: SEED, numRuns: 60 },
    );
  });

  test('readyPayload: parsed JSON that is no object (the remote channel\'s READY, an empty payload too) is a ProtocolError', () => {
    const notObject = fc.oneof(
      fc.constant(undefined),
      fc.jsonValue().filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)),
    );
    fc.assert(
      fc.property(notObject, (value) => {
        expect(protocolErrorOf(() => readyPayload(value)).message).toBe('malformed READY frame: its payload is not a JSON object');
      }),
      RUNS,
    );
  });

  test('generated: readyJson at any limit from 256 bytes: never past it, the entries in order with their targets cut, and none left out that would have fit', () => {
    const entry = fc.record({ fd: fc.nat(), target: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ minLength: 1000, maxLength: 1200 })) });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 12 }), fc.nat(0x7fffffff), fc.nat(12), fc.integer({ min: -2, max: 2 }), fc.nat(4000), fc.constantFrom('whole', 'prefix', 'anywhere'), (list, pid, k, delta, anywhere, near) => {
        const sent = list.map((e) => ({ fd: e.fd, target: cutToJsonBytes(e.target, READY_TARGET_BYTES) }));
        const bytes = (n: number): number => Buffer.byteLength(JSON.stringify({ pid, threadId: 0, constructorFds: sent.slice(0, n) }));
        /** The first n entries, and the count of those left out (room kept for the largest count). */
        const withCount = (n: number): number => bytes(n) + Buffer.byteLength(`,"constructorFdsOmitted":${list.length}`);
        // Around the limits that matter (the whole list's JSON; a start of it with the count) as well as anywhere.
        const limit = Math.max(256, near === 'whole' ? bytes(list.length) + delta : near === 'prefix' ? withCount(Math.min(k, list.length)) + delta : anywhere);
        const out = readyJson({ pid, threadId: 0, constructorFds: list }, limit);
        expect(Buffer.byteLength(out)).toBeLessThanOrEqual(limit);
        const o = JSON.parse(out) as { pid: number; threadId: number; constructorFds: unknown[]; constructorFdsOmitted?: number };
        const named = o.constructorFds.length;
        expect(o).toEqual({ pid, threadId: 0, constructorFds: sent.slice(0, named), ...(named < list.length ? { constructorFdsOmitted: list.length - named } : {}) });
        // Whole when it fits; else as many as fit beside the count.
        expect(named === list.length).toBe(bytes(list.length) <= limit);
        if (named < list.length) expect(withCount(named + 1)).toBeGreaterThan(limit);
      }),
      { ...RUNS, numRuns: 2000 },
    );
  });

  test('READY, REFUSED, CALL and ERROR: each field of the right type', () => {
    const bad = (type: FrameTypeValue, o: unknown): string => rejection(encodeJson(type, 1, o)).message;
    expect(bad(FrameType.READY, { pid: 1.5, threadId: 0 })).toBe('malformed READY frame: "pid" is not an integer');
    expect(bad(FrameType.READY, { pid: 1, threadId: '0' })).toBe('malformed READY frame: "threadId" is not an integer');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: {} })).toBe('malformed READY frame: "constructorFds" is not a list');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [null] })).toBe('malformed READY frame: "constructorFds" holds null, not { fd, target }');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [5] })).toBe('malformed READY frame: "constructorFds" holds 5, not { fd, target }');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [{ fd: 1.5, target: 'x' }] })).toBe('malformed READY frame: "fd" is not an integer');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [{ fd: -1, target: 'x' }] })).toBe('malformed READY frame: "constructorFds" names fd -1');
    // fd 0 is an fd (a constructor that closed stdin and opened a file there).
    expect(decodeFrame(encodeJson(FrameType.READY, 1, { pid: 1, threadId: 0, constructorFds: [{ fd: 0, target: '/x' }] }), [])).toEqual({
      type: FrameType.READY,
      id: 1,
      ready: { pid: 1, threadId: 0, constructorFds: [{ fd: 0, target: '/x' }] },
    });
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [{ fd: 3 }] })).toBe('malformed READY frame: "target" is not a string');
    for (const omitted of [0, -1]) {
      expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [], constructorFdsOmitted: omitted })).toBe(
        `malformed READY frame: "constructorFdsOmitted" ${omitted} is not a count of fds left out of a "constructorFds"`,
      );
    }
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFdsOmitted: 2 })).toBe('malformed READY frame: "constructorFdsOmitted" 2 is not a count of fds left out of a "constructorFds"');
    expect(bad(FrameType.READY, { pid: 1, threadId: 0, constructorFds: [], constructorFdsOmitted: '2' })).toBe('malformed READY frame: "constructorFdsOmitted" is not an integer');
    expect(bad(FrameType.REFUSED, { message: 5 })).toBe('malformed REFUSED frame: "message" is not a string');
    expect(bad(FrameType.CALL, { method: 'm', args: {} })).toBe('malformed CALL frame: "args" is not an array');
    expect(bad(FrameType.CALL, { method: 'm' })).toBe('malformed CALL frame: "args" is not an array');
    expect(bad(FrameType.CALL, { method: 5, args: [] })).toBe('malformed CALL frame: "method" is not a string');
    expect(bad(FrameType.ERROR, { message: 'm' })).toBe('malformed ERROR frame: "name" is not a string');
    expect(bad(FrameType.ERROR, { name: 'E' })).toBe('malformed ERROR frame: "message" is not a string');
  });

  test('CLOSE and CLOSED with a payload are rejected', () => {
    for (const type of [FrameType.CLOSE, FrameType.CLOSED]) {
      expect(rejection(raw(type, 1, '{}')).message).toBe(`malformed frame of type ${type}: it has a payload`);
    }
  });
});

describe('the size limit of one message', () => {
  test(`a frame of exactly ${MAX_FRAME_BYTES} bytes is made; one byte more is a RangeError, before anything is sent`, () => {
    // {"value":"xxx..."}: 12 bytes of JSON around the string.
    const fits = 'x'.repeat(MAX_FRAME_BYTES - HEADER_BYTES - 12);
    const frame = encodeResult(1, fits);
    expect(frame.length).toBe(MAX_FRAME_BYTES);
    expect(decodeFrame(frame, [])).toEqual({ type: FrameType.RESULT, id: 1, value: fits });
    expect(() => encodeResult(1, `${fits}x`)).toThrow(
      new RangeError(`frame of ${MAX_FRAME_BYTES + 1} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit of one message`),
    );
    // Multi-byte UTF-8 counts in bytes, not characters.
    const euros = '€'.repeat(Math.floor((MAX_FRAME_BYTES - HEADER_BYTES - 12) / 3) + 1);
    expect(() => encodeResult(1, euros)).toThrow(RangeError);
    expect(() => encodeFdList(FrameType.RELEASE, 1, new Array((MAX_FRAME_BYTES - HEADER_BYTES) / 4 + 1).fill(3))).toThrow(RangeError);
  });
});
