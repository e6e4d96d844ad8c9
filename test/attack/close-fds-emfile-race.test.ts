/**
 * closeFd and closeFds with no number free at or above the fd floor (a
 * full table under a low RLIMIT_NOFILE): a number closed by two threads at
 * once is closed once, and neither close takes a socket another thread of
 * fdbridge's made at the number in between. Each run is a process of its
 * own (test/attack/fixtures/close-emfile-race.js) whose table is full: per
 * round the main thread and a worker close the same numbers at or above
 * the floor at the same moment (the worker's list led by numbers of its
 * own below the floor), while another worker opens socket pairs of
 * fdbridge's own, which can take those numbers only once a close freed
 * them, and checks each is still registered and carries a message. No
 * round may close a number more than once between the two closes, no pair
 * may be broken, and the process must end (a socket of libuv's closed under
 * it aborts the process). Generated: rounds, how many numbers both close,
 * how many of its own lead the worker's list, the pairs' kind.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { openFdTable } from '../../src/fd';
import { fdTableSettles, runFixtureAtFdLimit } from '../util/processes';
import { scaled } from '../util/time-scale';

const FIXTURE = join(__dirname, 'fixtures', 'close-emfile-race.js');
// Half of it is the fd floor: the shared numbers sit at the top of the
// table, the worker's own below the floor.
const NOFILE = 512;

interface Seen {
  doubled?: number[];
  failures?: string[];
  made?: boolean;
  errors?: string[];
  error?: string;
}

/** Runs the fixture under `prlimit --nofile=NOFILE`; its JSON line, or how it ended instead. */
function runRace(params: { rounds: number; shared: number; lead: number; kind: string; hangMs: number }): Promise<Seen | string> {
  return runFixtureAtFdLimit<Seen>(NOFILE, FIXTURE, params);
}

test(
  'generated: two threads closing the same numbers in a full table close each once and no socket of fdbridge made meanwhile',
  async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1200, max: 1600 }),
        fc.integer({ min: 2, max: 3 }),
        fc.integer({ min: 60, max: 150 }),
        fc.constantFrom('seqpacket', 'stream', 'dgram'),
        async (rounds, shared, lead, kind) => {
          const seen = await runRace({ rounds, shared, lead, kind, hangMs: scaled(10_000) });
          expect(seen).toEqual({ doubled: [], failures: [], made: true, errors: [] });
        },
      ),
      { numRuns: 2 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(600_000),
);
