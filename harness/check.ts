/**
 * The failure an expected-failure scenario declares: a named check of its
 * own that must be the one to fail. A 'fail' scenario throws this from the
 * exact check the reproduced bug breaks, and declares the name
 * (`failure: { error: { check: 'fd-crossed-exec' } }`); any other error
 * (an assertion on the way there, a library error) fails the row for real.
 */
export class CheckFailure extends Error {
  readonly code = 'ERR_SCENARIO_CHECK';

  constructor(
    readonly check: string,
    message: string,
  ) {
    super(`${check}: ${message}`);
    this.name = 'CheckFailure';
  }
}
