/**
 * A closed fd anywhere in a duplication fails all of it with a typed EBADF
 * error (the kernel queues nothing; dup(2) would fail the same way) and the
 * far side gains no fd; bad arguments throw at once; the connection keeps
 * working.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, openFdTable, PROBE_COMMAND, SystemError } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteFdTable, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'reject-bad-fd',
  description: 'a closed fd anywhere in a duplication is a typed EBADF for the whole request, with nothing arriving on the far side',
  tags: ['conformance'],
  needs: ['identity'],
  async run(ctx) {
    const good = makeMemfd('good');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      // A number far above anything open (a freshly closed low one would be reused).
      let bad = 40_000 + ctx.rng.int(0, 1000);
      while (openFdTable().has(bad)) bad++;
      const before = await remoteFdTable(conn);
      const isEbadf = (err: unknown): boolean => err instanceof SystemError && err.code === 'EBADF' && err.errno === -9;
      await assert.rejects(conn.dupFileDescriptor(bad), isEbadf);
      const at = ctx.rng.int(0, 20);
      const list = Array.from({ length: 21 }, (_, i) => (i === at ? bad : good));
      await assert.rejects(conn.dupFileDescriptors(list), isEbadf);
      // 300: the bad fd in the second message of a split batch; the first is released again.
      await assert.rejects(conn.dupFileDescriptors([...Array.from({ length: 299 }, () => good), bad]), isEbadf);
      const after = await remoteFdTable(conn);
      assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'nothing arrived on the far side');
      assert.throws(() => conn.dupFileDescriptor(-1), TypeError);
      assert.throws(() => conn.dupFileDescriptor(2.5), TypeError);
      assert.throws(() => conn.dupFileDescriptors([good, Number.NaN]), TypeError);
      const ok = await conn.dupFileDescriptor(good);
      assert.deepEqual(await remoteIdentities(conn, [ok]), [wireIdentity(good)]);
      await closeRemote(conn, [ok]);
    } finally {
      closeAll([good]);
      await conn.close();
    }
  },
};

export default scenario;
