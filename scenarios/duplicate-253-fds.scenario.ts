/**
 * The most one SCM_RIGHTS message can carry (SCM_MAX_FD = 253), of mixed
 * kinds, in one duplication: every fd arrives, in order, as the right file.
 */
import { strict as assert } from 'node:assert';

import { closeFd, makeEventfd, makeMemfd, makePipe, PROBE_COMMAND } from '../src';
import type { Scenario, ScenarioContext } from '../harness/types';
import { closeAll, closeRemote, dupBenchCase, remoteIdentities, wireIdentity } from './support/common';

const MAX = 253;

/** A few sources of different kinds; the caller closes them. */
function makeSources(): number[] {
  const [r, w] = makePipe();
  return [makeMemfd('batch-a'), makeMemfd('batch-b'), makeEventfd(), r, w];
}

/** 253 entries drawn (seeded) from the sources: repeats are fine, each gets its own duplicate. */
function drawList(ctx: ScenarioContext, sources: readonly number[]): number[] {
  return Array.from({ length: MAX }, () => ctx.rng.pick(sources));
}

const scenario: Scenario = {
  name: 'duplicate-253-fds',
  description: 'one duplication of 253 fds (SCM_MAX_FD, one message) of mixed kinds arrives whole and in order',
  tags: ['batch', 'conformance'],
  needs: ['every-kind'],
  async run(ctx) {
    const sources = makeSources();
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const list = drawList(ctx, sources);
      const remote = await conn.dupFileDescriptors(list);
      assert.equal(remote.length, MAX);
      assert.equal(new Set(remote).size, MAX, 'every duplicate is a distinct fd');
      const ids = await remoteIdentities(conn, remote);
      assert.deepEqual(ids, list.map(wireIdentity));
      // Half adopted and closed by the command; the connection closes the rest.
      const half = ctx.rng.shuffle(remote).slice(0, ctx.rng.int(1, MAX - 1));
      await closeRemote(conn, half);
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
  async bench(ctx) {
    const sources = makeSources();
    const list = drawList(ctx, sources);
    const conn = await ctx.connect(PROBE_COMMAND);
    return dupBenchCase(
      conn,
      () => conn.dupFileDescriptors(list),
      () => sources.forEach(closeFd),
    );
  },
};

export default scenario;
