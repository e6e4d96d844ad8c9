/**
 * A worker connection's event loop fds are registered as fdbridge's
 * (ownLoopFds) when its thread starts, and a caller naming one is refused
 * (EBADF): a number the caller closed and still names must never hand
 * anyone a copy of the loop's fd. But a loop opens some of its fds only
 * later, on first use: the EMFILE reserve (/dev/null, libuv's
 * loop->emfile_fd) with the loop's first pipe or socket handle, the inotify
 * fd with its first fs.watch. warmLoop() (WarmLoopFds) opens them early for
 * the main thread; the worker transport's thread does not, so a command
 * that spawns a program (pipes) makes the worker's loop open /dev/null, at
 * the lowest free number, after ownLoopFds: never registered, and given out
 * when a caller names that number.
 *
 * Deterministic: the number the caller closes is the lowest free one just
 * before the command runs, and nothing else in this process opens an fd
 * in between.
 */
import { join } from 'node:path';

import { SystemError, connect, LOG_COMMAND, type Connection } from '../../src';
import { closeFd, makeMemfd } from '../../src/fd';

const SPAWNING = { name: 'spawning', module: join(__dirname, 'fixtures', 'spawning-command.js'), export: 'SpawningCommand' };

/** What naming `fd` on `conn` gives: the error code, or what was delivered. */
function named(conn: Connection, fd: number): Promise<string> {
  return conn.dupFileDescriptor(fd).then(
    (remote) => `delivered (${remote})`,
    (err: unknown) => (err instanceof SystemError ? String(err.code) : String(err)),
  );
}

test("a worker loop's EMFILE reserve, opened when its command first spawns a program, is refused when a caller names its number", async () => {
  const namer = await connect('direct', { command: LOG_COMMAND });
  const worker = await connect('worker', { command: SPAWNING });
  try {
    // The caller's file, closed; the caller still names the number (a use after close).
    const stale = makeMemfd('callers-closed-file');
    closeFd(stale);
    expect(await worker.call('run')).toBe(0);
    // Now the worker loop's /dev/null (no other code in this process opens an fd meanwhile). Refused
    // as the loop's, or not open at all (a loop that opened its reserve as it started): EBADF either way.
    // Fails with 'delivered (N)': the command was handed a copy of the loop's /dev/null.
    const outcome = await named(namer, stale);
    expect(outcome).toBe('EBADF');
  } finally {
    await worker.close();
    await namer.close();
  }
});
