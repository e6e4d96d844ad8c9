/**
 * `fdbridge/scenario`: what a scenario module needs. A scenario file
 * (`<verb>-<object>.scenario.js`, in a directory given to `fdbridge run
 * --scenarios DIR`) default-exports a Scenario:
 *
 *     import { defineScenario } from 'fdbridge/scenario';
 *     export default defineScenario({ name, description, async run(ctx) { ... } });
 */
import type { Scenario } from './types';

export type { BenchCase, ErrorMatcher, Expectation, ExpectedFailure, HelperControl, LeakMatcher, Scenario, ScenarioContext } from './types';
/** Thrown by the one check an expected-failure ('fail') scenario declares must fail. */
export { CheckFailure } from './check';
export type { Rng } from './rng';

/** Returns `scenario` as it is; it exists for the type checking and editor help of a scenario's literal. */
export function defineScenario(scenario: Scenario): Scenario {
  return scenario;
}
