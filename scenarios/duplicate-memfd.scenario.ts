/**
 * An anonymous memory file (memfd_create) has no path to reopen: passing the
 * fd is the only way to share it. It arrives as the same file, with one
 * shared offset.
 */
import { strict as assert } from 'node:assert';
import { readSync, writeSync } from 'node:fs';

import { closeFd, makeMemfd, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeRemote, dupOneBenchCase, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'duplicate-memfd',
  description: 'a memfd (anonymous file) arrives as the same file and shares its offset and contents with the client',
  tags: ['fd-kind', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    const fd = makeMemfd(`scenario-${ctx.rng.int(0, 1e6)}`);
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const remote = await conn.dupFileDescriptor(fd);
      assert.deepEqual(await remoteIdentities(conn, [remote]), [wireIdentity(fd)]);
      const a = `a${ctx.rng.int(100, 999)}`;
      const b = `b${ctx.rng.int(100, 999)}`;
      writeSync(fd, a); // offset 4
      assert.equal(await conn.call('write', remote, b), 4); // continues at 4
      const all = Buffer.alloc(16);
      assert.equal(all.toString('utf8', 0, readSync(fd, all, 0, 16, 0)), a + b);
      // The offset is at 8 for both: nothing left to read on either side.
      assert.equal(readSync(fd, all, 0, 16, null), 0);
      assert.equal(await conn.call('read', remote, 16), '');
      // The far side's table names the same memfd.
      const table = new Map(await conn.call<Array<[number, string]>>('openFds'));
      assert.match(table.get(remote) ?? '', /^\/memfd:scenario-\d+ \(deleted\)$/);
      await closeRemote(conn, [remote]);
    } finally {
      closeFd(fd);
      await conn.close();
    }
  },
  async bench(ctx) {
    const fd = makeMemfd('bench');
    return dupOneBenchCase(ctx, fd, () => closeFd(fd));
  },
};

export default scenario;
