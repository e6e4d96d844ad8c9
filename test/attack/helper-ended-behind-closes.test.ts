/**
 * A helper daemon closes what a uid's clients leave on the background
 * closer, at most 8 threads a uid, and the socket of a connection it ends
 * there too, as that uid's. A client can hand it fds whose close blocks
 * (lingering TCP sockets: SO_LINGER on, unsent data to a peer that does
 * not read; an hour here, test/util/linger-attacker.ts) and so fill its
 * uid's threads. The daemon must still tell a client of that uid at once
 * when it ends its connection (idle timeout, HelperDaemon.close()), and
 * stop at once on SIGTERM:
 *
 * - in-process, root's own connections (root's closes are one owner's,
 *   capped as any uid's): the client's call in flight and its next call
 *   reject with a typed error (QuotaExceededError for the idle timeout),
 *   not once its socket's close(2), queued behind the blocked closes, is
 *   done (an hour);
 * - a daemon process holding such fds (given, or being closed) exits 0 on
 *   SIGTERM: the process's exit ends the closes (the kernel does not
 *   linger for an exiting process).
 *
 * A deadline of this test's own (`within`, far above what any of it takes)
 * turns a hang into a TimeoutError that names it; the lingering closes end
 * once the test resets their peers (linger.end()).
 */
import { closeFd, connect, FdBridgeError, PROBE_COMMAND, type Connection } from '../../src';
import { openFdTable } from '../../src/fd';
import { backgroundClosesPending } from '../../src/test-hooks';
import { HelperDaemon } from '../../src/transports/helper-daemon';
import { statusWhen } from '../util/helper-status';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

/** Past the 8 closer threads one uid gets: some of its closes wait queued behind the blocked ones. */
const LINGERING = 10;

/** How a call ended: its error's class and code (a typed error), or 'resolved'. */
function outcome(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => 'resolved',
    (err: unknown) => (err instanceof FdBridgeError ? `${err.name} ${err.code}` : `untyped: ${String(err)}`),
  );
}

async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 10));
}

const describeWithPython = hasPython() ? describe : describe.skip;

describeWithPython("a connection the daemon ends while its uid's closes are blocked", () => {
  // `holder`: the connection that gave the lingering fds (its command's
  // sweep blocks the closer as the connection ends); `another`: a second
  // connection of the same uid, made once the first one's closes are blocked.
  test.each([
    ['daemon.close()', 'another'],
    ['daemon.close()', 'holder'],
    ['the idle timeout', 'another'],
    ['the idle timeout', 'holder'],
  ] as const)('ended by %s (%s connection): its calls reject with a typed error at once', async (ending, victimIs) => {
    const before = openFdTable(process.pid);
    const linger = await lingeringSocket(LINGERING);
    const daemon = HelperDaemon.start({
      socketPath: `@fdbridge-ended-behind-closes-${process.pid}`,
      diagnostics: true,
      limits: { idleTimeoutMs: ending === 'the idle timeout' ? 500 : 0 },
    });
    const conns: Connection[] = [];
    try {
      const holder = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath });
      conns.push(holder);
      await holder.dupFileDescriptors(linger.fds);
      for (const fd of linger.fds) closeFd(fd); // the daemon's copies are the last references now
      let victim = holder;
      if (victimIs === 'another') {
        // Its CLOSED waits for the closes: not awaited (it settles when the daemon ends it).
        void holder.close().catch(() => undefined);
        await until(() => daemon.status().fdsClosing === LINGERING);
        victim = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath });
        conns.push(victim);
      }
      let inFlight: Promise<string> | undefined;
      let closed: Promise<void>;
      if (ending === 'daemon.close()') {
        inFlight = outcome(victim.call('hang'));
        closed = daemon.close();
      } else {
        // Idle: nothing in flight (a call in flight is not idle).
        closed = daemon.idle();
      }
      await within(closed, 60000, `${ending} resolving`);
      // The client has its end now: the call it had in flight and the next one fail, typed.
      const calls = await within(
        Promise.all([inFlight ?? Promise.resolve('none'), outcome(victim.call('echo', 1))]),
        30000,
        "the victim's calls settling",
      );
      // An idle timeout is said first (a REFUSED naming the quota); daemon.close() just hangs up.
      expect(calls).toEqual(
        ending === 'the idle timeout'
          ? ['none', 'QuotaExceededError ERR_FDBRIDGE_QUOTA']
          : ['PeerExitedError ERR_FDBRIDGE_PEER_EXITED', expect.stringMatching(/^(PeerExitedError ERR_FDBRIDGE_PEER_EXITED|ClosedError ERR_FDBRIDGE_CLOSED)$/)],
      );
    } finally {
      await linger.end(); // resets the peers: every close ends
      for (const c of conns) await c.close().catch(() => undefined);
      await daemon.close();
      await until(() => backgroundClosesPending() === 0);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(120000));
});

describeWithPython('a daemon process holding fds whose close blocks for an hour', () => {
  // `held`: a connection's command holds them; `closing`: the connection
  // closed, its fds in the daemon's closer (blocked there, some queued).
  test.each(['held', 'closing'] as const)('exits 0 on SIGTERM, its client told at once (fds %s)', async (state) => {
    const before = openFdTable(process.pid);
    const linger = await lingeringSocket(LINGERING);
    const socketPath = `@fdbridge-sigterm-behind-closes-${process.pid}`;
    let daemon: HelperProcess | undefined = await startHelperProcess(socketPath);
    let conn: Connection | undefined;
    try {
      conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
      await conn.dupFileDescriptors(linger.fds);
      for (const fd of linger.fds) closeFd(fd); // the daemon's copies are the last references now
      let closing: Promise<string> | undefined;
      if (state === 'closing') {
        closing = outcome(conn.close());
        await statusWhen(socketPath, (s) => s.fdsClosing === LINGERING);
      } else {
        await statusWhen(socketPath, (s) => s.fdsHeld === LINGERING);
      }
      const inFlight = outcome(conn.call('hang'));
      // Fails (TimeoutError) where the blocked closes keep the daemon alive for their linger time.
      expect(await within(daemon.stop('SIGTERM'), 90000, 'the daemon exiting after SIGTERM')).toEqual({ code: 0, signal: null });
      daemon = undefined;
      expect(await within(Promise.all([inFlight, closing ?? 'none']), 30000, "the client's calls settling")).toEqual([
        state === 'closing' ? 'ClosedError ERR_FDBRIDGE_CLOSED' : 'PeerExitedError ERR_FDBRIDGE_PEER_EXITED',
        state === 'closing' ? 'resolved' : 'none',
      ]);
    } finally {
      if (daemon) await daemon.stop('SIGKILL');
      await conn?.close().catch(() => undefined);
      await linger.end();
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(180000));
});
