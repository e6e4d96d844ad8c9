/**
 * One end of a connected stream socket crosses over: the far side talks to
 * the client's other end through it, both ways, on the same connection.
 */
import { strict as assert } from 'node:assert';
import { readSync, writeSync } from 'node:fs';

import { closeFd, PROBE_COMMAND } from '../src';
import { rawSocketPair } from '../src/testing';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, dupOneBenchCase, remoteIdentities, sleep, wireIdentity } from './support/common';

/** Reads what is there on a non-blocking socket (waiting a little for it). */
async function readSome(fd: number): Promise<string> {
  const buf = Buffer.alloc(256);
  for (let i = 0; ; i++) {
    try {
      return buf.toString('utf8', 0, readSync(fd, buf, 0, buf.length, null));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || i > 100) throw err;
      await sleep(5);
    }
  }
}

const scenario: Scenario = {
  name: 'duplicate-connected-socket',
  description: 'one end of a connected stream socket arrives as the same socket: the far side and the client talk through the connection both ways',
  tags: ['fd-kind', 'conformance'],
  needs: ['identity'],
  async run(ctx) {
    const [mine, theirs] = rawSocketPair('stream');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const want = wireIdentity(theirs);
      const remote = await conn.dupFileDescriptor(theirs);
      // The client gives its copy up: the far side's is the only one left.
      closeFd(theirs);
      assert.deepEqual(await remoteIdentities(conn, [remote]), [want]);
      assert.equal(want.type, 'socket');
      const ping = `ping-${ctx.rng.int(0, 1e9)}`;
      assert.equal(await conn.call('write', remote, ping), ping.length);
      assert.equal(await readSome(mine), ping);
      const pong = `pong-${ctx.rng.int(0, 1e9)}`;
      writeSync(mine, pong);
      assert.equal(await conn.call('read', remote, 256), pong);
      // Once the far side closes its (only) copy, the client sees end of file.
      await closeRemote(conn, [remote]);
      assert.equal(await readSome(mine), '');
    } finally {
      closeAll([mine, theirs]);
      await conn.close();
    }
  },
  async bench(ctx) {
    const [a, b] = rawSocketPair('stream');
    return dupOneBenchCase(ctx, b, () => {
      closeFd(a);
      closeFd(b);
    });
  },
};

export default scenario;
