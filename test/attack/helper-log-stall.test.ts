/**
 * One client of a shared helper daemon must not be able to stall the
 * others. The built-in log command writes each line into the fd the client
 * redirected it to; a client that redirects it into a pipe it never reads
 * and logs more than the pipe holds must only hold back its own log, never
 * the daemon's event loop (every other client's connect, duplications and
 * calls).
 */
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, LOG_COMMAND, type LogCommand } from '../../src';
import { closeFd, makePipe, openFdTable } from '../../src/fd';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { readUpTo } from '../util/pipe-read';

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-log-stall-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test.each([
  ['a pipe nobody reads', 'pipe'],
  ['a pipe nobody reads, opened non-blocking', 'nonblocking-pipe'],
] as const)('a client logging into %s does not stall the daemon for another client', async (_what, kind) => {
  const daemonBefore = openFdTable(helper.pid);
  const stalled = await connect('helper', { command: LOG_COMMAND, socketPath });
  const [r, w] = makePipe();
  // Read here without blocking this thread (a new open file of the pipe's read end).
  const reader = openSync(`/proc/self/fd/${r}`, constants.O_RDONLY | constants.O_NONBLOCK);
  closeFd(r);
  let writer = w;
  if (kind === 'nonblocking-pipe') {
    // The same pipe through /proc: the daemon's write end has O_NONBLOCK (EAGAIN when full).
    writer = openSync(`/proc/self/fd/${w}`, constants.O_WRONLY | constants.O_NONBLOCK);
    closeFd(w);
  }
  try {
    const log = stalled.proxy<LogCommand>();
    await log.redirectLogToFd(await stalled.dupFileDescriptor(writer));
    closeFd(writer);
    // More than a pipe holds (64 KiB): the write cannot finish while nobody reads.
    const pending = log.log('x'.repeat(150_000)).then(
      () => 'written',
      (e: unknown) => e,
    );

    // Another client, meanwhile: it connects, duplicates and calls, answered
    // in the daemon's own time (a deadline of the library's, not the test's).
    const other = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 5000 });
    const file = join(dir, `other-${kind}.log`);
    const fd = openSync(file, 'a');
    try {
      const otherLog = other.proxy<LogCommand>();
      await otherLog.redirectLogToFd(await other.dupFileDescriptor(fd));
      await otherLog.log('served');
      expect(readFileSync(file, 'utf8')).toBe('served\n');
    } finally {
      closeSync(fd);
      await other.close();
    }

    // The stalled client reads its pipe at last: its line arrives whole.
    expect(await readUpTo(reader, 150_001)).toBe(150_001);
    expect(await pending).toBe('written');
  } finally {
    // Closing the read end ends a write still blocked in the daemon (EPIPE).
    closeSync(reader);
    await stalled.close();
  }
  expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
});

test('a client that closes while its line is stuck in a pipe: close resolves, and the daemon closes the fd once the write ends', async () => {
  const daemonBefore = openFdTable(helper.pid);
  const stalled = await connect('helper', { command: LOG_COMMAND, socketPath });
  const [r, w] = makePipe();
  try {
    const log = stalled.proxy<LogCommand>();
    await log.redirectLogToFd(await stalled.dupFileDescriptor(w));
    closeFd(w);
    const pending = log.log('y'.repeat(150_000)).then(
      () => 'written',
      (e: unknown) => e,
    );
    const twice = log.log('never started').then(
      () => 'written',
      (e: unknown) => e,
    );
    await stalled.close();
    // The connection ended with the calls still running: they reject.
    expect(await pending).toBeInstanceOf(Error);
    expect(await twice).toBeInstanceOf(Error);
    // The daemon still serves.
    const other = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 5000 });
    expect(await other.call('where')).toMatchObject({ transport: 'helper', pid: helper.pid });
    await other.close();
  } finally {
    closeFd(r); // the stuck write ends (EPIPE), and the daemon closes its copy of the pipe
  }
  expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
});
