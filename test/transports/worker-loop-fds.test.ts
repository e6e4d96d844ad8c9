/**
 * A worker connection's thread opens its event loop's fds (epoll, io_uring,
 * the signal pipe, an eventfd) as it starts, before any of its code runs,
 * at the lowest free numbers: where a number the caller has closed, and may
 * still name, is. Until the thread has registered them as fdbridge's, a
 * connection on another thread that is given such a number must refuse it
 * (EBADF, as for a closed fd), never hand the command a copy of the loop's
 * fd; a file the caller opens meanwhile is its own and passes.
 *
 * The worker is held (holdWorkerStarts) exactly where its loop's fds exist
 * and are not registered; what it opened is read from the fd table.
 */
import { SystemError, connect, LOG_COMMAND, type Connection } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { holdWorkerStarts, loopStartsOpen } from '../../src/test-hooks';

/** /proc/self/fd targets of the fds libuv opens for a loop. */
const LOOP_KINDS = /^(anon_inode:\[(eventpoll|io_uring|eventfd)\]|pipe:\[\d+\])$/;

async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setTimeout(r, 5));
}

/** What naming `fd` on `conn` gives: the error code, or what was delivered. */
function named(conn: Connection, fd: number): Promise<string> {
  return conn.dupFileDescriptor(fd).then(
    (remote) => `delivered (${remote})`,
    (err: unknown) => (err instanceof SystemError ? String(err.code) : String(err)),
  );
}

afterEach(() => holdWorkerStarts(undefined));

describe.each(['direct', 'child'] as const)('named on a %s connection while a worker connection starts', (transport) => {
  test("the new loop's fds are refused with EBADF; a file opened meanwhile is passed", async () => {
    const namer = await connect(transport, { command: LOG_COMMAND });
    const flags = new Int32Array(new SharedArrayBuffer(8));
    try {
      holdWorkerStarts(flags.buffer as SharedArrayBuffer);
      const before = openFdTable();
      const starting = connect('worker', { command: LOG_COMMAND });
      await until(() => Atomics.load(flags, 0) === 1);
      holdWorkerStarts(undefined);
      // Opened by the worker's thread as it started (the caller had closed
      // or never held these numbers).
      const loopFds = [...openFdTable()].filter(([fd, target]) => before.get(fd) !== target && LOOP_KINDS.test(target)).map(([fd]) => fd);
      expect(loopFds.length).toBeGreaterThan(0);
      const outcomes = await Promise.all(loopFds.map((fd) => named(namer, fd)));
      const mine = makeMemfd('opened-while-a-worker-starts');
      const passed = await named(namer, mine);
      closeFd(mine);
      Atomics.store(flags, 1, 1);
      Atomics.notify(flags, 1);
      const worker = await starting;
      await worker.close();
      expect({ outcomes, passed: passed.startsWith('delivered'), open: loopStartsOpen() }).toEqual({
        outcomes: loopFds.map(() => 'EBADF'),
        passed: true,
        open: 0,
      });
    } finally {
      Atomics.store(flags, 1, 1);
      Atomics.notify(flags, 1);
      await namer.close();
    }
  });
});

test('a worker connection that fails to start ends its loop start', async () => {
  const err = await connect('worker', { command: { module: '/nonexistent/fdbridge-command.js', export: 'Nope' } }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  expect(loopStartsOpen()).toBe(0);
});
