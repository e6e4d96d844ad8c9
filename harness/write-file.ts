/** Writing the harness's output files. */
import { lstatSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Writes `text` to `path` (creating its directory). A regular file, or a
 * name that does not exist yet, is replaced through a temporary file, so
 * readers never see half a file. Anything else the name is (a symlink, a
 * FIFO, a character device such as /dev/stdout or /dev/full) is written
 * through: a rename would replace the link, FIFO or device node itself
 * with a regular file, and a device's refusal (ENOSPC) would go unseen.
 */
export function writeFileAtomic(path: string, text: string): void {
  let existing: ReturnType<typeof lstatSync> | undefined;
  try {
    existing = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing !== undefined && !existing.isFile()) {
    writeFileSync(path, text, 'utf8');
    return;
  }
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, 'utf8');
  renameSync(tmp, path);
}
