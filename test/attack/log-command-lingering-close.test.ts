/**
 * The README's first example: a command gets its own copy of the caller's
 * log fd (`redirectLogToFd(await conn.dupFileDescriptor(fd))`), the caller
 * closes its own ("ours can go"), and `await using` closes the connection.
 * The built-in log command then closes its log fd with closeClientFds,
 * which is "at once" outside a helper daemon. On the direct transport that
 * is the caller's event loop: a log fd that is a TCP socket with SO_LINGER
 * and unsent data (a log shipped to a network sink that is not reading)
 * makes close() block the main thread for the linger time (measured: 10.2 s
 * with SO_LINGER 10, no timer tick meanwhile). The background closer exists
 * for exactly this (README: such a close "on the daemon's event loop would
 * stall every other client"; the library's other copies go there). On
 * worker close() waits out the whole linger time (40.8 s with SO_LINGER
 * 40, the loop free); on child and pidfd it gives up after 10 s.
 *
 * The scene: python3 makes a lingering TCP socket (SO_LINGER 3600 s, its
 * peer never reads) whose only reference is ours; the direct log command
 * adopts a duplicate, the caller closes its copy and closes the
 * connection. A watcher thread (test/util/linger-attacker.ts) finds the
 * main thread in that close, records it and has python reset the peer,
 * which ends the close at once. Expected: null (never blocked there).
 */
import { closeFd, connect, LOG_COMMAND, type LogCommand } from '../../src';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

(hasPython() ? test : test.skip)(
  "direct: closing a log command redirected into a lingering TCP socket does not block the caller's event loop",
  async () => {
    const linger = await lingeringSocket();
    try {
      {
        await using conn = await connect('direct', { command: LOG_COMMAND });
        await conn.proxy<LogCommand>().redirectLogToFd(await conn.dupFileDescriptor(linger.fd)); // the command's own copy
        closeFd(linger.fd); // ours can go: the command's copy is now the only reference
      }
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close
      // < __tcp_close < tcp_close': the log command's close of its log fd ran on the event loop.
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end();
    }
  },
  60000,
);
