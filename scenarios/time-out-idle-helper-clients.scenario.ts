/**
 * Helper clients that hold a connection and do nothing: one that never
 * sends its HELLO (--hello-timeout) and one that goes quiet after it
 * (--idle-timeout) are disconnected and counted; a client with a call
 * running is not idle, and other clients are served throughout.
 */
import { strict as assert } from 'node:assert';

import type { Scenario } from '../harness/types';
import { connectRaw, sayHello } from './support/hostile';
import { daemonStatus, goodClient, goodRoundTrip, hungUpOn, withQuotaDaemon } from './support/quota';

const scenario: Scenario = {
  name: 'time-out-idle-helper-clients',
  description: 'clients that never say HELLO or go idle are disconnected after the timeouts (counted); a busy client is not',
  transports: ['helper'],
  tags: ['fault', 'quota', 'security'],
  async run(ctx) {
    await withQuotaDaemon(ctx, ['--hello-timeout', '300', '--idle-timeout', '600'], async (daemon) => {
      const good = await goodClient(daemon.socketPath);
      // A call running (for as long as this scenario) keeps its client from being idle.
      const long = good.call('later', 60_000, 'kept').catch((e: unknown) => e);
      try {
        const silent = ctx.rng.int(1, 3);
        const idle = ctx.rng.int(1, 3);
        for (let i = 0; i < silent + idle; i++) {
          ctx.count('badInputsTried');
          const raw = await connectRaw(daemon.socketPath);
          try {
            if (i >= silent) await sayHello(raw);
            // Disconnected by the daemon's own timeout (300 or 600 ms); the row's
            // 30 s RowTimeout is the only bound here, 50 times the longer one.
            await hungUpOn(raw);
          } finally {
            raw.close();
          }
          ctx.count('badInputsRejected');
        }
        await goodRoundTrip(good, 0);
        const status = await daemonStatus(daemon.socketPath);
        assert.equal(status.stats.quotaHits.helloTimeout, silent, 'HELLO timeouts counted');
        assert.equal(status.stats.quotaHits.idleTimeout, idle, 'idle timeouts counted');
        ctx.note(`${silent} clients without HELLO and ${idle} idle ones disconnected; the busy client kept`);
      } finally {
        await good.close();
      }
      await long; // ended with the connection
    });
  },
};

export default scenario;
