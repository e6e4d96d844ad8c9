/** Test utility: makes a number the lowest free one at or above fdbridge's floor. */
import { closeOwnFd } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';

/**
 * fdbridge's own copies of `file` (holdOwnCopy) at every free number from
 * its floor up to `fd` (open): once `fd` is closed, it is the lowest free
 * number there, which fdbridge's next fd takes. Returns the copies.
 */
export function fillUpTo(fd: number, file: number): number[] {
  const made: number[] = [];
  for (;;) {
    const copy = holdOwnCopy(file);
    if (copy > fd) {
      closeOwnFd(copy);
      return made;
    }
    made.push(copy);
  }
}
