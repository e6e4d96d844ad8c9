/**
 * The child process is SIGKILLed with hundreds of fds in flight (singles and
 * batches, some still waiting in the send queue). Every pending request
 * rejects with PeerExitedError naming the signal; new requests fail at
 * once; the client keeps no fd from any of it. And since the connection is
 * a socketpair, no socket file is left behind (an exchange through a socket
 * file leaves one: reproduce-seed-socket-file-orphan).
 */
import { strict as assert } from 'node:assert';
import { readdirSync } from 'node:fs';

import { makeMemfd, makePipe, PeerExitedError, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { boundSocketPathsOf, closeAll } from './support/common';
import { killWithRequestsPending } from './support/faults';

const scenario: Scenario = {
  name: 'kill-child-mid-transfer',
  description: 'SIGKILL of the child with hundreds of fds in flight fails every pending request with PeerExitedError and leaves no fd and no socket file',
  transports: ['child'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['peer-death'],
  async run(ctx) {
    const [r, w] = makePipe();
    const sources = [r, w, makeMemfd('doomed-a'), makeMemfd('doomed-b')];
    const conn = await ctx.connect(PROBE_COMMAND);
    const pid = conn.location.pid;
    try {
      assert.deepEqual(boundSocketPathsOf(pid), [], 'the child has no socket bound to a path');
      // Warm up, so the kill really lands mid-transfer.
      await conn.dupFileDescriptors(sources);
      const requests: Array<Promise<unknown>> = [];
      for (let i = 0; i < ctx.rng.int(200, 400); i++) {
        requests.push(
          ctx.rng.next() < 0.8
            ? conn.dupFileDescriptor(ctx.rng.pick(sources))
            : conn.dupFileDescriptors(Array.from({ length: ctx.rng.int(2, 300) }, () => ctx.rng.pick(sources))),
        );
      }
      requests.push(conn.call('hang'));
      const { rejected, elapsedMs } = await killWithRequestsPending(ctx, pid, requests, (reason) => {
        assert.equal(reason.signal, 'SIGKILL');
        assert.equal(reason.pid, pid);
      });
      await assert.rejects(conn.dupFileDescriptor(w), PeerExitedError);
      await assert.rejects(conn.call('echo', 1), PeerExitedError);
      assert.deepEqual(readdirSync(ctx.tmpdir), [], 'no socket file anywhere we can see');
      ctx.note(`${rejected.length} of ${requests.length} requests rejected ${elapsedMs.toFixed(0)} ms after SIGKILL`);
      ctx.count('faultsSurvived');
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
};

export default scenario;
