/**
 * The client closes its own fd right after asking for the duplication (not
 * even waiting for the reply): the in-flight reference, then the far side's
 * duplicate, keep the file alive, and the far side still uses it. When the
 * far side's copy goes too, the pipe's reader sees end of file: nobody else
 * holds a write end.
 */
import { strict as assert } from 'node:assert';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

import { closeFd, makePipe, PROBE_COMMAND, setFdFlags } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote } from './support/common';

const scenario: Scenario = {
  name: 'close-source-after-dup',
  description: 'the client closes its fds as soon as dupFileDescriptor is called; the far side still writes through the duplicates',
  tags: ['ownership', 'conformance'],
  async run(ctx) {
    const [r, w] = makePipe();
    const path = join(ctx.tmpdir, 'closed-by-client.log');
    const file = openSync(path, 'a');
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const pending = [conn.dupFileDescriptor(w), conn.dupFileDescriptor(file)];
      // Gone from the client before any reply.
      closeFd(w);
      closeSync(file);
      const [farW, farFile] = (await Promise.all(pending)) as [number, number];
      const line = `still open ${ctx.rng.int(0, 1e9)}\n`;
      assert.equal(await conn.call('write', farW, line), line.length);
      assert.equal(await conn.call('write', farFile, line), line.length);
      const buf = Buffer.alloc(128);
      assert.equal(buf.toString('utf8', 0, readSync(r, buf, 0, buf.length, null)), line);
      assert.equal(readFileSync(path, 'utf8'), line);
      // The far side's copy was the last write end: closing it gives EOF here
      // (non-blocking so that a leaked write end shows as EAGAIN, not a hang).
      await closeRemote(conn, [farW, farFile]);
      setFdFlags(r, { nonblock: true });
      assert.equal(readSync(r, buf, 0, buf.length, null), 0, 'end of file: no write end is left anywhere');
    } finally {
      closeAll([r, w]);
      await conn.close();
    }
  },
};

export default scenario;
