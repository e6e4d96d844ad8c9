/**
 * What a remote connection takes from its far side: the number an OPENED
 * gives for a duplicated fd must be an fd number (an integer from 0 to
 * 2^31 - 1), and a RESULT at most MAX_CALL_JSON_BYTES, the limit a call's
 * result has on every transport (the far side's own command refuses more).
 * Anything else from the far side is a ProtocolError for that request, never
 * a value handed to the caller; a far side that breaks the channel's
 * protocol (a frame too large, a reply to no request) fails every request
 * with a ProtocolError saying so, as the other transports say a peer's
 * violation, not as an exit of the via. The far side here is a via that answers the
 * frames itself (fixtures/far-side-replies.py).
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, makePipe, MAX_CALL_JSON_BYTES, ProtocolError } from '../../src';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { closeFd, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

const FAR_SIDE = join(__dirname, 'fixtures', 'far-side-replies.py');

function farSide(mode: 'opened' | 'result' | 'violate', arg: string) {
  return connect('remote', { via: ['/usr/bin/python3', FAR_SIDE, mode, arg], command: PROBE_COMMAND, timeoutMs: 20_000 });
}

test('generated: an OPENED whose fd is not an fd number, or whose payload is not JSON, fails that duplication with a ProtocolError; one that is gives it', async () => {
  const before = openFdTable();
  const bad = fc.oneof(
    fc.integer({ max: -1 }).map(String),
    fc.double({ noInteger: true, noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
    fc.nat(2 ** 30).map((n) => String(2 ** 31 + n)),
    fc.constantFrom('9007199254740992', '1e400', '-0.5', '"7"', 'null', 'true', '{}', '[3]'),
  );
  // Put in the payload as it is (`{"fd": <v>}`): none of these leaves it JSON.
  const notJson = fc.constantFrom('}', '{', 'nope', '1,', '"');
  const good = fc.oneof(fc.nat(1000), fc.constant(0x7fffffff)).map(String);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        bad.map((v) => ({ v, ok: false, why: /an OPENED whose fd is not an fd number/ })),
        notJson.map((v) => ({ v, ok: false, why: /^OPENED: its payload is not JSON$/ })),
        good.map((v) => ({ v, ok: true, why: undefined })),
      ),
      async ({ v, ok, why }) => {
        const conn = await farSide('opened', v);
        const [r, w] = makePipe();
        try {
          const got = await conn.dupFileDescriptor(w).then(
            (fd) => ({ fd }),
            (err: unknown) => ({ err }),
          );
          if (ok) {
            expect(got).toEqual({ fd: JSON.parse(v) });
          } else {
            expect((got as { err?: unknown }).err).toBeInstanceOf(ProtocolError);
            expect(((got as { err: Error }).err).message).toMatch(why as RegExp);
          }
        } finally {
          await conn.close();
          closeFd(r);
          closeFd(w);
        }
      },
    ),
    { numRuns: 18, examples: [[{ v: '}', ok: false, why: /^OPENED: its payload is not JSON$/ }]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120_000);

test.each([
  ['at the limit is the call\'s value', MAX_CALL_JSON_BYTES, true],
  ['one byte past it is a ProtocolError', MAX_CALL_JSON_BYTES + 1, false],
  ['of 16 MiB is a ProtocolError', 16 * 1024 * 1024, false],
])('a RESULT %s', async (_what, size, ok) => {
  const before = openFdTable();
  const conn = await farSide('result', String(size));
  try {
    const got = await conn.call('anything').then(
      (value) => ({ length: (value as string).length }),
      (err: unknown) => ({ err }),
    );
    if (ok) {
      expect(got).toEqual({ length: size - 2 });
    } else {
      expect((got as { err?: unknown }).err).toBeInstanceOf(ProtocolError);
      expect(((got as { err: Error }).err).message).toContain(`a RESULT of ${size} bytes, past MAX_CALL_JSON_BYTES`);
    }
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test.each([
  ['a header that claims 4 GiB', 'huge', /broke the protocol: .*4294967280/],
  ['a second reply to one call', 'twice', /broke the protocol: /],
])('a far side that sends %s: the call and every later request fail with a ProtocolError; close() resolves', async (_what, how, says) => {
  const before = openFdTable();
  const conn = await farSide('violate', how);
  try {
    const first = await conn.call('anything').then(
      (value) => ({ value }),
      (err: unknown) => ({ err }),
    );
    // 'twice': the first RESULT answers the call; the second breaks the channel.
    if (how === 'huge') expect((first as { err?: unknown }).err).toBeInstanceOf(ProtocolError);
    const later = await conn.call('again').catch((err: unknown) => err);
    expect(later).toBeInstanceOf(ProtocolError);
    expect((later as Error).message).toMatch(/^again\(\) failed: the remote command's channel \(via process pid \d+\) broke the protocol: /);
    expect((later as Error).message).toMatch(says);
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);
