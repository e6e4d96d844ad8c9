/**
 * The client closes each source right after asking for its duplication and
 * at once opens a new file, which gets the same fd number. With hundreds of
 * requests in flight some sends wait in the connection's queue; a queue that
 * kept only the number would send the wrong file (oven-sh/bun#37854). Every
 * duplicate must be the file that was open when dupFileDescriptor was called.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, type WireIdentity } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'reuse-fd-number-while-queued',
  description: 'an fd number closed and reused while its duplication is queued still sends the file it named when the call was made',
  tags: ['concurrency', 'ownership', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    const conn = await ctx.connect(PROBE_COMMAND);
    let current = makeMemfd('reuse-0');
    try {
      const wanted: WireIdentity[] = [];
      const numbers = new Set<number>();
      const pending: Array<Promise<number>> = [];
      const count = ctx.rng.int(300, 500);
      for (let i = 0; i < count; i++) {
        wanted.push(wireIdentity(current));
        numbers.add(current);
        pending.push(conn.dupFileDescriptor(current));
        closeAll([current]);
        current = makeMemfd(`reuse-${i + 1}`);
      }
      assert.equal(numbers.size, 1, 'the kernel handed out the same number every time');
      const remote = await Promise.all(pending);
      assert.deepEqual(await remoteIdentities(conn, remote), wanted);
      await closeRemote(conn, remote);
    } finally {
      closeAll([current]);
      await conn.close();
    }
  },
};

export default scenario;
