/** Test utilities: the fds of this process that fdbridge holds for itself (its registry), with their targets. */
import { openFdTable } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';

/** The fds of this process fdbridge holds for itself now, each with its /proc/self/fd target. */
export function registeredFds(): Map<number, string> {
  return new Map([...openFdTable()].filter(([fd]) => fdRegistration(fd) !== 0));
}

/** Those registered now that `had` (an earlier registeredFds()) did not list: what was made in between. */
export function registeredSince(had: ReadonlyMap<number, string>): Map<number, string> {
  return new Map([...registeredFds()].filter(([fd]) => !had.has(fd)));
}
