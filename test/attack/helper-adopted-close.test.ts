/**
 * A command closes the fds it adopted from its client (the log command its
 * log fd, when the client redirects it again or the connection ends), and
 * such a close can block as long as the client chose: a TCP socket with
 * SO_LINGER and unsent data waits out its linger time once its last
 * reference goes. An allowed user (nobody) makes the log command adopt one
 * as its log, closes its own copies and hangs up: the command's close is
 * then the last one. In a helper daemon that close runs on the background
 * closer, as the client's uid's (counted with its fds being closed), never
 * on the event loop, where it would stall every other client for the
 * linger time (an hour here). Run as root, the attacker as nobody.
 */
import { connect, LOG_COMMAND } from '../../src';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';

const describeRoot = isRoot ? describe : describe.skip;

describeRoot("a command's close of an fd it adopted never blocks the daemon (attacker: nobody, an allowed uid)", () => {
  test("the log command's lingering log fd is closed on the background closer, as nobody's; root is served meanwhile; the fd table returns", async () => {
    if (!hasPython()) return;
    await withAttackedDaemon('adopted-close', ['--allow-uid', String(NOBODY)], {}, async (d) => {
      const { daemon, socketPath, baseline, memfd } = d;
      const attacker = d.attack('log', 1);
      // READY, DUP_OK, RESULT: the log command adopted the lingering socket as its log.
      expect(await attacker.line('redirected')).toEqual({ ready: 2, dupOk: 5, redirected: 7 });
      // nobody hung up: its command closed, and the close of its log fd waits (for an hour).
      // The typed connect timeout of each status is what fails a daemon whose loop is stuck.
      await statusWhen(socketPath, (s) => !s.uids.some((u) => u.uid === NOBODY) && s.fdsClosing === 1);
      // Root is served meanwhile.
      const c = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
      try {
        await c.call('redirectLogToFd', await c.dupFileDescriptor(memfd));
        await c.call('log', 'served');
      } finally {
        await c.close();
      }
      expect((await statusOf(socketPath)).fdsClosing).toBe(1);

      // Once the linger ends (the peer resets), the close is done and the daemon's fd table is as it was.
      await d.release(attacker);
      await statusWhen(socketPath, (s) => s.fdsClosing === 0);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, 120000);
});
