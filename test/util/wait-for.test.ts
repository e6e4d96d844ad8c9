/**
 * HangGuard (wait-for.ts), the bounded waits of tests that look at a state
 * until it holds: a wait resolves with what it saw once it holds, and one
 * that never ends rejects with a TimeoutError that says what it waited for
 * and the last state seen, the guard's time shared by a test's waits.
 */
import fc from 'fast-check';

import { TimeoutError } from '../../src/errors';
import { assertGuarded, HangGuard } from './wait-for';

test('generated: until resolves with the first state that holds; past the guard it rejects naming what it waited for and the last state seen', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 60 }), async (holdsAt, guardMs) => {
      let looks = 0;
      const seen = await new HangGuard(60_000).until('the count reaching its mark', () => looks++, (n) => n >= holdsAt, { pollMs: 1 });
      expect(seen).toBe(holdsAt);
      let last: unknown;
      const err = await new HangGuard(guardMs)
        .until(
          'a state that never comes',
          () => (last = { looked: looks++ }),
          () => false,
          { pollMs: 1 },
        )
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as Error).message).toContain(`a state that never comes: not within the hang guard (${guardMs} ms`);
      expect((err as Error).message).toContain(`the last state seen: ${JSON.stringify(last)}`);
    }),
    { numRuns: 10 },
  );
});

test('generated: within resolves or rejects as the promise does; one that never settles rejects past the guard with the state told then; the waits share the guard', async () => {
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 40 }), async (fulfils, guardMs) => {
      const guard = new HangGuard(guardMs);
      const settled = fulfils ? Promise.resolve('value') : Promise.reject(new RangeError('its own'));
      expect(await guard.within(settled, 'a promise that settles').catch((e: unknown) => e)).toEqual(fulfils ? 'value' : new RangeError('its own'));
      let state = 0;
      const err = await guard.within(new Promise<never>(() => undefined), 'a promise that never settles', () => `state ${++state}`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as Error).message).toBe(`a promise that never settles: not within the hang guard (${guardMs} ms); the last state seen: state 1`);
      // Its time used up (a wait of it ended past it), a later wait of the same guard ends at once.
      expect(guard.leftMs).toBe(0);
      await expect(guard.until('another wait', () => 0, () => false)).rejects.toBeInstanceOf(TimeoutError);
    }),
    { numRuns: 10 },
  );
});

test('generated: a step of the wall clock, back or forward, moves no guard\'s deadline', () => {
  const wallClock = Date.now;
  fc.assert(
    fc.property(fc.integer({ min: 1_000, max: 60_000 }), fc.constantFrom(-3_600_000, 3_600_000), (ms, step) => {
      const guard = new HangGuard(ms);
      const stepped = jest.spyOn(Date, 'now').mockImplementation(() => wallClock() + step);
      try {
        const left = guard.leftMs;
        // Nothing of the guard's time is used up in these few lines, and none added.
        expect({ positive: left > 0, atMostMs: left <= ms }).toEqual({ positive: true, atMostMs: true });
      } finally {
        stepped.mockRestore();
      }
    }),
    { numRuns: 10 },
  );
});

test("generated: assertGuarded ends at a property's first failed run, a wait past its hang guard, and reports that wait's TimeoutError and that run's case; no run after it", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 1, max: 20 }), async (failingRun, guardMs) => {
      const cases: number[] = [];
      const err = await assertGuarded(
        fc.asyncProperty(fc.integer({ min: 0, max: 1000 }), async (n) => {
          cases.push(n);
          // The run that hangs: a wait that never settles, ended by its guard.
          if (cases.length === failingRun + 1) await new HangGuard(guardMs).within(new Promise<never>(() => undefined), `run ${failingRun}'s wait`, () => `case ${n}`);
        }),
        { numRuns: 10 },
      ).catch((e: unknown) => e);
      expect(cases).toHaveLength(failingRun + 1);
      // The wait's own error is the failure's cause (jest prints it under the property's).
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain(`Counterexample: [${cases[failingRun]}]`);
      expect((err as Error).cause).toBeInstanceOf(TimeoutError);
      expect(((err as Error).cause as Error).message).toBe(`run ${failingRun}'s wait: not within the hang guard (${guardMs} ms); the last state seen: case ${cases[failingRun]}`);
    }),
    { numRuns: 10 },
  );
});
