/**
 * Fault: the child is stopped (SIGSTOP) so that requests, fds and all, sit
 * unread in its socket, then killed (SIGKILL) before it reads one. Every
 * request rejects with PeerExitedError; the fds in flight
 * are released with the dead socket (the client holds none); a new
 * connection works.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, sleep, wireIdentity } from './support/common';
import { killWithRequestsPending } from './support/faults';

const scenario: Scenario = {
  name: 'kill-child-before-request-read',
  description: 'a child SIGKILLed with requests and their fds unread in its socket fails them all with PeerExitedError; a new connection works',
  transports: ['child'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    const source = makeMemfd('unread');
    try {
      const conn = await ctx.connect(PROBE_COMMAND);
      const pid = conn.location.pid;
      process.kill(pid, 'SIGSTOP');
      const requests: Array<Promise<unknown>> = [
        conn.dupFileDescriptors(Array.from({ length: 253 }, () => source)),
        ...Array.from({ length: ctx.rng.int(5, 50) }, () => conn.dupFileDescriptor(source)),
        conn.call('echo', 'never'),
      ];
      await sleep(ctx.rng.int(5, 30));
      const { rejected } = await killWithRequestsPending(ctx, pid, requests, (reason) => assert.equal(reason.signal, 'SIGKILL'));
      assert.equal(rejected.length, requests.length, 'nothing was served');
      await conn.close();
      // A new connection (a new child) works.
      const next = await ctx.connect(PROBE_COMMAND);
      const [fd] = await next.dupFileDescriptors([source]);
      assert.deepEqual(await remoteIdentities(next, [fd as number]), [wireIdentity(source)]);
      await closeRemote(next, [fd as number]);
      await next.close();
      ctx.count('faultsSurvived');
    } finally {
      closeAll([source]);
    }
  },
};

export default scenario;
