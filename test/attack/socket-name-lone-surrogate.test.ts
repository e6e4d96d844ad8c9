/**
 * A socket name given as a string with a lone surrogate was encoded to
 * UTF-8 lossily (each one U+FFFD): sendTo({ abstract: 'a\ud800b' }) reached
 * the socket bound at 'a\ufffdb', fds included, and a socket bound with one
 * reported as its `address` a string receivers never saw. A string has no
 * UTF-8 form then: every entry point that takes a name (DatagramSocket.bind,
 * sendTo, UnixServer.listen, UnixSocket.connect) refuses it with a
 * TypeError naming it, nothing bound, nothing sent.
 *
 * Generated: the name (code units of any kind, lone surrogates among them),
 * abstract or a path. A socket bound at the lossy form must get nothing.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, type SocketAddress } from '../../src';
import { closeFds, makeMemfd, openFdTable } from '../../src/fd';
import { MAX_SOCKET_PATH_BYTES } from '../../src/testing';
import { expectNothingBefore, expectRefusedEverywhere } from '../util/socket-names';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-surrogate-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const wellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();
const lossy = (s: string): string => (s as string & { toWellFormed(): string }).toWellFormed();

/** Code units: printable ASCII, any BMP character, and surrogates, high and low, alone or paired. */
const unit = fc.oneof(
  fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x2f),
  fc.integer({ min: 0xa0, max: 0xd7ff }),
  fc.integer({ min: 0xd800, max: 0xdfff }),
  fc.integer({ min: 0xe000, max: 0xfffd }),
);
const illFormed = fc
  .array(unit, { minLength: 1, maxLength: 12 })
  .map((units) => String.fromCharCode(...units))
  .filter((s) => !wellFormed(s));

let run = 0;
test('generated: a name string with a lone surrogate is a TypeError on bind, sendTo, listen and connect; the socket at its lossy form gets nothing', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  const memfd = makeMemfd();
  try {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), illFormed, async (abstract, tail) => {
        const n = run++;
        const name = abstract ? `fdbridge-surrogate-${process.pid}-${n}-${tail}` : join(dir, `s${n}-${tail}`);
        const address: SocketAddress = abstract ? { abstract: name } : name;
        const message =
          `a socket ${abstract ? 'name' : 'path'} given as a string must be well-formed (a lone surrogate has no UTF-8 form, and would ` +
          `name the socket at U+FFFD instead; give other bytes as a Uint8Array): ${JSON.stringify(name)}`;
        const victim = DatagramSocket.bind(abstract ? { abstract: lossy(name) } : lossy(name));
        try {
          await expectRefusedEverywhere(address, sender, memfd, message);
          await expectNothingBefore(sender, victim);
        } finally {
          victim.close();
        }
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

test('generated: a well-formed name string binds and is reported as given (a surrogate pair is one character)', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }), async (abstract, tail) => {
      const n = run++;
      const clean = tail.replace(/[\0/]/g, '_');
      const name = abstract ? `fdbridge-surrogate-ok-${process.pid}-${n}-${clean}` : join(dir, `ok${n}-${clean}`);
      fc.pre(Buffer.byteLength(name) <= MAX_SOCKET_PATH_BYTES);
      const address: SocketAddress = abstract ? { abstract: name } : name;
      const s = DatagramSocket.bind(address);
      const r = DatagramSocket.open();
      try {
        expect(s.address).toEqual(address);
        await r.sendTo(address, Buffer.from('x'));
        expect((await s.receive()).data.toString()).toBe('x');
      } finally {
        s.close();
        r.close();
      }
    }),
    { numRuns: 40 },
  );
  expect(readdirSync(dir)).toEqual([]);
  expect(openFdTable()).toEqual(before);
});
