/**
 * closeFd (public) checks that a number is not one fdbridge holds for
 * itself and closes it in one step: a caller's close of a number it does
 * not hold (a double close) never closes a socket another thread of
 * fdbridge's made at that number between the look and the close. Two
 * threads: a worker opens socket pairs of fdbridge's own (at or above the
 * fd floor, registered, as connections are) and checks each works, while
 * the main thread closes the numbers they take with closeFd over and over
 * (test/util/own-socket-race.ts). Every closeFd is refused (EBADF: not
 * open, or fdbridge's own), every pair works, and the fd table is as
 * before. Generated: the pairs' kind, how many numbers from the floor the
 * main thread closes, and how many pairs the worker opens.
 */
import fc from 'fast-check';

import { closeFd, SystemError } from '../../src';
import { openFdTable } from '../../src/fd';
import { raceOwnSockets } from '../util/own-socket-race';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

test(
  "generated: closeFd racing another thread's own sockets at the same numbers never closes one",
  async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('seqpacket', 'stream', 'dgram'), fc.integer({ min: 2, max: 4 }), fc.integer({ min: 1000, max: 3000 }), async (kind, width, rounds) => {
        const seen = await raceOwnSockets({ kind, rounds, width }, closeFd, (err) => err instanceof SystemError && err.code === 'EBADF');
        expect(seen).toEqual({ taken: [], otherErrors: [], failures: [], raced: { tries: true, overlap: true } });
      }),
      { numRuns: 4 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(600_000),
);
