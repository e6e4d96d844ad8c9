/**
 * ownUid (nobody.ts): a uid per (process, slot), so that tests that depend
 * on what the kernel counts per user (fds in flight) are not filled by
 * another test's processes. Any two slots of this process, and this
 * process's against any other pid's, differ; every one is a valid uid that
 * is not nobody's, root's or (uid_t)-1; a slot out of range throws.
 */
import { readFileSync } from 'node:fs';

import fc from 'fast-check';

import { NOBODY, ownUid } from './nobody';

test('two slots give two uids, both valid, above every uid a user of the machine has', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 }), (a, b) => {
      for (const uid of [ownUid(a), ownUid(b)]) {
        expect(Number.isInteger(uid)).toBe(true);
        expect(uid).toBeGreaterThanOrEqual(1_000_000);
        expect(uid).toBeLessThan(2 ** 32 - 1);
        expect(uid).not.toBe(NOBODY);
      }
      expect(ownUid(a) === ownUid(b)).toBe(a === b);
    }),
  );
});

test("another process's uids differ from this one's: the pid is in the number", () => {
  // The uid of slot s in a process with pid p is a fixed base plus s times a ceiling no pid reaches, plus p.
  const base = ownUid(0) - process.pid;
  const step = ownUid(1) - ownUid(0);
  expect(step).toBeGreaterThan(Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) - 1);
  expect(ownUid(7)).toBe(base + 7 * step + process.pid);
});

test('a slot that is not an integer from 0 to 999 throws a RangeError', () => {
  for (const slot of [-1, 1000, 0.5, Number.NaN, Infinity]) expect(() => ownUid(slot)).toThrow(RangeError);
});
