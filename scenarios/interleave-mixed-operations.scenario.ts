/**
 * soak-mixed-operations at 5,000 operations, in the default profile: the
 * same mix (single, folded and batched duplications up to 600 fds, calls,
 * adopt and close, identity samples, releases by close) over concurrent
 * clients (8 on the helper daemon), every reply checked: none lost,
 * duplicated or answering another request; no leak.
 */
import type { Scenario } from '../harness/types';
import { assertMixClean, runMix } from './support/soak';

const OPS = 5_000;

const scenario: Scenario = {
  name: 'interleave-mixed-operations',
  description: '5,000 mixed operations over concurrent clients (8 on one helper), every reply checked: none lost or duplicated, no leak',
  tags: ['conformance'],
  needs: ['every-kind'],
  async run(ctx) {
    assertMixClean(ctx, await runMix(ctx, OPS), OPS);
  },
};

export default scenario;
