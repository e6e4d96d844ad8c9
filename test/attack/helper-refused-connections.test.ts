/**
 * A DUP's fds are in the daemon from the moment it is read, before any
 * quota is checked, and the daemon reads every readable connection in one
 * turn of its event loop. One allowed user blocks its 8 closer threads
 * (lingering TCP sockets given in a DUP and left), so that the fds of its
 * refused DUPs wait behind them, then sends a DUP of 253 fds, past its
 * quota, on each of 6 connections at once. Were each connection read in
 * that turn, the uid would put 6 messages' fds in the daemon (6 x 253),
 * waiting there for the linger time (an hour here). While messages of a
 * uid wait to be handed to JS, another of its connections is read only if
 * its fds held, waiting to be closed and waiting in the batch fit its
 * quota: it is past its quota by one message at most, however many
 * connections it has; then the daemon holds its reading until its closes
 * end. Run as root, the attacker as nobody.
 */
import { diffFdTables, openFdTable } from '../../src/fd';
import { dupSender, MAX_FDS, whileLoopHeld } from '../util/dup-flood';
import { rootServed, statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

const CONNECTIONS = 6;
const QUOTA = 100;

describeRoot("one user's DUPs past its quota on many connections at once put one message past it, not one a connection (attacker: nobody)", () => {
  (hasPython() ? test : test.skip)('of 6 DUPs of 253 fds readable in one turn, its closes blocked, one is refused and waits; the others wait in the kernel; root is served; the fd table returns', async () => {
    const args = ['--allow-uid', String(NOBODY), '--max-fds-per-uid', String(QUOTA), '--max-connections-per-uid', String(CONNECTIONS + 4), '--verbose'];
    await withAttackedDaemon('refused-connections', args, {}, async (d) => {
      const { daemon, name, socketPath, baseline, memfd } = d;
      // nobody blocks its 8 closer threads: the fds of its refused DUPs will wait behind them.
      const lingering = await d.blockClosers(8);
      const sender = d.runAsNobody(dupSender(name, CONNECTIONS));
      expect(await sender.line('ready')).toEqual({ ready: CONNECTIONS });
      // Every DUP is queued while the daemon's loop is held: all 6 connections are readable in its next turn.
      await whileLoopHeld(socketPath, async () => {
        sender.child.stdin?.write('send\n');
        expect(await sender.line('sent')).toEqual({ sent: CONNECTIONS });
      });
      // The first DUP read is refused; its fds wait behind the blocked closes, and nobody is held.
      await statusWhen(socketPath, (s) => s.stats.quotaHits.uidFds >= 1 && s.stats.readingHeld >= 1);
      // Root is served meanwhile (each round trip turns the daemon's loop, in which it would read nobody's other DUPs).
      for (let i = 0; i < 3; i++) await rootServed(socketPath, memfd);
      const during = await statusOf(socketPath);
      expect({ uidFds: during.stats.quotaHits.uidFds, fdsClosing: during.fdsClosing, readingHeld: during.stats.readingHeld }).toEqual({
        uidFds: 1,
        fdsClosing: 8 + MAX_FDS,
        readingHeld: 1,
      });
      // Those 261 waiting to be closed, nobody's 6 connections (each a
      // socket and the pidfd that watches its client), the lingering
      // attacker's ended socket.
      expect(diffFdTables(baseline, openFdTable(daemon.pid)).opened.length).toBeLessThanOrEqual(8 + MAX_FDS + 2 * CONNECTIONS + 1);

      // Once the lingering closes end, nobody is read again: each of its DUPs is refused in turn, and every fd closed.
      await d.release(lingering);
      await statusWhen(socketPath, (s) => s.stats.quotaHits.uidFds === CONNECTIONS && s.fdsClosing === 0);
      sender.child.stdin?.write('done\n');
      await sender.exited();
      await statusWhen(socketPath, (s) => s.socketsClosing === 0 && !s.uids.some((u) => u.uid === NOBODY));
      await rootServed(socketPath, memfd);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(180000));
});
