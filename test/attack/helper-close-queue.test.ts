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
import { closeFd, connect, LOG_COMMAND, makeMemfd, openFdTable, type HelperStatus } from '../../src';
import { hasPython, releaseAttacker, spawnAttacker } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY, runAsNobody, type NobodyProcess } from '../util/nobody';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';

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

async function statusOf(socketPath: string): Promise<HelperStatus> {
  const conn = await connect('helper', { command: { name: 'status' }, socketPath, timeoutMs: 20000 });
  try {
    return await conn.call<HelperStatus>('status');
  } finally {
    await conn.close();
  }
}

/** Asks for the daemon's status until `ok` holds (a typed timeout from connect ends a daemon that stopped answering). */
async function statusWhen(socketPath: string, ok: (s: HelperStatus) => boolean): Promise<HelperStatus> {
  for (;;) {
    const s = await statusOf(socketPath);
    if (ok(s)) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describeRoot("one user's blocked closes never take the daemon to its fd limit (attacker: nobody, an allowed uid)", () => {
  test('connections that end: past its connections, waiting sockets included, the uid is refused; every other client is served', async () => {
    if (!hasPython()) return;
    const name = `fdbridge-attack-close-queue-${process.pid}`;
    const socketPath = `@${name}`;
    const daemon: HelperProcess = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY), '--verbose'], { nofile: 1024 });
    let lingering: NobodyProcess | undefined;
    let churn: NobodyProcess | undefined;
    const memfd = makeMemfd('close-queue');
    try {
      const baseline = openFdTable(daemon.pid);
      const { limits } = await statusOf(socketPath);
      const client = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
      // nobody blocks its 8 closer threads: 8 lingering sockets given in a DUP, then it hangs up.
      lingering = spawnAttacker('dup', name, 8);
      expect(await lingering.line('ready')).toEqual({ ready: 2, dupOk: 5 }); // READY, DUP_OK
      // Its connection has ended: the command's sweep handed the 8 to the
      // closer, whose closes of them block, and its socket waits behind them.
      await statusWhen(socketPath, (s) => s.fdsClosing === 8 && s.socketsClosing === 1 && !s.uids.some((u) => u.uid === NOBODY));
      const allowance = limits.maxConnectionsPerUid - 1;

      const rounds = limits.maxConnectionsPerUid + 40;
      churn = runAsNobody(CHURN(name, rounds));
      const result = await churn.line<{ served: number; refused: Record<string, number>; failed: string[] }>('served');
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
      await releaseAttacker(lingering);
      lingering = undefined;
      await statusWhen(socketPath, (s) => s.socketsClosing === 0 && s.fdsClosing === 0);
      const again = runAsNobody(CHURN(name, 1));
      expect(await again.line('served')).toEqual({ served: 1, refused: {}, failed: [] });
      await again.exited();
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    } finally {
      closeFd(memfd);
      if (churn) {
        churn.kill();
        await churn.exited();
      }
      if (lingering) await releaseAttacker(lingering);
      await daemon.stop('SIGKILL');
    }
  }, 180000);
});
