/**
 * close() is no way to hang the caller (README: "a dead peer never hangs a
 * caller"; the background closer closes the library's copies of the
 * caller's fds off the event loop, since such a copy can be the last
 * reference to a TCP socket with SO_LINGER and unsent data, whose close(2)
 * waits out the linger time). On the remote transport a connected stream
 * socket is relayed (README, Remote commands): the client's side keeps a
 * copy of the caller's socket for its relay, and the caller may close its
 * own copy once the call is made. When the connection closes, the relay's
 * copy is closed on the caller's event loop: with a lingering TCP socket,
 * close() blocks the main thread for the linger time (measured: 12.2 s
 * with SO_LINGER 12, two timer ticks meanwhile).
 *
 * The scene: python3 makes a lingering TCP socket (SO_LINGER 3600 s, its
 * peer never reads) whose only reference is ours; it is duplicated to a
 * remote command (relayed), the caller closes its copy, and closes the
 * connection. A watcher thread (test/util/linger-attacker.ts) finds the
 * main thread in that close, records it and has python reset the peer,
 * which ends the close at once. Expected: null (never blocked there).
 */
import { closeFd, connect, PROBE_COMMAND } from '../../src';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

(hasPython() ? test : test.skip)(
  "remote: close() does not block the event loop in the close of the relay's copy of a lingering TCP socket",
  async () => {
    const linger = await lingeringSocket();
    try {
      const conn = await connect('remote', { command: PROBE_COMMAND });
      try {
        await conn.dupFileDescriptor(linger.fd); // relayed: the client keeps a copy for the relay
        closeFd(linger.fd); // the relay's copy is now the only reference
      } finally {
        await conn.close();
      }
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close
      // < __tcp_close < tcp_close': close() closed the relay's copy on the event loop.
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end();
    }
  },
  60000,
);
