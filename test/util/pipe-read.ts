import { closeSync, constants as fsConstants, openSync, readSync } from 'node:fs';

/**
 * Reads from non-blocking `fd` until `want` bytes came or end of file,
 * turning the event loop (10 ms) whenever nothing is there yet; returns how
 * many came.
 */
export async function readUpTo(fd: number, want: number): Promise<number> {
  const buf = Buffer.alloc(65536);
  let got = 0;
  while (got < want) {
    try {
      const n = readSync(fd, buf);
      if (n === 0) break;
      got += n;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  return got;
}

/**
 * Reads pipe `r` up to `want` bytes or its end of file, through a
 * non-blocking open file of its own (`r`'s flags, shared with whoever else
 * holds its open file, are left as they are), turning the event loop while
 * it waits; returns how many came.
 */
export async function drainPipe(r: number, want: number): Promise<number> {
  const reader = openSync(`/proc/self/fd/${r}`, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    return await readUpTo(reader, want);
  } finally {
    closeSync(reader);
  }
}
