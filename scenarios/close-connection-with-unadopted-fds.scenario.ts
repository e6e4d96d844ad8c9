/**
 * Closing a connection closes, on the far side, every fd that was duplicated
 * into the command's context and never adopted, and the fds the command
 * adopted are closed by the command's own close(); the client's fds are
 * never touched. Checked in the command's process itself, at the moment the
 * command has closed and before that process (or thread) ends
 * (onCommandClosed).
 */
import { strict as assert } from 'node:assert';

import { fdIdentity, makeMemfd, makePipe, openFdTable, PROBE_COMMAND, type CommandLocation } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, remoteFdTable } from './support/common';

const scenario: Scenario = {
  name: 'close-connection-with-unadopted-fds',
  description: "close() closes the duplicates the command never adopted (and the command closes those it did), never the client's own fds",
  tags: ['ownership'],
  async run(ctx) {
    const [r, w] = makePipe();
    const sources = [r, w, makeMemfd('unadopted')];
    let seen: Map<number, string> | undefined;
    let where: CommandLocation | undefined;
    const conn = await ctx.connect(PROBE_COMMAND, {
      onCommandClosed: (location) => {
        where = location;
        seen = openFdTable(location.pid);
      },
    });
    try {
      const remote = await conn.dupFileDescriptors(Array.from({ length: ctx.rng.int(5, 60) }, () => ctx.rng.pick(sources)));
      const adopted = ctx.rng.shuffle(remote).slice(0, ctx.rng.int(1, remote.length - 1));
      await conn.call('adopt', adopted);
      const before = await remoteFdTable(conn);
      for (const fd of remote) assert.ok(before.has(fd), `fd ${fd} is open there before close()`);
      await conn.close();
      assert.ok(seen && where, 'onCommandClosed ran');
      const stillOpen = remote.filter((fd) => seen?.get(fd) === before.get(fd));
      assert.deepEqual(stillOpen, [], `fds still open in pid ${where.pid} after close(): ${stillOpen.join(', ')}`);
      // The client's own copies are untouched.
      for (const fd of sources) fdIdentity(fd);
      ctx.note(`${remote.length} duplicates (${adopted.length} adopted) closed by close()`);
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
};

export default scenario;
