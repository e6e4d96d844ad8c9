/**
 * A directory fd crosses over as the same open directory: same (dev, ino),
 * the far side's /proc/self/fd names the same path, and the file status
 * flags (O_NONBLOCK here), which belong to the open file description, are
 * shared.
 */
import { strict as assert } from 'node:assert';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';

import { PROBE_COMMAND, setFdFlags, RemoteError, type FdFlags } from '../src';
import type { Scenario } from '../harness/types';
import { closeRemote, dupOneBenchCase, remoteFdTable, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'duplicate-directory',
  description: 'a directory fd arrives as the same open directory: identity, path and shared status flags',
  tags: ['fd-kind', 'conformance'],
  needs: ['identity', 'every-kind'],
  async run(ctx) {
    const dir = join(ctx.tmpdir, `dir-${ctx.rng.int(0, 1e6)}`);
    mkdirSync(dir);
    const fd = openSync(dir, 'r');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const remote = await conn.dupFileDescriptor(fd);
      const [id] = await remoteIdentities(conn, [remote]);
      assert.deepEqual(id, wireIdentity(fd));
      assert.equal(id?.type, 'directory');
      assert.equal((await remoteFdTable(conn)).get(remote), dir);
      // One open file description: O_NONBLOCK set by the client shows there.
      const [before] = await conn.call<FdFlags[]>('flags', [remote]);
      assert.deepEqual(before, { cloexec: true, nonblock: false });
      setFdFlags(fd, { nonblock: true });
      const [after] = await conn.call<FdFlags[]>('flags', [remote]);
      assert.deepEqual(after, { cloexec: true, nonblock: true });
      // And it is a directory there: read(2) fails with EISDIR.
      await assert.rejects(
        conn.call('read', remote, 16),
        (err: unknown) => err instanceof RemoteError && err.remote.code === 'EISDIR',
      );
      await closeRemote(conn, [remote]);
    } finally {
      closeSync(fd);
      await conn.close();
    }
  },
  async bench(ctx) {
    const fd = openSync(ctx.tmpdir, 'r');
    return dupOneBenchCase(ctx, fd, () => closeSync(fd));
  },
};

export default scenario;
