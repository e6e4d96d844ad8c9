/**
 * The frame format is defined once per language: src/protocol.ts for
 * TypeScript, native/frame_format.h for C++ (whose channel answers and
 * settles duplications without TypeScript). The two must read every message
 * alike, or a frame one side sends would be refused, or worse misread, by
 * the other. The same vectors (test/fixtures/frames.json) go through both
 * codecs, then generated messages do: both accept the same ones and read
 * the same type, id and fd numbers from them. Pure functions: no fd is
 * opened here (the fd numbers beside a message are only counted).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { ProtocolError } from '../../src/errors';
import { native } from './binding';
import {
  decodeFrame,
  encodeFdList,
  encodeGetfd,
  FrameType,
  HEADER_BYTES,
  MAX_FDS_PER_FRAME,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  type Frame,
  type FrameTypeValue,
} from '../../src/protocol';

interface Expected {
  type: number;
  id: number;
  payload: 'none' | 'fds' | 'pins' | 'json';
  count: number;
  fds?: number[];
  /** A GETFD's: each pin's file, device and inode as decimal strings. */
  files?: Array<{ dev: string; ino: string }>;
}
interface DecodeVector {
  name: string;
  hex: string;
  fds: number;
  expect: Expected | 'malformed';
}
interface EncodeVector {
  name: string;
  type: number;
  id: number;
  fds: number[];
  files?: Array<{ dev: string; ino: string }>;
  hex: string;
}
interface Vectors {
  types: Record<string, number>;
  constants: Record<string, number>;
  decode: DecodeVector[];
  encode: EncodeVector[];
}

const vectors = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'frames.json'), 'utf8')) as Vectors;
const codec = native.frameCodec;
const SEED = Number(process.env['FDBRIDGE_FUZZ_SEED'] ?? 17);

/** Stand-ins for the fds that arrived beside a message: decodeFrame never touches them. */
function fdsBeside(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 1000 + i);
}

/** What the TypeScript codec reads, in the shape the fixture states it; 'malformed' when it throws ProtocolError. */
function viaTypeScript(data: Buffer, nfds: number): Expected | 'malformed' {
  let frame: Frame;
  try {
    frame = decodeFrame(data, fdsBeside(nfds));
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return 'malformed';
  }
  switch (frame.type) {
    case FrameType.DUP:
      return { type: frame.type, id: frame.id, payload: 'none', count: frame.fds.length };
    case FrameType.DUP_OK:
    case FrameType.RELEASE:
      return { type: frame.type, id: frame.id, payload: 'fds', count: frame.fds.length, fds: frame.fds };
    case FrameType.GETFD:
      return {
        type: frame.type,
        id: frame.id,
        payload: 'pins',
        count: frame.fds.length,
        fds: frame.fds,
        files: frame.files.map((f) => ({ dev: String(f.dev), ino: String(f.ino) })),
      };
    case FrameType.CLOSE:
    case FrameType.CLOSED:
      return { type: frame.type, id: frame.id, payload: 'none', count: 0 };
    default:
      return { type: frame.type, id: frame.id, payload: 'json', count: 0 };
  }
}

function viaNative(data: Buffer, nfds: number): Expected | 'malformed' {
  const f = codec.decode(data, nfds);
  if (f === null) return 'malformed';
  const out: Expected = { type: f.type, id: f.id, payload: f.payload, count: f.count };
  if (f.fds) out.fds = f.fds;
  if (f.files) out.files = f.files;
  return out;
}

