/**
 * A batch of more than 253 fds goes in pieces; a closed fd in a later piece
 * fails the whole batch with EBADF on every transport, and none of it stays
 * in the command. The fds are taken from the lowest free numbers, so the
 * closed one sits just above the earlier pieces, exactly where copies made
 * of them (a direct or worker duplicate, a pidfd pin) would land if they
 * took the lowest free number: the command would then get a duplicate of
 * another slot's file there and the batch would "succeed".
 */
import { strict as assert } from 'node:assert';

import { dupFd, makeMemfd, PROBE_COMMAND, SystemError } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteFdTable, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'reject-closed-fd-in-later-batch-piece',
  description: 'a closed fd in the 2nd or 3rd piece of a 600-fd batch is EBADF for the whole batch on every transport; none of it stays in the command',
  tags: ['conformance'],
  needs: ['identity'],
  async run(ctx) {
    // Seven files, so that a slot answered with another slot's file shows.
    const files = Array.from({ length: 7 }, (_, i) => makeMemfd(`later-piece-${i}`));
    const conn = await ctx.connect(PROBE_COMMAND);
    const fds: number[] = [];
    try {
      // One position in the second piece, one in the third, and the very last.
      for (const closedAt of [ctx.rng.int(253, 505), ctx.rng.int(506, 598), 599]) {
        fds.push(...Array.from({ length: 600 }, (_, i) => dupFd(files[i % 7]!)));
        const closed = fds[closedAt]!;
        closeAll([closed]);
        const before = await remoteFdTable(conn);
        const outcome = await conn.dupFileDescriptors(fds).then(
          (remote) => `resolved (slot ${closedAt} became ${remote[closedAt]} over there)`,
          (err: unknown) => err,
        );
        assert.ok(
          outcome instanceof SystemError && outcome.code === 'EBADF',
          `fds[${closedAt}] closed: expected EBADF, got ${outcome instanceof Error ? outcome.message : String(outcome)}`,
        );
        const after = await remoteFdTable(conn);
        assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'none of the batch stayed in the command');
        closeAll(fds.filter((fd) => fd !== closed));
        fds.length = 0;
        ctx.count('badInputsTried');
        ctx.count('badInputsRejected');
      }
      // The connection still works, and the batch without the hole arrives whole.
      const whole = Array.from({ length: 600 }, (_, i) => files[i % 7]!);
      const remote = await conn.dupFileDescriptors(whole);
      assert.deepEqual(await remoteIdentities(conn, remote), whole.map(wireIdentity));
      await closeRemote(conn, remote);
    } finally {
      closeAll(fds);
      closeAll(files);
      await conn.close();
    }
  },
};

export default scenario;
