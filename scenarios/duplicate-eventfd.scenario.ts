/**
 * An eventfd is an anonymous-inode kernel object with no file offset at all:
 * what both sides share is its 64-bit counter. Writes from either side add
 * up; a read returns the sum and resets it.
 */
import { strict as assert } from 'node:assert';
import { readSync, writeSync } from 'node:fs';

import { closeFd, makeEventfd, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeRemote, dupOneBenchCase, remoteIdentities, wireIdentity } from './support/common';

/** An eventfd counter value as the 8 bytes the far side's write(string) sends (values < 128: one UTF-8 byte each). */
function counterText(n: number): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b.toString('latin1');
}

const scenario: Scenario = {
  name: 'duplicate-eventfd',
  description: 'an eventfd arrives as the same object: increments from both sides add up in one shared counter',
  tags: ['fd-kind', 'conformance'],
  needs: ['identity', 'every-kind'],
  async run(ctx) {
    const fd = makeEventfd();
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const remote = await conn.dupFileDescriptor(fd);
      assert.deepEqual(await remoteIdentities(conn, [remote]), [wireIdentity(fd)]);
      // The eventfd is blocking: read it only when the counter is non-zero.
      const here = ctx.rng.int(1, 60);
      const there = ctx.rng.int(1, 60);
      const inc = Buffer.alloc(8);
      inc.writeBigUInt64LE(BigInt(here));
      writeSync(fd, inc);
      assert.equal(await conn.call('write', remote, counterText(there)), 8);
      // The far side reads the sum (and resets the counter)...
      assert.equal(await conn.call('read', remote, 8), counterText(here + there));
      // ...then adds again, and the client reads that.
      assert.equal(await conn.call('write', remote, counterText(there)), 8);
      const out = Buffer.alloc(8);
      assert.equal(readSync(fd, out, 0, 8, null), 8);
      assert.equal(out.readBigUInt64LE(), BigInt(there));
      await closeRemote(conn, [remote]);
    } finally {
      closeFd(fd);
      await conn.close();
    }
  },
  async bench(ctx) {
    const fd = makeEventfd();
    return dupOneBenchCase(ctx, fd, () => closeFd(fd));
  },
};

export default scenario;
