/**
 * direct and worker: when a connection closes, the duplicates it made for
 * its command and the command did not adopt are closed. Each is a copy of a
 * caller's file, and the caller may have closed its own once the call was
 * made: the copy is then the file's last reference, and close(2) of the
 * last reference to a TCP socket with SO_LINGER and unsent data waits out
 * the linger time (CONFORMANCE: close can block). So those closes run on
 * the background closer: neither the caller's event loop (direct sweeps
 * there) nor the worker's thread (whose end close() waits for) blocks in
 * one, and close() resolves once it is done or given up on (its number is
 * out of the fd table by then).
 *
 * The scene (test/util/linger-attacker.ts: lingeringSocket): python3 makes
 * a lingering TCP socket and hands it to this process; a command that does
 * not adopt gets a duplicate, the caller closes its copy, and the
 * connection is closed. A watcher thread looks at this process's main
 * thread and at the command's thread; one found blocked in the close is
 * recorded and the close ended at once (python resets the connection), so
 * the test ends either way, however loaded the machine is.
 */
import { join } from 'node:path';

import { closeFd, connect } from '../../src';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

/** Its tid() names the thread it runs on. */
const THREAD_SELF = { module: join(__dirname, '..', 'fixtures', 'thread-self-command.js'), export: 'ThreadSelfCommand' };

const TRANSPORTS = ['direct', 'worker'] as const;

(hasPython() ? test.each(TRANSPORTS) : test.skip.each(TRANSPORTS))(
  "%s: close() hands an unadopted duplicate that is a lingering socket's last reference to the background closer; no thread of the connection blocks in its close",
  async (transport) => {
    const linger = await lingeringSocket();
    try {
      const conn = await connect(transport, { command: THREAD_SELF });
      try {
        // The command's thread: the worker's (direct: the main thread, watched already).
        linger.watch((await conn.call('tid')) as number);
        expect(await conn.dupFileDescriptor(linger.fd)).toBeGreaterThanOrEqual(0); // not adopted: the connection's to close
      } finally {
        closeFd(linger.fd); // the caller's copy: the duplicate is now the last reference
        await conn.close();
      }
      // Expected: null. Before, 'main thread, syscall 3: wait_woken <
      // sk_stream_wait_close < __tcp_close < tcp_close' (direct) or the
      // worker's thread in the same place (worker; close() waited for it).
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end(); // ends the background close too (the reset)
    }
  },
);
