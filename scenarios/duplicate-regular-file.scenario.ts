/**
 * A regular file crosses into the command's context as the same open file
 * description: same (dev, ino), and one file offset shared by both sides.
 */
import { strict as assert } from 'node:assert';
import { closeSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeRemote, dupOneBenchCase, remoteIdentities, wireIdentity } from './support/common';

function readLocal(fd: number, n: number): string {
  const buf = Buffer.alloc(n);
  return buf.toString('utf8', 0, readSync(fd, buf, 0, n, null));
}

const scenario: Scenario = {
  name: 'duplicate-regular-file',
  description: 'a regular file arrives with the same (dev, ino) and shares one file offset with the client, for reads and writes',
  tags: ['fd-kind', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    const path = join(ctx.tmpdir, 'shared-offset.txt');
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    const content = Array.from({ length: 10 }, () => ctx.rng.pick([...letters])).join('');
    writeFileSync(path, content);
    const fd = openSync(path, 'r+');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const remote = await conn.dupFileDescriptor(fd);
      assert.deepEqual(await remoteIdentities(conn, [remote]), [wireIdentity(fd)]);
      // Each side continues where the other stopped only if the offset is
      // one and the same: client reads 2, far side reads 3, far side
      // overwrites 2, client overwrites 1, client reads the last 2.
      assert.equal(readLocal(fd, 2), content.slice(0, 2));
      assert.equal(await conn.call('read', remote, 3), content.slice(2, 5));
      assert.equal(await conn.call('write', remote, 'XY'), 2);
      writeSync(fd, 'Z');
      assert.equal(readLocal(fd, 2), content.slice(8, 10));
      assert.equal(readFileSync(path, 'utf8'), `${content.slice(0, 5)}XYZ${content.slice(8)}`);
      // At the end for both: the far side reads nothing more.
      assert.equal(await conn.call('read', remote, 16), '');
      await closeRemote(conn, [remote]);
    } finally {
      closeSync(fd);
      await conn.close();
    }
  },
  async bench(ctx) {
    const fd = openSync(join(ctx.tmpdir, 'bench.txt'), 'w+');
    return dupOneBenchCase(ctx, fd, () => closeSync(fd));
  },
};

export default scenario;
