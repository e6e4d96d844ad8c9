/**
 * One uid's clients together past what a helper daemon allows one uid
 * (--max-connections-per-uid, --max-fds-per-uid) and past what it allows
 * everyone (--max-fds-total): each connection past the per-uid bound is
 * refused (PeerRefusedError, quota 'uidConnections'), each duplication past
 * a shared fd bound is refused (QuotaExceededError 'uidFds' / 'totalFds')
 * although every client is within its own quota, nothing past a bound is
 * held, and letting go of fds makes room again.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PeerRefusedError, PROBE_COMMAND, QuotaExceededError, type Connection, type QuotaName } from '../src';
import type { Scenario, ScenarioContext } from '../harness/types';
import { closeAll } from './support/common';
import { connectError, daemonStatus, duplicationError, withQuotaDaemon } from './support/quota';

/** Connections of this (one) uid allowed; one more is kept free for the status request. */
const PER_UID = 3;
/** Per client; two clients together go past the shared bound. */
const PER_CLIENT = 8;
const SHARED = 12;

/**
 * Two clients fill the shared bound (8 + 4 fds), then every further
 * duplication, on either, is refused with `quota`; one released makes room
 * for one. Returns how many were refused.
 */
async function fillShared(ctx: ScenarioContext, a: Connection, b: Connection, quota: QuotaName): Promise<number> {
  const source = makeMemfd('shared');
  try {
    const held: number[] = [];
    for (let i = 0; i < PER_CLIENT; i++) held.push(await a.dupFileDescriptor(source));
    for (let i = 0; i < SHARED - PER_CLIENT; i++) await b.dupFileDescriptor(source);
    const attempts = ctx.rng.int(2, 8);
    for (let i = 0; i < attempts; i++) {
      ctx.count('badInputsTried');
      const conn = ctx.rng.int(0, 1) === 0 ? a : b;
      const batch = ctx.rng.int(1, 3);
      const err = await duplicationError(conn, source, batch);
      // a is at its own quota: a batch there may meet 'fds' first; b never does.
      const expected = conn === a ? ['fds', quota] : [quota];
      assert.ok(err instanceof QuotaExceededError && expected.includes(err.quota), `duplication ${i} past the shared bound: ${String(err)}`);
      ctx.count('badInputsRejected');
    }
    await a.call('adopt', [held[0]]);
    await a.call('closeAdopted', [held[0]]);
    // Every refusal above was answered once the fds it brought were closed
    // (until then they count against the uid's limit and the total, as the
    // fds a client gave that wait for the closer do): the room made here is
    // there for the very next duplication.
    const err = await duplicationError(b, source, 1);
    assert.equal(err, undefined, `the duplication a released fd made room for: ${String(err)}`);
    return attempts;
  } finally {
    closeAll([source]);
  }
}

const scenario: Scenario = {
  name: 'exceed-helper-uid-limits',
  description: "one uid's clients together past the per-uid connection and fd bounds, and past the daemon's fd total, are refused with typed errors and counted",
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    const args = ['--max-connections-per-uid', String(PER_UID + 1), '--max-fds', String(PER_CLIENT)];
    for (const [quota, bound] of [
      ['uidFds', ['--max-fds-per-uid', String(SHARED)]],
      ['totalFds', ['--max-fds-per-uid', String(SHARED * 10), '--max-fds-total', String(SHARED)]],
    ] as const) {
      await withQuotaDaemon(ctx, [...args, ...bound], async (daemon) => {
        const open: Connection[] = [];
        try {
          for (let i = 0; i < PER_UID; i++) open.push(await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath }));
          // The last one allowed, taken; the next is refused.
          open.push(await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath }));
          ctx.count('badInputsTried');
          const err = await connectError(ctx, daemon.socketPath);
          assert.ok(err instanceof PeerRefusedError && err.quota === 'uidConnections', `a connection past the per-uid bound: ${String(err)}`);
          ctx.count('badInputsRejected');
          await (open.pop() as Connection).close(); // room for the status request
          const refused = await fillShared(ctx, open[0] as Connection, open[1] as Connection, quota);
          const status = await daemonStatus(daemon.socketPath);
          assert.equal(status.stats.quotaHits.uidConnections, 1, 'the daemon counted the refused connection');
          assert.equal(status.stats.quotaHits[quota] + status.stats.quotaHits.fds, refused, 'the daemon counted each refused duplication');
          assert.equal(status.fdsHeld, SHARED, 'nothing past the shared bound is held');
          ctx.note(`${quota}: ${refused} duplications past a shared bound of ${SHARED} refused, one connection past ${PER_UID + 1} per uid refused`);
        } finally {
          for (const c of open) await c.close();
        }
      });
    }
  },
};

export default scenario;
