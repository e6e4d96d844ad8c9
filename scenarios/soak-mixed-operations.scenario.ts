/**
 * Soak: 100,000 mixed operations per transport — single and folded
 * duplications, batches of random size up to 600, calls, adopt and close
 * on the far side, sampled identity checks, and releases by closing
 * connections with duplicates never adopted — over several clients at once
 * (8 on the run's one helper daemon). Zero leaks (the oracle), zero lost,
 * duplicated or mismatched replies, every sampled duplicate names the right
 * file, and the RSS of the client and of each command process grows by less
 * than 200 MB. Runs under `--profile soak` only (minutes, not seconds);
 * interleave-mixed-operations is its 5,000-operation sibling in the default
 * profile.
 */
import type { Scenario } from '../harness/types';
import { assertMixClean, runMix } from './support/soak';

const OPS = 100_000;

const scenario: Scenario = {
  name: 'soak-mixed-operations',
  description: '100,000 mixed operations over concurrent clients (8 on one helper): no leak, no lost or duplicated reply, bounded memory',
  tags: ['soak'],
  // The mix duplicates every kind of fd (eventfds included), as its sibling does.
  needs: ['every-kind'],
  async run(ctx) {
    assertMixClean(ctx, await runMix(ctx, OPS), OPS);
  },
};

export default scenario;
