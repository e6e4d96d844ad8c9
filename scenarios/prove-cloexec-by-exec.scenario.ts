/**
 * Duplicates are close-on-exec on the far side, proven by exec: a program
 * the command's process runs (ls /proc/self/fd) does not see them. The
 * client's sources are deliberately NOT close-on-exec (the sender's flag is
 * not carried over; MSG_CMSG_CLOEXEC or F_DUPFD_CLOEXEC must set it).
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, makePipe, PROBE_COMMAND, setFdFlags, type FdFlags } from '../src';
import { rawSocketPair } from '../src/testing';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote } from './support/common';

const scenario: Scenario = {
  name: 'prove-cloexec-by-exec',
  description: "duplicates are close-on-exec where they arrive: a program exec'd there does not inherit them, though the sources were not close-on-exec",
  tags: ['cloexec', 'conformance'],
  async run(ctx) {
    const [r, w] = makePipe();
    const [s1, s2] = rawSocketPair('stream');
    const memfd = makeMemfd('cloexec');
    const sources = [w, memfd, s1];
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      for (const fd of sources) setFdFlags(fd, { cloexec: false });
      const list = ctx.rng.shuffle(sources);
      const remote = await conn.dupFileDescriptors(list);
      const flags = await conn.call<FdFlags[]>('flags', remote);
      assert.ok(flags.every((f) => f.cloexec), `close-on-exec on every duplicate: ${JSON.stringify(flags)}`);
      const seen = await conn.call<number[]>('fdsSeenByExec');
      for (const fd of [0, 1, 2]) assert.ok(seen.includes(fd), `the exec'd program sees fd ${fd}`);
      for (const fd of remote) assert.ok(!seen.includes(fd), `fd ${fd} leaked across exec: ${seen.join(' ')}`);
      if (ctx.transport === 'direct' || ctx.transport === 'worker') {
        // Same process: the sources, which are not close-on-exec, show up
        // in the same listing, so the listing does see inherited fds.
        for (const fd of list) assert.ok(seen.includes(fd), `the source fd ${fd} (no cloexec) is inherited`);
      }
      await closeRemote(conn, remote);
    } finally {
      closeAll([r, w, s1, s2, memfd]);
      await conn.close();
    }
  },
};

export default scenario;
