/**
 * A command closes the fds it adopted from its client (the log command its
 * log fd, when the client redirects it again or the connection ends; the
 * probe command those named in closeAdopted(), and the rest in its close()),
 * and such a close can block as long as the client chose: a TCP socket with
 * SO_LINGER and unsent data waits out its linger time once its last
 * reference goes. An allowed user (nobody) makes the command adopt such
 * sockets, closes its own copies and hangs up: the command's closes are
 * then the last ones. In a helper daemon they run on the background closer,
 * as the client's uid's (counted with its fds being closed), never on the
 * event loop, where they would stall every other client for the linger
 * time (an hour here). Run as root, the attacker as nobody.
 */
import { connect, LOG_COMMAND } from '../../src';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon, type AttackerMode } from '../util/linger-attacker';
import { isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/** Each command that closes fds it adopted: how the attacker makes it adopt them, how many, and what it answered. */
const CASES: Array<{ command: string; mode: AttackerMode; count: number; answers: Record<string, number> }> = [
  // READY, DUP_OK, RESULT: the log command adopted the lingering socket as its log.
  { command: 'log', mode: 'log', count: 1, answers: { ready: 2, dupOk: 5, redirected: 7 } },
  // READY, DUP_OK, RESULT: the probe command adopted both; it closes one in closeAdopted(), the other in close().
  { command: 'probe', mode: 'probe', count: 2, answers: { ready: 2, dupOk: 5, adopted: 7 } },
];

describeRoot("a command's close of an fd it adopted never blocks the daemon (attacker: nobody, an allowed uid)", () => {
  (hasPython() ? test : test.skip).each(CASES)("the $command command's lingering adopted fds are closed on the background closer, as nobody's; root is served meanwhile; the fd table returns", async ({ mode, count, answers }) => {
    await withAttackedDaemon(`adopted-close-${mode}`, ['--allow-uid', String(NOBODY)], {}, async (d) => {
      const { daemon, socketPath, baseline, memfd } = d;
      const attacker = d.attack(mode, count);
      expect(await attacker.line('ready')).toEqual(answers);
      // nobody hung up: its command closed, and the closes of the fds it adopted wait (for an hour).
      // The typed connect timeout of each status is what fails a daemon whose loop is stuck.
      await statusWhen(socketPath, (s) => !s.uids.some((u) => u.uid === NOBODY) && s.fdsClosing === count);
      // Root is served meanwhile.
      const c = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
      try {
        await c.call('redirectLogToFd', await c.dupFileDescriptor(memfd));
        await c.call('log', 'served');
      } finally {
        await c.close();
      }
      expect((await statusOf(socketPath)).fdsClosing).toBe(count);

      // Once the linger ends (the peer resets), the close is done and the daemon's fd table is as it was.
      await d.release(attacker);
      await statusWhen(socketPath, (s) => s.fdsClosing === 0);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(120000));
});
