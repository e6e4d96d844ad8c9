/**
 * A leak report never blames the wrong thing. A connection made before a
 * check, whose command dies during it (the code under test kills it, or
 * it crashes), is ended by the library: it closes its own fds for that
 * connection (a child or pidfd connection's socket and the pidfd watching
 * the process; a worker connection's thread ends, and libuv closes its
 * loop's epoll, pipes, eventfd, and the lazily opened /dev/null and
 * inotify fds with it). checkFdLeaks lists each of those as "open before
 * the test, closed during it", the wrong-fd close it fails a test for
 * (expectNoFdLeaks and toLeakNoFds throw FdLeakError), although the code
 * under test closed none of them: fdbridge knows them as its own (it
 * refuses their numbers with EBADF), as the runtime's fds, which a check
 * sets aside, are the runtime's. A fault test written the README's way
 * (the connection outside, the fault inside the check) cannot pass.
 *
 * The scene: a connection is made before the check; inside it, the
 * command is told to exit (ProbeCommand.exit: the process, or on worker
 * the thread) and the pending call rejects with PeerExitedError; the
 * check's settle time lets the library finish. Expected: nothing closed.
 * Fails: the connection's own fds listed as closed during the test.
 */
import { checkFdLeaks, connect, PeerExitedError, PROBE_COMMAND } from '../../src';

test.each([['child'], ['pidfd'], ['worker']] as const)(
  "%s: a check during which the command dies does not list the library's own fds of that connection as closed by the test",
  async (transport) => {
    const conn = await connect(transport, { command: PROBE_COMMAND });
    try {
      const report = await checkFdLeaks(
        async () => {
          await expect(conn.call('exit', 1)).rejects.toBeInstanceOf(PeerExitedError);
        },
        { settleMs: 500 },
      );
      expect(report.leaks).toEqual([]);
      // Expected []. Fails with the connection's socket and pidfd (child, pidfd:
      // 'socket:[…]', 'anon_inode:[pidfd]') or the worker's loop fds ('anon_inode:[eventpoll]',
      // 'pipe:[…]', 'anon_inode:[eventfd]', '/dev/null', 'anon_inode:inotify').
      expect(report.closed.map((c) => c.target)).toEqual([]);
    } finally {
      await conn.close();
    }
  },
);
