/**
 * The daemon's fd total (--max-fds-total) counts the fds its clients left
 * and those waiting to be closed; a DUP's fds are in the daemon from the
 * moment it is read, before any quota is checked. Four allowed users each
 * block their 8 closer threads (lingering TCP sockets given in a DUP and
 * left), so that the fds of their refused DUPs wait behind them, then each
 * sends a DUP of 253 fds, past the total, on its own connection, all in one
 * turn of the daemon's loop. Were every connection read in that turn, each
 * uid's first message would pass (each uid's own gate sees nothing of its
 * own waiting), putting 4 x 253 fds past the total, waiting there for the
 * linger time (an hour here). While any message waits to be handed to JS,
 * another is read only if the daemon's fds held, waiting to be closed and
 * waiting in the batch fit the total: it is past the total by one message
 * at most, however many uids send; then the daemon holds the reading of
 * every uid with fds waiting until its closes end. Run as root, the
 * attackers as uids 20101-20104.
 */
import { diffFdTables, openFdTable } from '../../src/fd';
import { dupSender, MAX_FDS, whileLoopHeld } from '../util/dup-flood';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, spawnAsUid, type NobodyProcess } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

const UIDS = [20101, 20102, 20103, 20104];
const BLOCKED = 8;
const TOTAL = 40;

describeRoot("four users' DUPs past the daemon's fd total, read in one turn, put one message past it, not one a uid (attackers: 4 allowed uids)", () => {
  (hasPython() ? test : test.skip)('of 4 DUPs of 253 fds readable in one turn, their closes blocked, one is refused and waits; the others wait in the kernel; the fd table returns', async () => {
    const args = ['--allow-uid', UIDS.join(','), '--max-fds-total', String(TOTAL), '--verbose'];
    await withAttackedDaemon('total-gate', args, {}, async (d) => {
      const { daemon, name, socketPath, baseline } = d;
      const senders: NobodyProcess[] = [];
      try {
        // Each uid blocks its 8 closer threads: the fds of its refused DUPs will wait behind them.
        const lingering = UIDS.map((uid) => d.attack('dup', BLOCKED, uid));
        for (const a of lingering) expect(await a.line('ready')).toEqual({ ready: 2, dupOk: 5 }); // READY, DUP_OK
        await statusWhen(
          socketPath,
          (s) => s.fdsClosing === UIDS.length * BLOCKED && s.socketsClosing === UIDS.length && !s.uids.some((u) => UIDS.includes(u.uid)),
        );
        for (const uid of UIDS) senders.push(spawnAsUid(uid, process.execPath, ['-e', dupSender(name, 1)]));
        for (const s of senders) expect(await s.line('ready')).toEqual({ ready: 1 });
        // Every DUP is queued while the daemon's loop is held: all 4 connections are readable in its next turn.
        await whileLoopHeld(socketPath, async () => {
          for (const s of senders) s.child.stdin?.write('send\n');
          for (const s of senders) expect(await s.line('sent')).toEqual({ sent: 1 });
        });
        // The first DUP read is refused; its fds wait behind the blocked closes, and every uid with fds waiting is held.
        await statusWhen(socketPath, (s) => s.stats.quotaHits.totalFds >= 1 && s.stats.readingHeld >= 1);
        // Turns of the daemon's loop (each status connection is one), in which it would read the other DUPs.
        for (let i = 0; i < 3; i++) await statusOf(socketPath);
        const during = await statusOf(socketPath);
        expect({ totalFds: during.stats.quotaHits.totalFds, fdsClosing: during.fdsClosing }).toEqual({
          totalFds: 1,
          fdsClosing: UIDS.length * BLOCKED + MAX_FDS,
        });
        // Those waiting to be closed, the senders' 4 connections (each a socket
        // and the pidfd that watches its client), the lingering attackers' 4
        // ended sockets.
        expect(diffFdTables(baseline, openFdTable(daemon.pid)).opened.length).toBeLessThanOrEqual(UIDS.length * BLOCKED + MAX_FDS + 3 * UIDS.length);

        // Once the lingering closes end, each uid is read again: each DUP is refused in turn, and every fd closed.
        for (const a of lingering) await d.release(a);
        await statusWhen(socketPath, (s) => s.stats.quotaHits.totalFds === UIDS.length && s.fdsClosing === 0);
      } finally {
        for (const s of senders) {
          s.child.stdin?.end('done\n');
          await s.exited();
        }
      }
      await statusWhen(socketPath, (s) => s.socketsClosing === 0 && !s.uids.some((u) => UIDS.includes(u.uid)));
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(180000));
});
