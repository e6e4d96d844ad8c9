/**
 * Fault: the command's process dies after a duplication's fds were installed
 * there and before its reply left (FDBRIDGE_FAILPOINT=after-receive: it
 * SIGKILLs itself at exactly that step of the first DUP/GETFD request).
 * The request, the duplications folded behind it and a call all reject with
 * PeerExitedError; the fds it had received die with it;
 * nothing is left here; close() is clean; a new connection works (helper: a
 * new daemon replaces the killed one's stale socket).
 */
import type { Scenario } from '../harness/types';
import { proveSurvived, withFaultyPeer } from './support/faults';

const scenario: Scenario = {
  name: 'kill-peer-after-receive',
  description:
    'a command process killed after receiving a duplication and before replying fails every pending request with PeerExitedError and leaves no fd',
  transports: ['child', 'pidfd', 'helper'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    await withFaultyPeer(ctx, { FDBRIDGE_FAILPOINT: 'after-receive:1' }, async ({ peer, conn, sources, baseline }) => {
      // A call is not a duplication: the failpoint lets it through.
      await conn.call('echo', 'ready');
      const since = performance.now();
      const requests: Array<Promise<unknown>> = [
        conn.dupFileDescriptor(ctx.rng.pick(sources)), // the request it dies on (pidfd: folded with the next)
        ...Array.from({ length: ctx.rng.int(1, 40) }, () => conn.dupFileDescriptor(ctx.rng.pick(sources))),
        // Requests reach the command in the order they were made (a call
        // flushes the folded duplications first): this one is never read.
        conn.call('echo', 'never answered'),
      ];
      ctx.count('faultsInjected');
      await proveSurvived(peer, conn, requests, since, baseline, sources);
    });
  },
};

export default scenario;
