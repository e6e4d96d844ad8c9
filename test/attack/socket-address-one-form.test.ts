/**
 * A socket address is one of its forms, each refused at once when it names
 * no socket: a path holding a NUL byte was a SystemError EINVAL from the
 * addon (a bad argument, and the kernel would end the path there), and
 * `{ abstract: name, path: ... }` ignored its `path` silently (a caller
 * meaning the path reached the abstract name, anyone's). Both are a
 * TypeError naming what is wrong, on every entry point (DatagramSocket.bind,
 * sendTo, UnixServer.listen, UnixSocket.connect), nothing bound or sent.
 *
 * Generated: the path's bytes around its NUL (a string or a Uint8Array);
 * the other keys beside `abstract` and their values. A socket bound at the
 * abstract name must get nothing.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, type SocketAddress } from '../../src';
import { closeFds, makeMemfd, openFdTable } from '../../src/fd';
import { escaped, expectNothingBefore, expectRefusedEverywhere } from '../util/socket-names';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-one-form-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bytesOf = fc.uint8Array({ minLength: 0, maxLength: 8 }).map((raw) => Buffer.from(raw.map((b) => (b === 0x2f ? 0x5f : b))));

let run = 0;
test('generated: a path holding a NUL byte is a TypeError naming it on bind, listen, sendTo and connect; nothing bound', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  const memfd = makeMemfd();
  try {
    await fc.assert(
      fc.asyncProperty(bytesOf, bytesOf, fc.boolean(), async (head, tail, asString) => {
        const bytes = Buffer.concat([Buffer.from(join(dir, `n${run++}-`)), head, Buffer.from([0]), tail]);
        const text = bytes.toString('latin1');
        // A plain Uint8Array, not a Buffer (whose includes() takes a string too).
        const address: SocketAddress = asString ? text : new Uint8Array(bytes);
        const message = `a socket path cannot hold a NUL byte (the kernel would end it there; an abstract name may hold one): ${asString ? JSON.stringify(text) : escaped(bytes)}`;
        await expectRefusedEverywhere(address, sender, memfd, message);
        expect(readdirSync(dir)).toEqual([]);
      }),
      { numRuns: 60 },
    );
  } finally {
    closeFds([memfd]);
    sender.close();
  }
  expect(openFdTable()).toEqual(before);
});

const otherKey = fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_]{0,8}$/).filter((k) => k !== 'abstract' && k !== 'relative');

test('generated: { abstract } beside any other key is a TypeError naming the keys on every entry point; the abstract name gets nothing', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  const memfd = makeMemfd();
  try {
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(otherKey, { minLength: 1, maxLength: 3 }), fc.array(fc.anything(), { minLength: 3, maxLength: 3 }), async (keys, values) => {
        const name = `fdbridge-one-form-${process.pid}-${run++}`;
        const victim = DatagramSocket.bind({ abstract: name });
        try {
          const address = Object.fromEntries([['abstract', name], ...keys.map((k, i) => [k, values[i]])]) as SocketAddress;
          const message = `a socket address is a path (a string or a Uint8Array) or { abstract: name } and nothing else, not an object with ${keys.map((k) => JSON.stringify(k)).join(', ')}`;
          await expectRefusedEverywhere(address, sender, memfd, message);
          await expectNothingBefore(sender, victim);
        } finally {
          victim.close();
        }
      }),
      { numRuns: 60 },
    );
  } finally {
    closeFds([memfd]);
    sender.close();
  }
  expect(readdirSync(dir)).toEqual([]);
  expect(openFdTable()).toEqual(before);
});

test('an abstract name may hold NUL bytes: it binds and is reached by exactly those bytes', async () => {
  const before = openFdTable();
  const name = `fdbridge-one-form-nul-${process.pid}\0x\0`;
  const s = DatagramSocket.bind({ abstract: name });
  const r = DatagramSocket.open();
  try {
    await r.sendTo({ abstract: name }, Buffer.from('x'));
    expect((await s.receive()).data.toString()).toBe('x');
  } finally {
    s.close();
    r.close();
  }
  expect(openFdTable()).toEqual(before);
});
