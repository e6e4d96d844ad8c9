/**
 * Waits on the fds log lines being written hold (the lanes': each line's
 * copy of its log fd and the eventfd it waits on), bounded by deadlines of
 * the test's own, far above what the lanes' threads take.
 */
import { constants as osConstants } from 'node:os';

import { TimeoutError } from '../../src/errors';
import { closeFd } from '../../src/fd';
import { laneWriterFds, type startLaneWrite } from '../../src/test-hooks';
import { drainPipe } from './pipe-read';
import { scaled } from './time-scale';
import { HangGuard } from './wait-for';
import { within } from './within';

/**
 * Turns the event loop until the lanes hold `n` fds that `had` did not;
 * returns those. A TimeoutError (within) if they have not after a deadline
 * of the test's own, far above what their threads take to start.
 */
export async function lanesGrow(had: ReadonlySet<number>, n: number): Promise<number[]> {
  let waiting = true;
  const grown = (async (): Promise<number[]> => {
    for (;;) {
      const added = laneWriterFds().filter((fd) => !had.has(fd));
      if (added.length >= n || !waiting) return added;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  try {
    return await within(grown, scaled(20_000), `the lanes holding ${n} more fds`);
  } finally {
    waiting = false;
  }
}

/**
 * Blocks this thread (no event loop turn: for a hook that runs inside a
 * leak check's read of the lanes) until the lanes hold none of `fds`: the
 * threads of cancelled lines have handed their copies on and closed their
 * eventfds. A TimeoutError past the hang guard.
 */
export function untilLanesLack(fds: readonly number[]): void {
  const guard = new HangGuard(scaled(20_000));
  while (laneWriterFds().some((fd) => fds.includes(fd))) {
    if (guard.leftMs === 0) throw new TimeoutError(`the lines' fds ${fds.join(', ')} leaving the lanes: not within the hang guard (${guard.ms} ms)`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
  }
}

/**
 * Ends lane writes stuck in pipe `r`/`w`: cancels each and expects each to
 * end with ECANCELED (its copy closed), then closes `w` and closes `r` once
 * read to its end of file.
 */
export async function endStuckWrites(writes: ReadonlyArray<ReturnType<typeof startLaneWrite>>, r: number, w: number): Promise<void> {
  for (const write of writes) write.cancel();
  expect(await Promise.all(writes.map((write) => write.written))).toEqual(writes.map(() => -osConstants.errno.ECANCELED));
  closeFd(w);
  await drainPipe(r, Infinity);
  closeFd(r);
}
