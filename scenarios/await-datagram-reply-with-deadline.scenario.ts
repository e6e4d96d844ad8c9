/**
 * Datagram request/reply that cannot hang (reproduce-seed-datagram-hang
 * shows the receive that does): a datagram peer that dies sends no end of
 * file, so the receive for its answer carries a
 * deadline (receive({ timeoutMs }): a typed TimeoutError) or watches the
 * peer's pidfd (receive({ peerPidfd }): PeerGoneError as soon as it dies,
 * no deadline to guess); a request sent after the death fails at once (the
 * name is stale: ECONNREFUSED); and a new helper binding the same path
 * replaces the stale file and answers. Nothing leaks in the client.
 */
import { strict as assert } from 'node:assert';
import { join } from 'node:path';

import { closeFd, DatagramSocket, openPidfd, PeerGoneError, SystemError, TimeoutError } from '../src';
import type { Scenario } from '../harness/types';
import { startDatagramPeer } from './support/datagram-peer';

const scenario: Scenario = {
  name: 'await-datagram-reply-with-deadline',
  description: "a datagram request/reply survives a helper that dies before answering: the receive has a deadline (TimeoutError) or watches the helper's pidfd (PeerGoneError), the next send fails with ECONNREFUSED, a restarted helper answers",
  transports: ['child'],
  tags: ['datagram'],
  async run(ctx) {
    const helperPath = join(ctx.tmpdir, 'helper', 'helper.sock');
    const client = DatagramSocket.bind(join(ctx.tmpdir, 'client', 'client.sock'));
    try {
      const peer = await startDatagramPeer(helperPath);
      try {
        await client.sendTo(helperPath, Buffer.from('die'));
        assert.equal(await peer.exited, 'SIGKILL');
        await assert.rejects(client.receive({ timeoutMs: 200 }), (err) => err instanceof TimeoutError);
        ctx.count('faultsInjected');
        await assert.rejects(
          client.sendTo(helperPath, Buffer.from('ping')),
          (err) => err instanceof SystemError && err.code === 'ECONNREFUSED',
        );
      } finally {
        if (peer.child.exitCode === null && peer.child.signalCode === null) peer.child.kill('SIGKILL');
        await peer.exited;
      }
      const again = await startDatagramPeer(helperPath);
      const pidfd = openPidfd(again.child.pid as number);
      try {
        await client.sendTo(helperPath, Buffer.from('ping'));
        assert.equal((await client.receive({ timeoutMs: 10_000 })).data.toString(), 'pong');
        ctx.count('faultsSurvived');
        // The pidfd way: no deadline; the receive ends when the helper dies.
        await client.sendTo(helperPath, Buffer.from('die'));
        await assert.rejects(client.receive({ peerPidfd: pidfd }), (err) => err instanceof PeerGoneError);
        ctx.count('faultsInjected');
        ctx.count('faultsSurvived');
      } finally {
        closeFd(pidfd);
        again.child.kill('SIGKILL');
        await again.exited;
      }
    } finally {
      client.close();
    }
  },
};

export default scenario;
