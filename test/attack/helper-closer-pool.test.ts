/**
 * The helper daemon closes its clients' fds on the background closer's
 * threads, one uid's closes on 8 of them at most, because a close can block
 * (a TCP socket with SO_LINGER and unsent data waits up to its linger
 * time). Eight allowed users together can fill the pool's 64 shared
 * threads: each gives 8 lingering sockets in a DUP and hangs up, and the
 * command's sweep of them blocks 8 threads for the linger time (an hour
 * here). The other uids' closes must go on: a uid with no close running
 * gets a thread of the closer's reserve, so that root's and nobody's round
 * trips, each of which waits for closes (closeAdopted answers once its fd
 * is closed, CLOSED once the command's fds are), keep being served while
 * the eight wait. Run as root; the attackers as uids 20001-20008, nobody as
 * an honest other user.
 */
import { connect } from '../../src';
import { ROUND_TRIP, roundTrip, statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/** The attackers' uids: as many as it takes to fill the shared threads, 8 closes blocked each. */
const ATTACKERS = [20001, 20002, 20003, 20004, 20005, 20006, 20007, 20008];
const PER_UID = 8;
const ROUNDS = 3;

/** As nobody: ROUNDS round trips at the daemon at `socketPath`; prints {served}. */
const HONEST = (socketPath: string): string => `
  const { connect, makeMemfd, closeFd } = require(${JSON.stringify(DIST_SRC)});
  ${ROUND_TRIP}
  (async () => {
    const fd = makeMemfd('honest');
    let served = 0;
    for (let i = 0; i < ${ROUNDS}; i++) {
      await roundTrip(connect, ${JSON.stringify(socketPath)}, fd, { trustPeer: { uids: [0] } });
      served++;
    }
    closeFd(fd);
    console.log(JSON.stringify({ served }));
  })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack) })); process.exit(1); });`;

describeRoot("eight users' blocked closes fill the closer's shared threads; every other uid's closes go on (attackers: 8 allowed uids)", () => {
  (hasPython() ? test : test.skip)("root's and nobody's round trips, each waiting for its closes, are served while 64 closes block; the fd table returns", async () => {
    await withAttackedDaemon('closer-pool', ['--allow-uid', [NOBODY, ...ATTACKERS].join(','), '--verbose'], {}, async (d) => {
      const { daemon, socketPath, baseline, memfd } = d;
      // Each attacker gives 8 lingering sockets in a DUP and hangs up: its command's sweep blocks 8 closer threads.
      const attackers = ATTACKERS.map((uid) => d.attack('dup', PER_UID, uid));
      for (const a of attackers) expect(await a.line('ready')).toEqual({ ready: 2, dupOk: 5 }); // READY, DUP_OK
      // Every attacker's 8 closes are in a close (its ended socket waits behind them): 64 threads blocked.
      await statusWhen(
        socketPath,
        (s) => s.fdsClosing === ATTACKERS.length * PER_UID && s.socketsClosing === ATTACKERS.length && !s.uids.some((u) => ATTACKERS.includes(u.uid)),
      );

      // Root's round trips, and nobody's, are served meanwhile.
      for (let i = 0; i < ROUNDS; i++) await roundTrip(connect, socketPath, memfd, {});
      const honest = d.runAsNobody(HONEST(socketPath));
      expect(await honest.line('served')).toEqual({ served: ROUNDS });
      await honest.exited();
      // Their fds were closed before they were answered; the attackers' still wait.
      expect((await statusOf(socketPath)).fdsClosing).toBe(ATTACKERS.length * PER_UID);
      // Their ended connections' sockets, closed there too, are closed (the attackers' still wait behind their closes).
      await statusWhen(socketPath, (s) => s.socketsClosing === ATTACKERS.length && s.fdsClosing === ATTACKERS.length * PER_UID);

      // Once the lingering closes end, every fd is closed and the daemon's fd table is as it was.
      for (const a of attackers) await d.release(a);
      await statusWhen(socketPath, (s) => s.fdsClosing === 0 && s.socketsClosing === 0);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(180000));
});
