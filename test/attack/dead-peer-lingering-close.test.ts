/**
 * A dead peer never hangs a caller, and close() is no way to hang one
 * either: when a child or pidfd connection's command process dies, or the
 * caller closes the connection, the client closes what it held for
 * requests not yet delivered (pidfd: the pins the command had not pulled;
 * child and helper: the copies in the send queue behind a full socket). Such a copy
 * can be the last reference to its file: the caller may close its own copy
 * once the call is made (the queue and the pins hold their own for that
 * reason). close(2) of the last reference to a TCP socket with SO_LINGER
 * and unsent data waits out the linger time (CONFORMANCE: close can block),
 * so such a close must not run on the caller's event loop (the helper
 * daemon closes what its clients gave on background threads for the same
 * reason).
 *
 * The scene: python3 makes a lingering TCP socket (its peer never reads,
 * SO_LINGER 3600 s) and hands it to this process; the command's process is
 * stopped (so it reads and pulls nothing; eight calls of 190 KB made first
 * fill the socket, so that on child and helper the duplication waits in
 * the send queue; on helper the stopped process is the daemon, one this
 * test starts), the socket is duplicated, the caller closes its copy, and then
 * the command's process is killed (pidfd) or the caller closes the
 * connection (pidfd, child, helper). (child with the process killed blocks the
 * same way when the queued copy is still there as the death is seen, but
 * whether it is depends on timing, so it is not staged here.) A watcher thread looks at
 * the main thread's kernel state until the test is over: if it finds the
 * main thread blocked in a lingering close, it records that and has python
 * reset the connection (RST at the peer), which ends the close at once, so
 * the test ends either way. Deterministic: a close on the main thread blocks
 * until that reset, so the watcher finds it however loaded the machine is;
 * a close elsewhere never puts the main thread in that state.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ClosedError, closeFd, connect, PeerExitedError, PROBE_COMMAND } from '../../src';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { startHelperProcess } from '../util/processes';

const CASES = [
  ['pidfd', 'its command process killed'],
  ['pidfd', 'the connection closed'],
  ['child', 'the connection closed'],
  ['helper', 'the connection closed'],
] as const;

(hasPython() ? test.each(CASES) : test.skip.each(CASES))("%s, %s: the caller's event loop does not block in the close of a held copy that is a lingering socket's last reference", async (transport, end) => {
  // The lingering socket, from python (which has closed its copy): ours is its only reference.
  const linger = await lingeringSocket();
  try {
    const lingering = linger.fd;
    // helper: a daemon of this test's own, stopped below as the command's process is on child and pidfd.
    const helperDir = transport === 'helper' ? mkdtempSync(join(tmpdir(), 'fdbridge-attack-linger-')) : '';
    const helper = transport === 'helper' ? await startHelperProcess(join(helperDir, 'helper.sock'), ['--diagnostics']) : undefined;
    const conn = await connect(transport, { command: PROBE_COMMAND, ...(helper ? { socketPath: join(helperDir, 'helper.sock') } : {}) });
    try {
      process.kill(conn.location.pid, 'SIGSTOP'); // pulls nothing from now on
      while (!/State:\s+T/.test(readFileSync(`/proc/${conn.location.pid}/status`, 'utf8'))) await new Promise((r) => setTimeout(r, 5));
      // Calls too large for the socket's buffer to take them all: the duplication queues behind them.
      const fill = Array.from({ length: 8 }, () => conn.call('echo', 'q'.repeat(190000)).catch(() => 'failed'));
      const request = conn.dupFileDescriptor(lingering).then(
        () => 'resolved',
        (err: unknown) => (err instanceof PeerExitedError ? 'PeerExitedError' : err instanceof ClosedError ? 'ClosedError' : String(err)),
      );
      closeFd(lingering); // the caller's copy: the pin (pidfd) or the queued copy (child) is now the last reference
      const closing = end === 'its command process killed' ? (process.kill(conn.location.pid, 'SIGKILL'), Promise.resolve()) : conn.close();
      expect(await request).toBe(end === 'its command process killed' ? 'PeerExitedError' : 'ClosedError');
      await closing;
      await Promise.all(fill);
    } finally {
      await conn.close();
      if (helper) {
        process.kill(helper.pid, 'SIGCONT');
        await helper.stop();
        rmSync(helperDir, { recursive: true, force: true });
      }
    }
    // Expected: null (the main thread never waited in that close). Fails with
    // 'main thread, syscall 3: wait_woken < sk_stream_wait_close < __tcp_close < tcp_close'
    // (syscall 436, close_range, in a plain node run): the client closed the
    // pin or queued copy on its event loop, which stayed there until the watcher had the
    // peer reset (for the linger time, 3600 s, without it).
    expect(await linger.verdict()).toBeNull();
  } finally {
    // End any close still waiting (a background one) and python.
    await linger.end();
  }
});
