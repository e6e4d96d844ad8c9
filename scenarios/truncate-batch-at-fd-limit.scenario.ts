/**
 * The far side is at its fd limit (RLIMIT_NOFILE lowered to just above what
 * it has open) and a batch arrives that cannot fit. The kernel installs what
 * fits and sets MSG_CTRUNC; fdbridge closes those, answers with a typed
 * error, leaks nothing, and the connection keeps working once the limit is
 * back.
 *
 * Every transport fails it with the same SystemError EMFILE:
 * - child, helper: the far side's recvmsg met MSG_CTRUNC. The helper daemon
 *   is shared by every scenario: its limit is restored before anything
 *   else happens.
 * - pidfd (the far side pulls each fd with pidfd_getfd): pidfd_getfd's EMFILE.
 * - direct, worker: the "far side" is this very process, so the limit is
 *   lowered here, only for the synchronous dup(2) calls of one
 *   dupFileDescriptors, and restored before any other code runs: dup's
 *   EMFILE, with the duplicates made so far closed again.
 */
import { strict as assert } from 'node:assert';

import { fdLimit, makeMemfd, openFdTable, PROBE_COMMAND, setFdLimit, SystemError } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteFdTable, remoteIdentities, wireIdentity } from './support/common';

/** Free fd slots left under the lowered limit: the batch is always larger. */
const HEADROOM = 4;

/**
 * The RLIMIT_NOFILE under which exactly `free` fd numbers are unused (new
 * fds take the lowest free numbers; open fds above the limit stay valid).
 */
function limitLeaving(open: Iterable<number>, free: number): number {
  const used = new Set(open);
  let n = 0;
  for (let left = free; left > 0; n++) if (!used.has(n)) left--;
  return n;
}

const scenario: Scenario = {
  name: 'truncate-batch-at-fd-limit',
  description: 'a batch that does not fit under the far side\'s lowered fd limit fails with a typed error, leaks nothing, and the connection still works',
  tags: ['truncation'],
  needs: ['identity'],
  async run(ctx) {
    const source = makeMemfd('truncate');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      if (conn.location.pid === process.pid) {
        const table = openFdTable();
        const limit = limitLeaving(table.keys(), HEADROOM);
        const batch = Array.from({ length: HEADROOM + ctx.rng.int(1, 60) }, () => source);
        const [soft] = fdLimit();
        let pending: Promise<number[]>;
        setFdLimit(limit);
        try {
          pending = conn.dupFileDescriptors(batch); // the dup(2)s run now, synchronously
        } finally {
          setFdLimit(soft);
        }
        await assert.rejects(pending, (err: unknown) => err instanceof SystemError && err.code === 'EMFILE');
        assert.deepEqual([...openFdTable().keys()].sort(), [...table.keys()].sort(), 'the duplicates made before EMFILE were closed');
        ctx.note(`dup of ${batch.length} fds under RLIMIT_NOFILE ${limit}: EMFILE`);
      } else {
        const [soft] = await conn.call<[number, number]>('fdLimit');
        const before = await remoteFdTable(conn);
        const limit = limitLeaving(before.keys(), HEADROOM);
        const batch = Array.from({ length: HEADROOM + ctx.rng.int(1, 60) }, () => source);
        let err: unknown;
        await conn.call('setFdLimit', limit);
        try {
          err = await conn.dupFileDescriptors(batch).then(
            () => undefined,
            (e: unknown) => e,
          );
        } finally {
          await conn.call('setFdLimit', soft);
        }
        // Over a socket the far side sees MSG_CTRUNC, a transport that pulls
        // the fds itself (pidfd_getfd) EMFILE: the same failure, one error.
        assert.ok(err instanceof SystemError && err.code === 'EMFILE', `SystemError EMFILE, not ${String(err)}`);
        assert.deepEqual((await conn.call<[number, number]>('fdLimit'))[0], soft, 'the limit is back');
        const after = await remoteFdTable(conn);
        assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'the fds that did arrive were closed there');
        ctx.note(`${batch.length} fds sent under RLIMIT_NOFILE ${limit}: ${err.message}`);
      }
      // The connection is still usable.
      const again = await conn.dupFileDescriptors([source, source]);
      assert.deepEqual(await remoteIdentities(conn, again), [wireIdentity(source), wireIdentity(source)]);
      await closeRemote(conn, again);
    } finally {
      closeAll([source]);
      await conn.close();
    }
  },
};

export default scenario;
