/**
 * A helper client that keeps calls running and piles more on: past its
 * quota (--max-calls) each call is refused at once with a typed
 * QuotaExceededError; the running ones still get their answers, and other
 * clients are served meanwhile.
 */
import { strict as assert } from 'node:assert';

import { PROBE_COMMAND, QuotaExceededError } from '../src';
import type { Scenario } from '../harness/types';
import { daemonStatus, errorOf, goodClient, goodRoundTrip, withQuotaDaemon } from './support/quota';

const QUOTA = 4;

const scenario: Scenario = {
  name: 'exceed-helper-call-quota',
  description: "calls past a client's quota of calls running are refused (QuotaExceededError), the running ones answered, other clients served",
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    await withQuotaDaemon(ctx, ['--max-calls', String(QUOTA)], async (daemon) => {
      const good = await goodClient(daemon.socketPath);
      const busy = await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath });
      try {
        // Calls that run until told: the quota is full for as long as this scenario wants.
        const running = Array.from({ length: QUOTA }, (_, i) => busy.call('later', 60_000, i).then(() => 'answered', () => 'ended'));
        const attempts = ctx.rng.int(3, 12);
        // Requests on one connection are read in order: the calls below reach
        // the daemon after the running ones.
        for (let i = 0; i < attempts; i++) {
          ctx.count('badInputsTried');
          const err = await errorOf(busy.call('echo', i));
          assert.ok(err instanceof QuotaExceededError && err.quota === 'calls', `call ${i} past the quota: ${String(err)}`);
          ctx.count('badInputsRejected');
          await goodRoundTrip(good, i);
        }
        const status = await daemonStatus(daemon.socketPath);
        assert.equal(status.stats.quotaHits.calls, attempts, 'the daemon counted each refusal');
        // Closing the connection ends the running calls (they reject with ClosedError).
        await busy.close();
        assert.deepEqual(await Promise.all(running), new Array<string>(QUOTA).fill('ended'), 'running calls end with the connection');
        ctx.note(`${attempts} calls past a quota of ${QUOTA} running refused; the other client was served throughout`);
      } finally {
        await busy.close();
        await good.close();
      }
    });
  },
};

export default scenario;
