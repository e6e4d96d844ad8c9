/**
 * The helper daemon closes what its clients leave on background threads,
 * one uid's closes on 8 of them at most, because a close can block (a TCP
 * socket with SO_LINGER and unsent data waits up to its linger time). An
 * ended connection's own socket is closed there too, as its uid's (its
 * receive queue may hold such a socket), and so waits behind that uid's
 * blocked closes, holding an fd of the daemon's. One allowed user blocks
 * its 8 threads (lingering sockets given in a DUP and left), then churns
 * connections: were those waiting sockets counted nowhere, the daemon would
 * end at its RLIMIT_NOFILE (accept4 and pidfd_open failing with EMFILE, its
 * other clients' connects reset). Each waiting socket is still its uid's
 * connection: the uid is refused past maxConnectionsPerUid, and the daemon
 * serves everyone else. Run as root, the attacker as nobody; the daemon at
 * RLIMIT_NOFILE 1024, as a service may be.
 */
import { connect, LOG_COMMAND } from '../../src';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/**
 * As nobody, ROUNDS connections to @NAME one after another, each closed
 * once served (after its READY); prints {served, refused: {quota: n}, failed: [message]}.
 */
const CHURN = (name: string, rounds: number): string => `
  const { connect } = require(${JSON.stringify(DIST_SRC)});
  (async () => {
    let served = 0; const refused = {}; const failed = [];
    for (let i = 0; i < ${rounds}; i++) {
      try {
        const c = await connect('helper', { command: { name: 'probe' }, socketPath: ${JSON.stringify(`@${name}`)}, trustPeer: { uids: [0] }, timeoutMs: 20000 });
        await c.close();
        served++;
      } catch (e) {
        if (e.code === 'ERR_FDBRIDGE_REFUSED') refused[e.quota ?? 'none'] = (refused[e.quota ?? 'none'] ?? 0) + 1;
        else failed.push(e.code + ': ' + e.message);
      }
    }
    console.log(JSON.stringify({ served, refused, failed }));
  })();`;

describeRoot("one user's blocked closes never take the daemon to its fd limit (attacker: nobody, an allowed uid)", () => {
  test('connections that end: past its connections, waiting sockets included, the uid is refused; every other client is served', async () => {
    if (!hasPython()) return;
    await withAttackedDaemon('close-queue', ['--allow-uid', String(NOBODY), '--verbose'], { nofile: 1024 }, async (d) => {
      const { daemon, name, socketPath, baseline, memfd } = d;
      const { limits } = await statusOf(socketPath);
      const client = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
      // nobody blocks its 8 closer threads: the command's sweep of its ended
      // connection handed the 8 to the closer, whose closes of them block,
      // and its socket waits behind them.
      const lingering = await d.blockClosers(8);
      const allowance = limits.maxConnectionsPerUid - 1;

      const rounds = limits.maxConnectionsPerUid + 40;
      const churn = d.runAsNobody(CHURN(name, rounds));
      // Its rounds, one after another, take longer than one step's hang guard.
      const result = await churn.line<{ served: number; refused: Record<string, number>; failed: string[] }>('served', scaled(90_000));
      // Exactly its allowance was served; each of those sockets still waits,
      // counted as nobody's; every round past it was refused by that quota,
      // and closed at once (it could never hold an fd: nothing waits for it).
      expect(result).toEqual({ served: allowance, refused: { uidConnections: rounds - allowance }, failed: [] });
      const during = await statusOf(socketPath);
      expect({ socketsClosing: during.socketsClosing, fdsClosing: during.fdsClosing }).toEqual({ socketsClosing: limits.maxConnectionsPerUid, fdsClosing: 8 });
      expect(during.stats.quotaHits.uidConnections).toBe(rounds - allowance);

      // Root's client is served, and so is a new one.
      await client.call('redirectLogToFd', await client.dupFileDescriptor(memfd));
      const other = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
      expect(await other.call('where')).toMatchObject({ transport: 'helper' });
      await other.close();
      await client.close();
      expect(daemon.stderr().split('\n').filter((l) => /EMFILE/.test(l))).toEqual([]);

      // Once the lingering closes end, every waiting socket is closed: the
      // uid is served again, and the daemon's fd table is as it was.
      await d.release(lingering);
      await statusWhen(socketPath, (s) => s.socketsClosing === 0 && s.fdsClosing === 0);
      const again = d.runAsNobody(CHURN(name, 1));
      expect(await again.line('served')).toEqual({ served: 1, refused: {}, failed: [] });
      await again.exited();
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(180000));
});
