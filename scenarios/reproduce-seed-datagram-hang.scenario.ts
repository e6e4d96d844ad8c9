/**
 * The seed's request/reply over datagrams waits for the answer with a plain
 * blocking receive (receiveBytesMax:andFileDescriptor:). A datagram peer that
 * dies sends no end of file, so when the helper dies between the request and
 * its answer, that receive waits forever. Here: a helper process bound at a
 * path is sent a request and SIGKILLs itself before answering; the client
 * waits as the seed did (receive() with no deadline) and, a second after the
 * helper's death is known, is still waiting: the declared check fails. The
 * ways that cannot hang: await-datagram-reply-with-deadline.
 */
import { join } from 'node:path';

import { DatagramSocket } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario } from '../harness/types';
import { sleep } from './support/common';
import { startDatagramPeer } from './support/datagram-peer';

const scenario: Scenario = {
  name: 'reproduce-seed-datagram-hang',
  description: "the seed's datagram request/reply waits for an answer with no deadline; a helper that dies before answering leaves it waiting forever (no end of file on a datagram socket)",
  transports: ['child'],
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'answer-or-error-after-peer-death' } },
  tags: ['seed-bug', 'datagram'],
  async run(ctx) {
    const helperPath = join(ctx.tmpdir, 'helper', 'helper.sock');
    const peer = await startDatagramPeer(helperPath);
    const client = DatagramSocket.bind(join(ctx.tmpdir, 'client', 'client.sock'));
    try {
      await client.sendTo(helperPath, Buffer.from('ping'));
      const first = await client.receive({ timeoutMs: 10_000 });
      if (first.data.toString() !== 'pong') throw new Error('the helper did not answer its first request');
      // The seed's way: send the request, then wait for the answer however long it takes.
      await client.sendTo(helperPath, Buffer.from('die'));
      let settled = false;
      const answer = client.receive().then(
        () => (settled = true),
        () => (settled = true),
      );
      if ((await peer.exited) !== 'SIGKILL') throw new Error('the helper did not die as arranged');
      await sleep(1000);
      if (!settled) {
        throw new CheckFailure(
          'answer-or-error-after-peer-death',
          'the helper died before answering and, a second later, the receive for its answer is still waiting: a datagram socket gets no end of file',
        );
      }
      await answer;
    } finally {
      client.close(); // ends the receive that would otherwise wait forever (ClosedError)
      if (peer.child.exitCode === null && peer.child.signalCode === null) peer.child.kill('SIGKILL');
      await peer.exited;
    }
  },
};

export default scenario;
