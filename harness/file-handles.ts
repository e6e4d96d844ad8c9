/**
 * Holds every fs.promises FileHandle opened in this process until it is
 * closed, so that one dropped unclosed stays open, and a leak, at the leak
 * oracle's look. Node closes a dropped FileHandle when the garbage
 * collector gets to it (with DEP0137's warning): without this hold, whether
 * the look saw its fd depended on when a collection ran, that is on the
 * rows run before and on allocation, and the verdict did not reproduce.
 *
 * fs.promises.open is wrapped once, when this module loads (the runner
 * loads it before any scenario module), so a scenario's
 * `import { open } from 'node:fs/promises'` calls the wrapper.
 */
import { promises } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** Open FileHandles, by fd: held (a strong reference) until closed. */
const open = new Map<number, FileHandle>();

const original = promises.open;
promises.open = async (...args: Parameters<typeof original>): Promise<FileHandle> => {
  const handle = await original(...args);
  const fd = handle.fd;
  open.set(fd, handle);
  // A FileHandle is an EventEmitter ('close' since Node 15.4), which @types/node does not say.
  (handle as unknown as NodeJS.EventEmitter).once('close', () => {
    if (open.get(fd) === handle) open.delete(fd);
  });
  return handle;
};

/** Whether fd `fd` of this process is an fs.promises FileHandle's that has not been closed. */
export function heldByFileHandle(fd: number): boolean {
  return open.has(fd);
}
