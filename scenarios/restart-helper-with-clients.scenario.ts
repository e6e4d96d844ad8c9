/**
 * Fault: the run's helper daemon restarts while several clients are
 * connected, each with a call pending, duplications in flight and
 * duplicates it was given: once gracefully (SIGTERM: the daemon closes
 * every connection, running each command's close(), and removes its socket)
 * and once by SIGKILL (its socket file left behind, stale). Either way
 * every request still pending rejects with PeerExitedError
 * (none is lost; what the daemon answered before it went stays answered),
 * later requests fail the same way at once, close() resolves, and each
 * client connects again to the new daemon on the same path and works.
 * (kill-helper-mid-transfer: one client, SIGKILL, many requests in flight.)
 */
import { strict as assert } from 'node:assert';

import { PeerExitedError, PROBE_COMMAND, ProcessFdSnapshot, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';
import { assertFdTableBack, faultSources, settleAll } from './support/faults';

const CLIENTS = 4;

const scenario: Scenario = {
  name: 'restart-helper-with-clients',
  description:
    'a helper daemon restarted (SIGTERM, then SIGKILL) under connected clients fails their pending requests with PeerExitedError; each reconnects to the new daemon',
  transports: ['helper'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    const helper = ctx.helper;
    if (!helper) return ctx.skip('the harness offers no helper control (ctx.helper)');
    const sources = faultSources();
    const opened: Connection[] = [];
    const connect = async (): Promise<Connection> => {
      const c = await ctx.connect(PROBE_COMMAND);
      opened.push(c);
      return c;
    };
    try {
      const clientBaseline = new ProcessFdSnapshot(process.pid, 'client');
      for (const how of ['SIGTERM', 'SIGKILL'] as const) {
        const oldPid: number = helper.pid;
        const clients = await Promise.all(Array.from({ length: CLIENTS }, connect));
        for (const c of clients) assert.equal(c.location.pid, oldPid);
        // Duplicates the commands hold, never adopted.
        await Promise.all(clients.map((c) => c.dupFileDescriptors(Array.from({ length: ctx.rng.int(1, 50) }, () => ctx.rng.pick(sources)))));
        const hangs = clients.map((c) => c.call('hang'));
        const since = performance.now();
        if (how === 'SIGKILL') process.kill(oldPid, 'SIGKILL');
        // SIGTERM (sent before restart() first awaits) or reaping the killed
        // one, then a new daemon on the same path.
        const restarted = helper.restart();
        ctx.count('faultsInjected');
        // Sent as the daemon goes: unread, answered, or refused (EPIPE) as it happens.
        const inFlight = clients.flatMap((c) => [
          ...Array.from({ length: ctx.rng.int(1, 20) }, () => c.dupFileDescriptor(ctx.rng.pick(sources))),
          c.dupFileDescriptors(Array.from({ length: ctx.rng.int(1, 300) }, () => ctx.rng.pick(sources))),
        ]);
        const settled = await settleAll([...hangs, ...inFlight], since);
        ctx.peak('settleAfterFaultMs', settled.elapsedMs);
        let rejected = 0;
        for (const [i, s] of settled.results.entries()) {
          if (i < hangs.length) assert.equal(s.status, 'rejected', `${how}: a pending call rejected`);
          if (s.status === 'fulfilled') continue; // answered before the daemon went
          rejected++;
          assert.ok(s.reason instanceof PeerExitedError, `${how}: PeerExitedError, not ${String(s.reason)}`);
          assert.equal(s.reason.pid, oldPid);
          assert.equal(s.reason.transport, 'helper');
        }
        for (const c of clients) {
          await assert.rejects(c.dupFileDescriptor(sources[0] as number), PeerExitedError);
          await c.close();
          await c.close();
        }
        await restarted;
        assert.notEqual(helper.pid, oldPid, 'a new daemon');
        // Each client connects again, to the new daemon at the same path.
        const again = await Promise.all(clients.map(() => connect()));
        for (const c of again) {
          assert.equal(c.location.pid, helper.pid);
          const [a] = await c.dupFileDescriptors([sources[1] as number]);
          assert.deepEqual(await remoteIdentities(c, [a as number]), [wireIdentity(sources[1] as number)]);
          await closeRemote(c, [a as number]);
          await c.close();
        }
        await assertFdTableBack(clientBaseline, `client, after the ${how} restart`);
        ctx.count('faultsSurvived');
        ctx.note(`${how}: ${rejected} of ${settled.results.length} pending requests rejected with PeerExitedError ${settled.elapsedMs.toFixed(0)} ms after; ${CLIENTS} clients reconnected to pid ${helper.pid}`);
      }
    } finally {
      for (const c of opened) await c.close();
      closeAll(sources);
    }
  },
};

export default scenario;
