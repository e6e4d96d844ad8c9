/**
 * A socket address given as bytes (a Uint8Array path, or { abstract: bytes }):
 * refused as a TypeError when it is no name, as a RangeError past sun_path,
 * and named in messages with each byte outside printable ASCII (and the
 * backslash) as \xHH, so that two different names never read the same.
 *
 * Generated: the bytes.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, SystemError, type SocketAddress } from '../../src';
import { MAX_SOCKET_PATH_BYTES } from '../../src/testing';
import { openFdTable } from '../../src/fd';
import { errorOf, escaped } from '../util/socket-names';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-address-forms-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('generated: a name of bytes past sun_path is a RangeError naming it escaped (path or abstract name)', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.uint8Array({ minLength: MAX_SOCKET_PATH_BYTES + 1, maxLength: MAX_SOCKET_PATH_BYTES + 8 }), (abstract, bytes) => {
      const e = errorOf(() => DatagramSocket.bind(abstract ? { abstract: bytes } : bytes));
      expect(e).toBeInstanceOf(RangeError);
      expect((e as Error).message).toBe(
        `socket ${abstract ? 'name' : 'path'} is ${bytes.length} bytes; sun_path holds at most ${MAX_SOCKET_PATH_BYTES} ` +
          `(use a shorter directory, e.g. under $XDG_RUNTIME_DIR, or an abstract name): ${escaped(bytes)}`,
      );
    }),
  );
});

test('generated: a string name past sun_path in UTF-8 bytes (though not in characters) is a RangeError naming it as it is', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.integer({ min: 1, max: 8 }), fc.constantFrom('é', '€', '😀', 'ÿ'), (abstract, extra, ch) => {
      const chars = Math.ceil((MAX_SOCKET_PATH_BYTES + extra) / Buffer.byteLength(ch));
      const name = `/${ch.repeat(chars)}`.slice(abstract ? 1 : 0);
      const e = errorOf(() => DatagramSocket.bind(abstract ? { abstract: name } : name));
      expect(e).toBeInstanceOf(RangeError);
      expect((e as Error).message).toBe(
        `socket ${abstract ? 'name' : 'path'} is ${Buffer.byteLength(name)} bytes; sun_path holds at most ${MAX_SOCKET_PATH_BYTES} ` +
          `(use a shorter directory, e.g. under $XDG_RUNTIME_DIR, or an abstract name): ${name}`,
      );
    }),
  );
});

test('generated: sending to a name of bytes nobody bound rejects naming it escaped; a name of exactly sun_path bytes is tried', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  try {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.uint8Array({ minLength: 1, maxLength: 30 }), fc.boolean(), async (abstract, raw, full) => {
        const tail = Buffer.from(raw.map((b) => (b === 0 || b === 0x2f ? 0x5f : b)));
        const prefix = abstract ? Buffer.from(`fdbridge-forms-none-${process.pid}-`) : Buffer.from(join(dir, 'none-'));
        let bytes = Buffer.concat([prefix, abstract ? Buffer.from(raw) : tail]);
        if (full) bytes = Buffer.concat([bytes, Buffer.alloc(MAX_SOCKET_PATH_BYTES, 0x61)]).subarray(0, MAX_SOCKET_PATH_BYTES);
        const address: SocketAddress = abstract ? { abstract: bytes } : bytes;
        const e = await sender.sendTo(address, Buffer.from('x')).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(e).toBeInstanceOf(SystemError);
        expect((e as Error).message).toContain(`${abstract ? '@' : ''}${escaped(bytes)}`);
      }),
    );
  } finally {
    await sender.close();
  }
  expect(openFdTable()).toEqual(before);
});

test('generated: a socket file path of bytes binds when it is UTF-8 (as the string), else a TypeError naming it escaped, nothing bound', async () => {
  const before = openFdTable();
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 20 }), async (raw) => {
      const tail = Buffer.from(raw.map((b) => (b === 0 || b === 0x2f ? 0x5f : b)));
      const bytes = Buffer.concat([Buffer.from(join(dir, `b${n++}-`)), tail]);
      const utf8 = Buffer.from(bytes.toString('utf8')).equals(bytes);
      let bound: DatagramSocket | undefined;
      const e = errorOf(() => (bound = DatagramSocket.bind(bytes)));
      const address = bound?.address;
      await bound?.close();
      if (utf8) {
        expect(e).toBeUndefined();
        expect(address).toBe(bytes.toString('utf8'));
      } else {
        expect(e).toBeInstanceOf(TypeError);
        expect((e as Error).message).toBe(`a socket file to bind must have a UTF-8 path (bind an abstract name for other bytes): ${escaped(bytes)}`);
      }
      expect(readdirSync(dir).filter((f) => f.startsWith('b'))).toEqual([]);
    }),
  );
  expect(openFdTable()).toEqual(before);
});

test.each<[string, unknown]>([
  ['an empty string', ''],
  ['empty bytes', new Uint8Array(0)],
  ['an empty abstract name', { abstract: '' }],
  ['empty abstract bytes', { abstract: Buffer.alloc(0) }],
  ['a number', 5],
  ['an abstract number', { abstract: 5 }],
  ['a DataView', new DataView(new ArrayBuffer(4))],
  ['null', null],
])('%s is no socket address: a TypeError', (_what, address) => {
  const e = errorOf(() => DatagramSocket.bind(address as SocketAddress));
  expect(e).toBeInstanceOf(TypeError);
  expect((e as Error).message).toBe('a socket address is a non-empty path or { abstract: name } (a string or a Uint8Array)');
});
