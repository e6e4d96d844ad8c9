/**
 * The helper daemon closes its clients' fds on the background closer's
 * threads, one uid's on 8 at most, because a close can block (a TCP socket
 * with SO_LINGER and unsent data waits up to its linger time). Eight
 * allowed users fill the pool's 64 shared threads (8 lingering sockets each,
 * given in a DUP and left); past them, a uid with no close running still
 * gets a thread of the reserve. Were the reserve a fixed number of threads,
 * as many more allowed users each with one close blocked would take all of
 * it, and every other uid's closes, and the replies that wait for them,
 * would wait for the linger time. Here 64 more do: root's round trips
 * (closeAdopted answers once its fd is closed) must still be served. Run as root;
 * the attackers as uids 20201-20208 (8 closes blocked each) and
 * 20211-20274 (one each).
 */
import { connect } from '../../src';
import { roundTrip, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

const uids = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
/** 8 closes blocked each: the shared threads. */
const SHARED = uids(20201, 8);
/** One close blocked each: one reserve thread each. */
const RESERVE = uids(20211, 64);
const PER_SHARED = 8;
const BLOCKED = SHARED.length * PER_SHARED + RESERVE.length;

describeRoot("72 users' blocked closes take every shared and reserve thread of a fixed pool; root's closes go on (attackers: 72 allowed uids)", () => {
  (hasPython() ? test : test.skip)("root's round trip, which waits for its closes, is served while 128 closes block; the fd table returns", async () => {
    const all = [...SHARED, ...RESERVE];
    await withAttackedDaemon('closer-reserve', ['--allow-uid', all.join(',')], {}, async (d) => {
      const { daemon, socketPath, baseline, memfd } = d;
      // The shared threads first: 8 lingering sockets from each of 8 uids, every one of them in a close
      // (each uid's ended socket waits behind its 8 closes).
      const shared = SHARED.map((uid) => d.attack('dup', PER_SHARED, uid));
      for (const a of shared) expect(await a.line('ready')).toEqual({ ready: 2, dupOk: 5 }); // READY, DUP_OK
      const sharedBlocked = SHARED.length * PER_SHARED;
      await statusWhen(socketPath, (s) => s.fdsClosing === sharedBlocked && s.socketsClosing === SHARED.length && !s.uids.some((u) => all.includes(u.uid)));
      // Then one lingering socket from each of 64 more: each takes a reserve thread (its ended socket waits behind it).
      const reserve = RESERVE.map((uid) => d.attack('dup', 1, uid));
      for (const a of reserve) expect(await a.line('ready')).toEqual({ ready: 2, dupOk: 5 });
      await statusWhen(socketPath, (s) => s.fdsClosing === BLOCKED && s.socketsClosing === all.length && !s.uids.some((u) => all.includes(u.uid)));
      const attackers = [...shared, ...reserve];

      // Root is served meanwhile: its fds' closes get a thread (closeAdopted answers once its fd is closed).
      for (let i = 0; i < 3; i++) await roundTrip(connect, socketPath, memfd, {});
      // Its ended connections' sockets and the command's other fds are closed too; the attackers' still wait.
      await statusWhen(socketPath, (s) => s.fdsClosing === BLOCKED && s.socketsClosing === all.length);

      // Once the lingering closes end, every fd is closed and the daemon's fd table is as it was.
      for (const a of attackers) await d.release(a);
      await statusWhen(socketPath, (s) => s.fdsClosing === 0 && s.socketsClosing === 0);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(240000));
});
