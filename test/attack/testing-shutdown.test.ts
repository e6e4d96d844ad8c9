/**
 * `fdbridge/testing`'s rawShutdown(fd, how) with a `how` that is none of
 * 'read', 'write', 'both' (a typo, a number, a value from an untyped
 * caller) must throw a TypeError at once and shut nothing down, as every
 * other bad argument does: a test that meant a half-close must not get a
 * full one silently.
 */
import fc from 'fast-check';

import { closeFds } from '../../src/fd';
import { rawShutdown, rawSocketPair, receiveNow, sendNow } from '../../src/testing';

test('generated: rawShutdown with an unknown `how` throws a TypeError and leaves both directions open', () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.string(), fc.integer(), fc.constantFrom(undefined, null, NaN, 'WRITE', 'rdwr', 'wr', 'shut_wr', 0, 1, 2)).filter((how) => how !== 'read' && how !== 'write' && how !== 'both'),
      (how) => {
        const [a, b] = rawSocketPair('seqpacket');
        try {
          expect(() => rawShutdown(a, how as 'both')).toThrow(TypeError);
          // Both ways still carry a message.
          expect(sendNow(a, Buffer.from('a'))).toBe(1);
          expect(sendNow(b, Buffer.from('b'))).toBe(1);
          expect(receiveNow(b, 16, 0)?.data.toString()).toBe('a');
          expect(receiveNow(a, 16, 0)?.data.toString()).toBe('b');
        } finally {
          closeFds([a, b]);
        }
      },
    ),
    { seed: 17, numRuns: 100 },
  );
});
