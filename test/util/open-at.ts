/** Test utility: a file the program opens at a given fd number. */
import { closeSync, openSync } from 'node:fs';

/** Opens `path` until the kernel gives it `fd` (the lowest free number); the others are closed. Returns `fd`. */
export function openAt(path: string, fd: number): number {
  const others: number[] = [];
  try {
    for (;;) {
      const got = openSync(path, 'r');
      if (got === fd) return got;
      others.push(got);
      if (got > fd) throw new Error(`opening ${path} skipped fd ${fd} (got ${got})`);
    }
  } finally {
    for (const other of others) closeSync(other);
  }
}