describe('one frame format, two codecs', () => {
  test('the constants agree, with each other and with the fixture', () => {
    for (const [name, value] of Object.entries(vectors.types)) {
      expect(FrameType[name as keyof typeof FrameType]).toBe(value);
      expect(codec.constants[name]).toBe(value);
    }
    expect(Object.keys(FrameType).sort()).toEqual(Object.keys(vectors.types).sort());
    const ts: Record<string, number> = { PROTOCOL_VERSION, HEADER_BYTES, MAX_FRAME_BYTES, MAX_FDS_PER_FRAME };
    for (const [name, value] of Object.entries(vectors.constants)) {
      expect(ts[name]).toBe(value);
      expect(codec.constants[name]).toBe(value);
    }
    expect(MAX_FDS_PER_FRAME).toBe(native.constants.MAX_FDS_PER_MESSAGE);
  });

  test.each(vectors.decode.map((v) => [v.name, v] as const))('decode: %s', (_name, v) => {
    const data = Buffer.from(v.hex, 'hex');
    expect(viaTypeScript(data, v.fds)).toEqual(v.expect);
    expect(viaNative(data, v.fds)).toEqual(v.expect);
  });

  test.each(vectors.encode.map((v) => [v.name, v] as const))('encode: %s', (_name, v) => {
    if (v.type === FrameType.GETFD) {
      const files = v.files ?? [];
      expect(encodeGetfd(v.id, v.fds, files.map((f) => ({ dev: BigInt(f.dev), ino: BigInt(f.ino) }))).toString('hex')).toBe(v.hex);
      expect(codec.encodeGetfd(v.id, v.fds, files).toString('hex')).toBe(v.hex);
      return;
    }
    const type = v.type as typeof FrameType.DUP_OK | typeof FrameType.RELEASE;
    expect(encodeFdList(type, v.id, v.fds).toString('hex')).toBe(v.hex);
    expect(codec.encodeFdList(v.type, v.id, v.fds).toString('hex')).toBe(v.hex);
  });

  test('generated GETFD frames: what one encodes, the other decodes to the same pins', () => {
    const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    const pins = fc.array(fc.record({ fd: fc.nat({ max: 0x7fffffff }), dev: u64, ino: u64 }), { minLength: 1, maxLength: MAX_FDS_PER_FRAME });
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), pins, (id, list) => {
        const fds = list.map((p) => p.fd);
        const files = list.map((p) => ({ dev: String(p.dev), ino: String(p.ino) }));
        const fromTs = encodeGetfd(id, fds, list.map(({ dev, ino }) => ({ dev, ino })));
        const fromNative = codec.encodeGetfd(id, fds, files);
        expect(fromNative.equals(fromTs)).toBe(true);
        const expected = { type: FrameType.GETFD, id, payload: 'pins', count: fds.length, fds, files };
        expect(viaNative(fromTs, 0)).toEqual(expected);
        expect(viaTypeScript(fromNative, 0)).toEqual(expected);
      }),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('generated fd-list frames: what one encodes, the other decodes to the same numbers', () => {
    const fdList = fc.constantFrom<FrameTypeValue>(FrameType.DUP_OK, FrameType.RELEASE);
    fc.assert(
      fc.property(fdList, fc.nat({ max: 0xffffffff }), fc.array(fc.nat({ max: 0x7fffffff }), { minLength: 1, maxLength: MAX_FDS_PER_FRAME }), (type, id, fds) => {
        const t = type as typeof FrameType.DUP_OK;
        const fromTs = encodeFdList(t, id, fds);
        const fromNative = codec.encodeFdList(type, id, fds);
        expect(fromNative.equals(fromTs)).toBe(true);
        const expected = { type, id, payload: 'fds', count: fds.length, fds };
        expect(viaNative(fromTs, 0)).toEqual(expected);
        expect(viaTypeScript(fromNative, 0)).toEqual(expected);
      }),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('generated messages, well-formed or not: both codecs accept the same ones and read them alike', () => {
    // Headers near the valid ones (every type, flags and reserved mostly
    // zero), payloads of fd numbers or JSON or noise, 0..3 fds beside.
    const header = fc.record({
      type: fc.oneof(fc.integer({ min: 0, max: 14 }), fc.nat({ max: 255 })),
      flags: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 255 }) }),
      reserved: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
      id: fc.nat({ max: 0xffffffff }),
    });
    const payload = fc.oneof(
      fc.constant(Buffer.alloc(0)),
      fc.array(fc.integer({ min: -3, max: 0x7fffffff }), { minLength: 1, maxLength: 260 }).map((fds) => {
        const b = Buffer.alloc(4 * fds.length);
        fds.forEach((fd, i) => b.writeInt32LE(fd, 4 * i));
        return b;
      }),
      // Pins: 20 bytes each, its fd number sometimes negative, its file any 16 bytes.
      fc.array(fc.tuple(fc.integer({ min: -3, max: 0x7fffffff }), fc.uint8Array({ minLength: 16, maxLength: 16 })), { minLength: 1, maxLength: 256 }).map((pins) => {
        const b = Buffer.alloc(20 * pins.length);
        pins.forEach(([fd, file], i) => {
          b.writeInt32LE(fd, 20 * i);
          b.set(file, 20 * i + 4);
        });
        return b;
      }),
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify({ value: v }))),
      fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
    );
    const message = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(header, payload) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((u) => [null, Buffer.from(u)] as const) },
    );
    fc.assert(
      fc.property(message, fc.nat({ max: 3 }), ([h, body], nfds) => {
        let data: Buffer;
        if (h === null) {
          data = body;
        } else {
          data = Buffer.alloc(HEADER_BYTES + body.length);
          data[0] = h.type;
          data[1] = h.flags;
          data.writeUInt16LE(h.reserved, 2);
          data.writeUInt32LE(h.id, 4);
          body.copy(data, HEADER_BYTES);
        }
        const n = viaNative(data, nfds);
        const t = viaTypeScript(data, nfds);
        if (n !== 'malformed' && n.payload === 'json') {
          // C++ leaves JSON to TypeScript, which may still refuse its content.
          if (t !== 'malformed') expect(t).toEqual(n);
          return;
        }
        expect(t).toEqual(n);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});
