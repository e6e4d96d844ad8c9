/**
 * What each transport preserves of an fd it duplicates (src/capabilities.ts),
 * and the reason a scenario that needs more is skipped with: every transport
 * but remote hands over the caller's open file description and preserves all
 * six capabilities; remote relays bytes and preserves none, and its reason
 * names every capability asked for that it lacks, in the order asked, once
 * each as given. Generated: any transport with any list of needs. Pure
 * functions: no fd is opened here.
 */
import fc from 'fast-check';

import { CAPABILITIES, type Capability, missingCapabilities, transportCapabilities } from '../../src';
import { transportNames } from '../../src/transports';

const RUNS = { seed: 20261204, numRuns: 200 };

const SIX: Capability[] = ['identity', 'shared-offset', 'fstat', 'locks', 'pass-on', 'every-kind'];
const WHOLE = ['direct', 'worker', 'child', 'helper', 'pidfd'] as const;
const REMOTE_WHY = "the remote transport relays bytes: the command gets a local fd of its own, not the client's open file";

test('CAPABILITIES names the six, each once', () => {
  expect([...CAPABILITIES]).toEqual(SIX);
});

test('every transport but remote preserves every capability; remote preserves none', () => {
  expect(transportNames().sort()).toEqual([...WHOLE, 'remote'].sort());
  for (const t of WHOLE) expect([...transportCapabilities(t)].sort()).toEqual([...SIX].sort());
  expect([...transportCapabilities('remote')]).toEqual([]);
});

test('generated: missingCapabilities is undefined where the transport has every need, else names the missing ones and why', () => {
  fc.assert(
    fc.property(fc.constantFrom(...WHOLE, 'remote' as const), fc.option(fc.array(fc.constantFrom(...SIX), { maxLength: 8 }), { nil: undefined }), (transport, needs) => {
      const why = missingCapabilities(transport, needs);
      if (transport !== 'remote' || needs === undefined || needs.length === 0) {
        expect(why).toBeUndefined();
      } else {
        expect(why).toBe(`needs ${needs.join(', ')}: ${REMOTE_WHY}`);
      }
    }),
    RUNS,
  );
});
