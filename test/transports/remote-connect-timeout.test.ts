/**
 * remote: connect({ timeoutMs }) against a far side that never answers its
 * HELLO rejects with the typed TimeoutError when the timeout fires, not once
 * the via process is gone (a via that does not exit when its stdin ends is
 * killed only after its grace, 5 s): the caller hears at once, the via's
 * grace and its SIGKILL run on in the background, our ends of its stdio are
 * closed at once, and the via is reaped in the end (the global fd-table
 * check then finds nothing left).
 */
import { connect, PROBE_COMMAND, TimeoutError } from '../../src';
import { diffFdTables, openFdTable, type FdTable } from '../../src/fd';
import { childrenOf, pidExit } from '../util/processes';

/** What is open now that was not in `before`, once our ends of the via's stdio have closed (a stream's close completes on the event loop). */
async function openedSince(before: FdTable): Promise<string[]> {
  for (;;) {
    const { opened, closed } = diffFdTables(before, openFdTable());
    if (closed.length === 0 && opened.every((o) => o.target === 'anon_inode:[pidfd]')) return opened.map((o) => o.target);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A server that never answers and does not exit at the end of its stdin (setInterval keeps it alive); `--` ends node's options before the --command the client appends. */
const SILENT = [process.execPath, '-e', 'setInterval(() => undefined, 1e6)', '--'];

test('the TimeoutError comes while the via still runs; its fds are closed by then, and it is killed and reaped after', async () => {
  expect(childrenOf(process.pid)).toEqual([]);
  const before = openFdTable();
  const err = await connect('remote', { command: PROBE_COMMAND, serve: SILENT, timeoutMs: 200 }).then(
    () => new Error('connected'),
    (e: unknown) => e,
  );
  // In the turn the rejection arrives in: the via's grace (5 s) has not run
  // out, so it cannot have been killed yet, nor have exited by itself.
  const running = childrenOf(process.pid);
  expect({ name: (err as Error).name, code: (err as TimeoutError).code }).toEqual({ name: 'TimeoutError', code: 'ERR_FDBRIDGE_TIMEOUT' });
  expect(err).toBeInstanceOf(TimeoutError);
  expect((err as Error).message).toBe('connect: the remote command was not ready within 200 ms (options.timeoutMs)');
  expect(running).toHaveLength(1);
  // Our ends of its stdio are closed while it runs: all that is left is the
  // pidfd that has it reaped should this thread end first (reapedAtTeardown).
  expect(await openedSince(before)).toEqual(['anon_inode:[pidfd]']);
  // It is killed once its grace is over, and reaped.
  await pidExit(running[0] as number);
  while (childrenOf(process.pid).length > 0) await new Promise((r) => setTimeout(r, 20));
}, 30000);
