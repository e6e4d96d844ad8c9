/**
 * A helper client that keeps duplicating fds into the daemon and never lets
 * go: past its quota (--max-fds) every duplication is refused with a typed
 * QuotaExceededError and nothing more is held for it, while another client
 * on the same daemon is served; releasing some makes room again.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, QuotaExceededError } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { daemonStatus, duplicationError, goodClient, goodRoundTrip, withQuotaDaemon } from './support/quota';

const QUOTA = 8;

const scenario: Scenario = {
  name: 'exceed-helper-fd-quota',
  description: 'duplications past a client\'s fd quota are refused (QuotaExceededError), counted by the daemon, and cost other clients nothing',
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    await withQuotaDaemon(ctx, ['--max-fds', String(QUOTA)], async (daemon) => {
      const source = makeMemfd('hoarded');
      const good = await goodClient(daemon.socketPath);
      const greedy = await ctx.connect(PROBE_COMMAND, { socketPath: daemon.socketPath });
      try {
        const held: number[] = [];
        for (let i = 0; i < QUOTA; i++) held.push(await greedy.dupFileDescriptor(source));
        const attempts = ctx.rng.int(3, 12);
        for (let i = 0; i < attempts; i++) {
          ctx.count('badInputsTried');
          const batch = ctx.rng.int(1, 4);
          const err = await duplicationError(greedy, source, batch);
          assert.ok(err instanceof QuotaExceededError && err.quota === 'fds', `duplication ${i} past the quota: ${String(err)}`);
          ctx.count('badInputsRejected');
          await goodRoundTrip(good, i);
        }
        const status = await daemonStatus(daemon.socketPath);
        assert.equal(status.stats.quotaHits.fds, attempts, 'the daemon counted each refusal');
        assert.equal(status.fdsHeld, QUOTA, 'nothing past the quota is held');
        // Letting go of one makes room for one.
        await greedy.call('adopt', [held[0]]);
        await greedy.call('closeAdopted', [held[0]]);
        await greedy.dupFileDescriptor(source);
        ctx.note(`${attempts} duplications past a quota of ${QUOTA} refused; the other client was served throughout`);
      } finally {
        await greedy.close();
        await good.close();
        closeAll([source]);
      }
    });
  },
};

export default scenario;
