import { closeSync, constants as fsConstants, openSync, writeSync } from 'node:fs';

import { makePipe } from '../../src';

/**
 * A pipe whose buffer is full (filled through a non-blocking open file of
 * its write end, whatever its capacity; the write end's own flags left as
 * they are) and that nobody reads: a write into `w` waits until someone
 * reads `r`. Both ends are the caller's to close.
 */
export function fullPipe(): [r: number, w: number] {
  const [r, w] = makePipe();
  const filler = openSync(`/proc/self/fd/${w}`, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
  const chunk = Buffer.alloc(65536, 'f');
  try {
    for (;;) writeSync(filler, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
  } finally {
    closeSync(filler);
  }
  return [r, w];
}
