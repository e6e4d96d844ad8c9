/**
 * closeFds (public) refuses a list whole, nothing of it closed, where an
 * entry is not an fd number (as closeFd refuses one: -1, 1.5, NaN, a
 * string, null, a hole, a number past 2^31 - 1) or where a number comes
 * twice: the second close of a number could close another thread's fd that
 * took it after the first (closeClientFds refuses such a list the same way).
 * A TypeError naming the entry; every fd of the list still open on its file.
 */
import fc from 'fast-check';

import { closeFds } from '../../src';
import { fdIdentity, makePipe, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

/** An entry that is not an fd number; `fd` is one of the list's (for 2^32 + fd: no wrapping round to fd). */
const BAD_ENTRIES: Array<[string, (fd: number) => unknown]> = [
  ['-1', () => -1],
  ['1.5', () => 1.5],
  ['NaN', () => Number.NaN],
  ["'x'", () => 'x'],
  ['null', () => null],
  ['undefined', () => undefined],
  ['2^32 + fd', (fd) => 2 ** 32 + fd],
  ['2^31', () => 2 ** 31],
];

test('generated: closeFds of a list with an entry that is not an fd number, or naming a number twice: TypeError naming the entry, nothing of the list closed', async () => {
  const before = openFdTable(process.pid);
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 6 }),
      fc.oneof(fc.record({ bad: fc.integer({ min: 0, max: BAD_ENTRIES.length - 1 }) }), fc.record({ repeat: fc.nat() })),
      fc.nat(),
      fc.boolean(),
      async (pipes, wrong, at, asSet) => {
        const fds = Array.from({ length: pipes }, () => makePipe()).flat();
        try {
          const files = fds.map((fd) => fdIdentity(fd));
          const list: unknown[] = [...fds];
          const where = at % (list.length + 1);
          let named: RegExp;
          if ('bad' in wrong) {
            const [, value] = BAD_ENTRIES[wrong.bad]!;
            list.splice(where, 0, value(fds[0]!));
            named = new RegExp(`fds\\[${where}\\] must be a non-negative integer`);
          } else {
            const again = fds[wrong.repeat % fds.length]!;
            list.splice(where, 0, again);
            named = new RegExp(`fds\\[\\d+\\] is fd ${again} again \\(fds\\[\\d+\\]\\).*nothing was closed`);
          }
          // A Set cannot name a number twice: that case is an array only.
          const arg = asSet && 'bad' in wrong ? new Set(list) : list;
          let err: unknown;
          try {
            closeFds(arg as Iterable<number>);
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(TypeError);
          expect((err as Error).message).toMatch(named);
          // Nothing of the list closed: every fd still on its file.
          expect(fds.map((fd) => fdIdentity(fd))).toEqual(files);
        } finally {
          expect(closeFds(fds)).toBe(fds.length);
        }
      },
    ),
    { numRuns: 60 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
