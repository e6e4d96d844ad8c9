/**
 * Both ends of a pipe cross over as the same pipe: the far side writes into
 * the write end the client reads, and reads what the client wrote into the
 * read end it holds. O_NONBLOCK, a status flag of the open file description,
 * is shared too.
 */
import { strict as assert } from 'node:assert';
import { readSync, writeSync } from 'node:fs';

import { closeFd, makePipe, PROBE_COMMAND, setFdFlags, type FdFlags } from '../src';
import type { Scenario } from '../harness/types';
import { closeRemote, dupOneBenchCase, remoteIdentities, wireIdentity } from './support/common';

const scenario: Scenario = {
  name: 'duplicate-pipe',
  description: "both ends of a pipe arrive as the same pipe (dev, ino, type), and data flows through them both ways",
  tags: ['fd-kind', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    const [r, w] = makePipe();
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const [farR, farW] = await conn.dupFileDescriptors([r, w]);
      assert.ok(farR !== undefined && farW !== undefined);
      const ids = await remoteIdentities(conn, [farR, farW]);
      assert.deepEqual(ids, [wireIdentity(r), wireIdentity(w)]);
      assert.equal(ids[0]?.type, 'pipe');

      // Far side -> client, through the duplicated write end.
      const down = `down-${ctx.rng.int(0, 1e9)}`;
      assert.equal(await conn.call('write', farW, down), down.length);
      const buf = Buffer.alloc(64);
      assert.equal(buf.toString('utf8', 0, readSync(r, buf, 0, buf.length, null)), down);

      // Client -> far side, through the duplicated read end.
      const up = `up-${ctx.rng.int(0, 1e9)}`;
      writeSync(w, up);
      assert.equal(await conn.call('read', farR, 64), up);

      // One open file description: O_NONBLOCK set here shows there.
      setFdFlags(r, { nonblock: true });
      const [flags] = await conn.call<FdFlags[]>('flags', [farR]);
      assert.deepEqual(flags, { cloexec: true, nonblock: true });
      await closeRemote(conn, [farR, farW]);
    } finally {
      closeFd(r);
      closeFd(w);
      await conn.close();
    }
  },
  async bench(ctx) {
    const [r, w] = makePipe();
    return dupOneBenchCase(ctx, w, () => {
      closeFd(r);
      closeFd(w);
    });
  },
};

export default scenario;
