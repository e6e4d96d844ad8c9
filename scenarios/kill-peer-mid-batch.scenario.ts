/**
 * Fault: the command's process dies in the middle of a batch. A 600-fd
 * dupFileDescriptors travels as three frames (253 + 253 + 94);
 * FDBRIDGE_FAILPOINT=after-receive:2 SIGKILLs the process once the second
 * frame's fds are installed there, before its reply (the first frame's
 * reply may or may not have reached us). The batch rejects as a whole with
 * PeerExitedError (all or nothing: no half list), as do
 * the requests behind it; no fd is left here; close() is clean; a new
 * connection works.
 */
import type { Scenario } from '../harness/types';
import { proveSurvived, withFaultyPeer } from './support/faults';

const scenario: Scenario = {
  name: 'kill-peer-mid-batch',
  description:
    'a command process killed between the frames of a 600-fd batch fails the whole batch and everything behind it with PeerExitedError and leaves no fd',
  transports: ['child', 'pidfd', 'helper'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    await withFaultyPeer(ctx, { FDBRIDGE_FAILPOINT: 'after-receive:2' }, async ({ peer, conn, sources, baseline }) => {
      await conn.call('echo', 'ready');
      const since = performance.now();
      const requests: Array<Promise<unknown>> = [
        conn.dupFileDescriptors(Array.from({ length: 600 }, () => ctx.rng.pick(sources))),
        conn.dupFileDescriptors(Array.from({ length: ctx.rng.int(1, 300) }, () => ctx.rng.pick(sources))),
        conn.call('echo', 'never answered'),
      ];
      ctx.count('faultsInjected');
      await proveSurvived(peer, conn, requests, since, baseline, sources);
    });
  },
};

export default scenario;
