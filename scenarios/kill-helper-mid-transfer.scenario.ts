/**
 * Fault: the helper daemon is SIGKILLed with duplications and a call in
 * flight. Pending requests reject with PeerExitedError, the
 * client keeps no fd; after the daemon is restarted (on the same socket) a
 * new connection works. Uses the run's own daemon through ctx.helper, which
 * restarts it.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PeerExitedError, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';
import { killWithRequestsPending } from './support/faults';

const scenario: Scenario = {
  name: 'kill-helper-mid-transfer',
  description: 'a helper daemon SIGKILLed with requests in flight fails them with PeerExitedError; after a restart a new connection works',
  transports: ['helper'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    const helper = ctx.helper;
    if (!helper) return ctx.skip('the harness offers no helper control (ctx.helper)');
    const source = makeMemfd('helper-doomed');
    try {
      const conn = await ctx.connect(PROBE_COMMAND);
      const pid = conn.location.pid;
      assert.equal(pid, helper.pid);
      await conn.dupFileDescriptors([source, source]);
      const requests: Array<Promise<unknown>> = [conn.call('hang')];
      for (let i = 0; i < ctx.rng.int(50, 200); i++) {
        requests.push(ctx.rng.next() < 0.8 ? conn.dupFileDescriptor(source) : conn.dupFileDescriptors([source, source, source]));
      }
      const { rejected, elapsedMs } = await killWithRequestsPending(ctx, pid, requests, (reason) => assert.equal(reason.transport, 'helper'));
      await assert.rejects(conn.call('echo', 1), PeerExitedError);
      await conn.close();
      await helper.restart();
      const next = await ctx.connect(PROBE_COMMAND);
      assert.notEqual(next.location.pid, pid);
      const [fd] = await next.dupFileDescriptors([source]);
      assert.deepEqual(await remoteIdentities(next, [fd as number]), [wireIdentity(source)]);
      await closeRemote(next, [fd as number]);
      await next.close();
      ctx.count('faultsSurvived');
      ctx.note(`${rejected.length} of ${requests.length} requests rejected ${elapsedMs.toFixed(0)} ms after SIGKILL; helper restarted as pid ${helper.pid}`);
    } finally {
      closeAll([source]);
    }
  },
};

export default scenario;
