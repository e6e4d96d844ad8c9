/**
 * A number the caller closed and then names in the same tick as other
 * duplications is EBADF on every transport, never a copy of another call's
 * file: the fds the library makes for itself (a pin of a folded call, a
 * direct or worker duplicate, a queued send's copy) do not take the lowest
 * free number, which is here exactly the closed one.
 */
import { strict as assert } from 'node:assert';

import { closeFd, makeMemfd, PROBE_COMMAND, SystemError } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';

const isEbadf = (err: unknown): boolean => err instanceof SystemError && err.code === 'EBADF';

const scenario: Scenario = {
  name: 'reject-fd-closed-in-same-tick',
  description: 'dup(a) x n; close(b); dup(b) in one tick: b is EBADF on every transport, never a copy of a',
  tags: ['conformance'],
  needs: ['identity'],
  async run(ctx) {
    const conn = await ctx.connect(PROBE_COMMAND);
    const a = makeMemfd('same-tick-a');
    try {
      for (let round = 0; round < 20; round++) {
        // b takes the lowest free number; closed, it is the lowest free again.
        const b = makeMemfd('same-tick-b');
        const before = ctx.rng.int(1, 4); // duplications of a made after b is closed
        const batch = ctx.rng.int(0, 1) === 1;
        const made: Array<Promise<number | number[]>> = [];
        const early = ctx.rng.int(0, 1) === 1 ? conn.dupFileDescriptor(a) : undefined; // before the close
        closeFd(b);
        for (let i = 0; i < before; i++) made.push(batch && i === 0 ? conn.dupFileDescriptors([a, a]) : conn.dupFileDescriptor(a));
        const late = ctx.rng.int(0, 1) === 1 ? conn.dupFileDescriptor(b) : conn.dupFileDescriptors([a, b]);
        await assert.rejects(late, isEbadf, `round ${round}: the closed fd ${b} must be EBADF`);
        const remote = (await Promise.all([...(early ? [early] : []), ...made])).flat();
        assert.deepEqual(await remoteIdentities(conn, remote), remote.map(() => wireIdentity(a)), 'every other call got a');
        await closeRemote(conn, remote);
        ctx.count('badInputsTried');
        ctx.count('badInputsRejected');
      }
    } finally {
      closeAll([a]);
      await conn.close();
    }
  },
};

export default scenario;
