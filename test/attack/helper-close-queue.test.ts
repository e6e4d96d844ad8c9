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
 * serves everyone else. So is it the daemon's: past maxConnections, the
 * waiting sockets counted, every uid is refused, root included (the total
 * and the sockets churned are generated). Run as root, the attacker as
 * nobody; the first daemon at RLIMIT_NOFILE 1024, as a service may be.
 */
import fc from 'fast-check';

import { connect, LOG_COMMAND, openFdTable } from '../../src';
import { PeerRefusedError } from '../../src/errors';
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
  (hasPython() ? test : test.skip)('connections that end: past its connections, waiting sockets included, the uid is refused; every other client is served', async () => {
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

  (hasPython() ? test : test.skip)('generated: connections that end count against maxConnections too: past it, waiting sockets included, every uid is refused (root too); served again once they are closed', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 6 }).chain((max) => fc.tuple(fc.constant(max), fc.integer({ min: 0, max: max - 2 }))),
        async ([max, churned]) => {
          await withAttackedDaemon('close-queue-total', ['--allow-uid', String(NOBODY), '--max-connections', String(max), '--verbose'], {}, async (d) => {
            const { socketPath, baseline } = d;
            // nobody blocks its 8 closer threads; its connection's socket, and each of the `churned` ones after it, wait behind them.
            const lingering = await d.blockClosers(8);
            const churn = d.runAsNobody(CHURN(d.name, churned));
            expect(await churn.line('served')).toEqual({ served: churned, refused: {}, failed: [] });
            await churn.exited();
            const waiting = 1 + churned;
            expect((await statusWhen(socketPath, (s) => s.socketsClosing === waiting)).stats.quotaHits.connections).toBe(0);
            // Root is served beside them up to the daemon's total, not one connection more.
            const open: Array<Awaited<ReturnType<typeof connect>>> = [];
            try {
              for (let i = 0; i < max - waiting; i++) open.push(await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 }));
              const refused = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 }).then(
                async (c) => {
                  await c.close();
                  return undefined;
                },
                (e: unknown) => e,
              );
              expect(refused).toBeInstanceOf(PeerRefusedError);
              expect({ quota: (refused as PeerRefusedError).quota, message: (refused as PeerRefusedError).message }).toEqual({
                quota: 'connections',
                message: expect.stringContaining(`quota connections: this helper serves at most ${max} clients at once (${max - waiting} now, ${waiting} ended ones whose socket waits behind blocked closes)`),
              });
            } finally {
              for (const c of open) await c.close();
            }
            // (A status is a connection too: asked only once root's have ended.)
            const after = await statusOf(socketPath);
            expect({ refused: after.stats.refused, connections: after.stats.quotaHits.connections }).toEqual({ refused: 1, connections: 1 });
            // Once the lingering closes end, the waiting sockets are closed: the daemon serves up to its total again.
            await d.release(lingering);
            await statusWhen(socketPath, (s) => s.socketsClosing === 0 && s.fdsClosing === 0 && s.stats.active === 1);
            const again: Array<Awaited<ReturnType<typeof connect>>> = [];
            try {
              for (let i = 0; i < max - 1; i++) again.push(await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 }));
              // The status asked is the last connection the total allows: every one counted as active.
              expect((await statusOf(socketPath)).stats.active).toBe(max);
            } finally {
              for (const c of again) await c.close();
            }
            await statusWhen(socketPath, (s) => s.stats.active === 1 && s.socketsClosing === 0);
            expect(await fdTableSettles(d.daemon.pid, baseline, 10000)).toBe('');
          });
        },
      ),
      { numRuns: 3, endOnFailure: true, examples: [[[3, 1]]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(180000));
});
