/**
 * Beyond SCM_MAX_FD: dupFileDescriptors splits any count into messages of at
 * most 253 and returns every duplicate in order, while a raw send of 254 fds
 * is refused up front (RangeError) with nothing sent, where the kernel would
 * say EINVAL.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, UnixSocket } from '../src';
import { MAX_FDS_PER_MESSAGE, receiveNow, sendNow } from '../src/testing';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'split-batch-beyond-253',
  description: 'dupFileDescriptors of 254 and of several hundred fds splits them and keeps their order; a raw 254-fd send is a RangeError',
  tags: ['batch', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    assert.equal(MAX_FDS_PER_MESSAGE, 253);
    const sources = Array.from({ length: 7 }, (_, i) => makeMemfd(`split-${i}`));
    const conn = await ctx.connect(PROBE_COMMAND);
    const [a, b] = UnixSocket.pair('seqpacket');
    try {
      for (const count of [254, ctx.rng.int(255, 760)]) {
        const list = Array.from({ length: count }, () => ctx.rng.pick(sources));
        const remote = await conn.dupFileDescriptors(list);
        assert.equal(remote.length, count);
        assert.equal(new Set(remote).size, count);
        assert.deepEqual(await remoteIdentities(conn, remote), list.map(wireIdentity));
        await closeRemote(conn, remote);
      }
      // One message cannot hold 254: refused before sendmsg, nothing queued.
      const tooMany = Array.from({ length: 254 }, () => sources[0] as number);
      assert.throws(() => a.write(Buffer.from('x'), tooMany), RangeError);
      await assert.rejects(a.send(Buffer.from('x'), tooMany), RangeError);
      assert.throws(() => sendNow(a.fd, Buffer.from('x'), tooMany), RangeError);
      assert.equal(receiveNow(b.fd, 16, 253), null, 'nothing reached the peer');
      // 253 still goes through on the same socket.
      await a.send(Buffer.from('y'), tooMany.slice(1));
      const m = await b.receive();
      assert.equal(m.fds.length, 253);
      closeAll(m.fds);
    } finally {
      a.close();
      b.close();
      closeAll(sources);
      await conn.close();
    }
  },
};

export default scenario;
