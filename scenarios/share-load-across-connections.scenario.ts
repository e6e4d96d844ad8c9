/**
 * Several connections at once (several children, several clients of one
 * helper, several workers), each with duplications in flight: each gets its
 * own files back, and closing one leaves the others working.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, remoteIdentities, wireIdentity } from './support/common';

const CONNECTIONS = 4;

const scenario: Scenario = {
  name: 'share-load-across-connections',
  description: 'four connections with duplications in flight on all of them at once each get their own files; closing one leaves the rest working',
  tags: ['concurrency'],
  needs: ['identity'],
  async run(ctx) {
    const sources = Array.from({ length: CONNECTIONS * 2 }, (_, i) => makeMemfd(`conn-source-${i}`));
    const conns: Connection[] = [];
    try {
      conns.push(...(await Promise.all(Array.from({ length: CONNECTIONS }, () => ctx.connect(PROBE_COMMAND)))));
      const plans = conns.map((_, c) =>
        Array.from({ length: ctx.rng.int(60, 150) }, () => sources[c * 2 + ctx.rng.int(0, 1)] as number),
      );
      const results = await Promise.all(
        conns.map((conn, c) => Promise.all((plans[c] as number[]).map((fd) => conn.dupFileDescriptor(fd)))),
      );
      await Promise.all(
        conns.map(async (conn, c) => {
          const remote = results[c] as number[];
          assert.equal(new Set(remote).size, remote.length);
          assert.deepEqual(await remoteIdentities(conn, remote), (plans[c] as number[]).map(wireIdentity));
        }),
      );
      // Connections in one process (helper, direct, worker) never hand out the same number twice.
      const where = await Promise.all(conns.map((c) => c.call<{ pid: number }>('where')));
      if (new Set(where.map((w) => w.pid)).size === 1) {
        const all = results.flat();
        assert.equal(new Set(all).size, all.length, 'fds given to different connections of one process are distinct');
      }
      // Close one in the middle of more traffic on the others.
      const [first, ...rest] = conns;
      const more = rest.map((conn) => conn.dupFileDescriptors([sources[0] as number, sources[1] as number]));
      await first?.close();
      assert.equal((await Promise.all(more)).flat().length, rest.length * 2);
      assert.deepEqual(await Promise.all(rest.map((c) => c.call('echo', 'alive'))), rest.map(() => 'alive'));
    } finally {
      await Promise.all(conns.map((c) => c.close()));
      closeAll(sources);
    }
  },
};

export default scenario;
