import { readSync } from 'node:fs';

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
