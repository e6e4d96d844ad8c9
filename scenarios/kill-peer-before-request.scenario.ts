/**
 * Fault: the command's process dies before it reads the request. It is
 * SIGSTOPped, the requests are sent (single duplications, folded ones, a
 * 600-fd batch of three frames, a call), and it is SIGKILLed with all of
 * them unread in its socket (and the rest in our send queue): every one
 * rejects with PeerExitedError, the fds in flight die with
 * the socket (none is left here, not even a pin or a queued duplicate),
 * close() is clean, and a new connection works. pidfd kills the
 * connection's own process (the child transport has the same in
 * kill-child-before-request-read); helper kills a daemon of the scenario's
 * own, then starts a new one on the same path (the stale socket replaced).
 */
import type { Scenario } from '../harness/types';
import { sleep } from './support/common';
import { proveSurvived, stopProcess, withFaultyPeer } from './support/faults';

const scenario: Scenario = {
  name: 'kill-peer-before-request',
  description:
    'a command process SIGKILLed with requests unread (stopped first) fails each with PeerExitedError, leaves no fd, closes cleanly, and a new connection works',
  // child: kill-child-before-request-read does the same on the child transport.
  transports: ['pidfd', 'helper'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    await withFaultyPeer(ctx, {}, async ({ peer, conn, sources, baseline }) => {
      await conn.call('echo', 'ready');
      const pid = conn.location.pid;
      await stopProcess(pid);
      const requests: Array<Promise<unknown>> = [
        ...Array.from({ length: ctx.rng.int(1, 40) }, () => conn.dupFileDescriptor(ctx.rng.pick(sources))),
        conn.dupFileDescriptors(Array.from({ length: 600 }, () => ctx.rng.pick(sources))),
        conn.call('echo', 'never read'),
      ];
      // Let the folded duplications leave (a microtask) and the send queue fill.
      await sleep(20);
      const since = performance.now();
      process.kill(pid, 'SIGKILL');
      ctx.count('faultsInjected');
      await proveSurvived(peer, conn, requests, since, baseline, sources);
    });
  },
};

export default scenario;
