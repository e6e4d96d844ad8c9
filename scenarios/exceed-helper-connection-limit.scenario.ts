/**
 * More clients than a helper daemon serves at once (--max-connections):
 * each one past the limit is refused (PeerRefusedError, "quota
 * connections") instead of costing the daemon an fd; the ones in place keep
 * being served, and a slot freed is a slot given.
 */
import { strict as assert } from 'node:assert';

import { PeerRefusedError, PROBE_COMMAND, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { connectError, daemonStatus, goodClient, goodRoundTrip, withQuotaDaemon } from './support/quota';

const LIMIT = 4;

const scenario: Scenario = {
  name: 'exceed-helper-connection-limit',
  description: 'connections past a helper daemon\'s limit are refused (PeerRefusedError), counted, and the ones in place keep being served',
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    await withQuotaDaemon(ctx, ['--max-connections', String(LIMIT)], async (daemon) => {
      const open: Connection[] = [];
      try {
        for (let i = 0; i < LIMIT; i++) open.push(i === 0 ? await goodClient(daemon.socketPath) : await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath }));
        const attempts = ctx.rng.int(3, 12);
        for (let i = 0; i < attempts; i++) {
          ctx.count('badInputsTried');
          const err = await connectError(ctx, daemon.socketPath);
          assert.ok(err instanceof PeerRefusedError && /quota connections/.test(err.message), `connection ${i} past the limit: ${String(err)}`);
          ctx.count('badInputsRejected');
          await goodRoundTrip(open[0] as Connection, i);
        }
        // Free two slots: one for the status request, one for a newcomer.
        await (open.pop() as Connection).close();
        await (open.pop() as Connection).close();
        const status = await daemonStatus(daemon.socketPath);
        assert.equal(status.stats.quotaHits.connections, attempts, 'the daemon counted each refusal');
        const newcomer = await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath });
        open.push(newcomer);
        assert.equal(await newcomer.call('echo', 'in'), 'in');
        ctx.note(`${attempts} connections past a limit of ${LIMIT} refused; the clients in place were served throughout`);
      } finally {
        for (const c of open) await c.close();
      }
    });
  },
};

export default scenario;
