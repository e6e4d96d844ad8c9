/**
 * A receive that keeps the whole message: a message comes back
 * with exactly the bytes that were sent (not the buffer size) and with every
 * fd it carried (not only the first), on datagram and seqpacket sockets
 * alike; and through the connection, a duplication of several fds gives all
 * of them. (Receive paths that trim the data or keep only the first fd:
 * reproduce-seed-receive-trim, reproduce-seed-second-fd-leak.)
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, UnixSocket } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'receive-whole-message',
  description: 'a received message has exactly the bytes sent and every fd it carried (not the buffer size, not only the first fd)',
  tags: ['conformance'],
  needs: ['identity'],
  async run(ctx) {
    const sources = [makeMemfd('whole-a'), makeMemfd('whole-b'), makeMemfd('whole-c')];
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      for (const kind of ['dgram', 'seqpacket'] as const) {
        const [a, b] = UnixSocket.pair(kind, { bufferSize: 64 });
        try {
          for (let i = 0; i < 8; i++) {
            const data = Buffer.from(`m${ctx.rng.int(0, 10 ** ctx.rng.int(1, 9))}`);
            const fds = Array.from({ length: ctx.rng.int(1, 5) }, () => ctx.rng.pick(sources));
            await a.send(data, fds);
            const m = await b.receive();
            try {
              assert.deepEqual(m.data, data, `${kind}: exactly the ${data.length} bytes sent`);
              assert.equal(m.fds.length, fds.length, `${kind}: every fd the message carried`);
              assert.deepEqual(m.fds.map(wireIdentity), fds.map(wireIdentity));
            } finally {
              closeAll(m.fds);
            }
          }
        } finally {
          a.close();
          b.close();
        }
      }
      // Through the connection: two (or more) fds in one duplication all arrive.
      const list = [sources[0] as number, sources[1] as number, ...sources.slice(2, 2 + ctx.rng.int(0, 1))];
      const remote = await conn.dupFileDescriptors(list);
      assert.deepEqual(await remoteIdentities(conn, remote), list.map(wireIdentity));
      await closeRemote(conn, remote);
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
};

export default scenario;
