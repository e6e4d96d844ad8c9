/**
 * Files with long absolute paths, for tests of what carries a path (READY's
 * constructorFds, a leak report's targets).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

let made = 0;

/** A new file under `dir` whose absolute path is about `length` bytes long (directories of up to 200 bytes each). */
export function fileOfLength(dir: string, length: number): string {
  let path = join(dir, `long${++made}`);
  mkdirSync(path);
  while (path.length + 202 < length) {
    path = join(path, 'd'.repeat(200));
    mkdirSync(path);
  }
  const file = join(path, 'x'.repeat(Math.max(1, Math.min(200, length - path.length - 1))));
  writeFileSync(file, 'x');
  return file;
}
