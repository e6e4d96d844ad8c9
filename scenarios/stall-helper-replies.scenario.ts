/**
 * Helper clients that send requests and never read the replies: the daemon
 * stops reading their requests as replies back up, and cuts each one off
 * once its replies sit unread (--stalled-reader-timeout) or past its bound
 * (--max-queued-bytes), instead of buffering for it; other clients are
 * served throughout and the daemon holds nothing for the stalled ones after.
 */
import { strict as assert } from 'node:assert';

import type { Scenario } from '../harness/types';
import { connectRaw, sayHello } from './support/hostile';
import { daemonStatus, floodWithoutReading, goodClient, goodRoundTrip, withQuotaDaemon } from './support/quota';

const scenario: Scenario = {
  name: 'stall-helper-replies',
  description: 'a client that stops reading its replies is disconnected (counted as a queuedBytes quota hit), not buffered for; others are served',
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    await withQuotaDaemon(ctx, ['--max-queued-bytes', String(256 * 1024), '--stalled-reader-timeout', '500'], async (daemon) => {
      const good = await goodClient(daemon.socketPath);
      try {
        const attempts = ctx.rng.int(1, 3);
        for (let i = 0; i < attempts; i++) {
          ctx.count('badInputsTried');
          const raw = await connectRaw(daemon.socketPath);
          try {
            await sayHello(raw);
            const meanwhile = goodRoundTrip(good, i);
            const ending = await floodWithoutReading(raw.fd, ctx.rng.int(2000, 20_000), 100_000);
            assert.ok(ending === 'EPIPE' || ending === 'ECONNRESET', `stalled client ${i} was cut off (its sends ended with ${ending})`);
            await meanwhile;
          } finally {
            raw.close();
          }
          ctx.count('badInputsRejected');
        }
        const status = await daemonStatus(daemon.socketPath);
        assert.equal(status.stats.quotaHits.queuedBytes, attempts, 'the daemon counted each client it cut off');
        assert.equal(status.clients.length, 2, 'only the good client and this status request are left');
        await goodRoundTrip(good, -1);
        ctx.note(`${attempts} clients that stopped reading were cut off; the other client was served throughout`);
      } finally {
        await good.close();
      }
    });
  },
};

export default scenario;
