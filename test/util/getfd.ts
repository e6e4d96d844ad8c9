/**
 * Test utility: a GETFD frame as a pidfd client sends one, each number
 * beside the file open at it in this process (device and inode), or beside
 * no file's (0, 0) where none is open.
 */
import { fileAt } from '../../src/fd';
import { encodeGetfd } from '../../src/protocol';

export function getfdOf(id: number, fds: readonly number[]): Buffer {
  return encodeGetfd(
    id,
    fds,
    fds.map((fd) => fileAt(fd) ?? { dev: 0n, ino: 0n }),
  );
}
