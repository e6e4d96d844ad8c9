/**
 * Fault: the command's process dies while the connection closes
 * (FDBRIDGE_FAILPOINT=on-close: it SIGKILLs itself when the client's CLOSE
 * arrives, before the command's close() and before answering CLOSED), with
 * duplicates given to it and never adopted, and a call pending. close()
 * still resolves (the EOF ends the wait; it does not sit out
 * its grace period) and again when called twice; the pending call rejects
 * with ClosedError; the fds the dead process held die with it; nothing is
 * left here; a new connection works.
 */
import { strict as assert } from 'node:assert';

import { ClosedError } from '../src';
import type { Scenario } from '../harness/types';
import { assertFdTableBack, processState, settleAll, withFaultyPeer } from './support/faults';

const scenario: Scenario = {
  name: 'kill-peer-during-close',
  description: 'a command process killed on receiving CLOSE still lets close() resolve, twice, with nothing left behind; a new connection works',
  transports: ['child', 'pidfd', 'helper'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    await withFaultyPeer(ctx, { FDBRIDGE_FAILPOINT: 'on-close' }, async ({ peer, conn, sources, baseline }) => {
      const pid = conn.location.pid;
      // Duplicates the command never adopts: its close() would have closed them.
      const given = await conn.dupFileDescriptors(Array.from({ length: ctx.rng.int(1, 300) }, () => ctx.rng.pick(sources)));
      assert.equal(given.length, new Set(given).size);
      const pending = conn.call('hang');
      const since = performance.now();
      const closing = conn.close();
      ctx.count('faultsInjected');
      const settled = await settleAll([closing, pending], since);
      ctx.peak('settleAfterFaultMs', settled.elapsedMs);
      assert.equal(settled.results[0]?.status, 'fulfilled', 'close() resolved');
      const call = settled.results[1] as PromiseRejectedResult;
      assert.ok(call.reason instanceof ClosedError, `the pending call: ClosedError, not ${String(call.reason)}`);
      await conn.close();
      assert.equal(conn.closed, true);
      await assert.rejects(conn.dupFileDescriptor(sources[0] as number), ClosedError);
      if (peer.daemon) {
        // Its socket closes as it exits, a moment before it is a zombie.
        await peer.daemon.exited();
        assert.equal(peer.daemon.exitStatus?.signal, 'SIGKILL', 'the daemon died of its failpoint');
      } else {
        // close() waited for the command's process to end (a zombie at most, until it is reaped).
        assert.ok([undefined, 'Z', 'X'].includes(processState(pid)), `pid ${pid} is gone`);
      }
      await assertFdTableBack(baseline, 'client');
      await peer.proveRecovery(sources[0] as number);
      await peer.stop(true);
      await assertFdTableBack(baseline, 'client, after the new connection');
      ctx.count('faultsSurvived');
      ctx.note(`close() resolved ${settled.elapsedMs.toFixed(0)} ms after CLOSE killed pid ${pid} holding ${given.length} unadopted fds`);
    });
  },
};

export default scenario;
