/**
 * Many duplications in flight at once on one connection: every reply pairs
 * with its own request (the right file at a distinct fd), whatever order the
 * sources are drawn in.
 */
import { strict as assert } from 'node:assert';

import { closeFd, makeEventfd, makeMemfd, makePipe, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, dupBenchCase, remoteIdentities, wireIdentity } from './support/common';

/** Duplications in flight per bench operation. */
const BENCH_DEPTH = 16;

const scenario: Scenario = {
  name: 'pipeline-duplications',
  description: 'hundreds of single and batch duplications in flight on one connection each get their own reply, with the right files',
  tags: ['concurrency'],
  needs: ['every-kind'],
  async run(ctx) {
    const [r, w] = makePipe();
    const sources = [r, w, makeEventfd(), ...Array.from({ length: 8 }, (_, i) => makeMemfd(`pipeline-${i}`))];
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      // A seeded mix of singles and small batches, all started before any reply.
      const requests: number[][] = Array.from({ length: 400 }, () =>
        Array.from({ length: ctx.rng.next() < 0.75 ? 1 : ctx.rng.int(2, 12) }, () => ctx.rng.pick(sources)),
      );
      const replies = await Promise.all(
        requests.map((req) => (req.length === 1 ? conn.dupFileDescriptor(req[0] as number).then((fd) => [fd]) : conn.dupFileDescriptors(req))),
      );
      const remote = replies.flat();
      const wanted = requests.flat();
      assert.equal(remote.length, wanted.length);
      assert.equal(new Set(remote).size, remote.length, 'every duplicate is distinct');
      replies.forEach((reply, i) => assert.equal(reply.length, requests[i]?.length));
      assert.deepEqual(await remoteIdentities(conn, remote), wanted.map(wireIdentity));
      // Calls interleaved with duplications keep their order too.
      const mixed = await Promise.all(
        Array.from({ length: 50 }, (_, i) => (i % 2 ? conn.call<number>('echo', i) : conn.dupFileDescriptor(w).then(() => i))),
      );
      assert.deepEqual(mixed, Array.from({ length: 50 }, (_, i) => i));
      await closeRemote(conn, remote.slice(0, ctx.rng.int(0, remote.length)));
      ctx.note(`${requests.length} requests, ${remote.length} fds in flight at once`);
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
  async bench(ctx) {
    const fd = makeMemfd('pipeline-bench');
    const conn = await ctx.connect(PROBE_COMMAND);
    // One operation: BENCH_DEPTH duplications in flight, until every reply is in.
    return dupBenchCase(
      conn,
      () => Promise.all(Array.from({ length: BENCH_DEPTH }, () => conn.dupFileDescriptor(fd))),
      () => closeFd(fd),
    );
  },
};

export default scenario;
