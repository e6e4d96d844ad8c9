/**
 * Argument checks as Node's own validators make them (lib/internal/validators.js):
 * a value of the wrong type is a TypeError (`code` ERR_INVALID_ARG_TYPE), a
 * number out of range or not an integer a RangeError (ERR_OUT_OF_RANGE),
 * each naming the argument, thrown before anything is done with it.
 */

/** A TypeError or RangeError carrying Node's `code` for it. */
function argumentError<E extends TypeError | RangeError>(error: E, code: string): E {
  return Object.assign(error, { code });
}

/** How a bad value reads in a message (a string quoted, a bigint with its n). */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'function' || typeof value === 'symbol') return `a ${typeof value}`;
  // Not String(): an object's own toString may be anything (not a function, one that throws).
  if (value !== null && typeof value === 'object') return 'an object';
  return String(value);
}

/** A TypeError (ERR_INVALID_ARG_TYPE) whose message starts with `name`. */
export function invalidType(name: string, expected: string, value: unknown): TypeError {
  return argumentError(new TypeError(`${name} must be ${expected}, not ${describeValue(value)}`), 'ERR_INVALID_ARG_TYPE');
}

/** `value` as an integer from `min` to `max`; else a TypeError (not a number) or a RangeError naming `name`. */
export function validateInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidType(name, `an integer from ${min} to ${max}`, value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw argumentError(new RangeError(`${name} must be an integer from ${min} to ${max}, not ${value}`), 'ERR_OUT_OF_RANGE');
  }
  return value;
}

/** `value` as an fd number (an integer from 0 to 2^31 - 1); else a TypeError (not a number) or a RangeError naming `name`. */
export function validateFdArgument(value: unknown, name: string): number {
  return validateInteger(value, name, 0, 2 ** 31 - 1);
}

/**
 * `value` as a list of integers from `min` to `max`, copied: not an array is
 * a TypeError naming `name` (which says what it must be: `expected`); an entry
 * that is not such an integer a TypeError or RangeError naming it (`name[i]`).
 */
export function validateIntegerList(value: unknown, name: string, expected: string, min: number, max: number): number[] {
  // A string or a Set would otherwise be read by its own includes()/has(): '100001'.includes(1000) is true.
  if (!Array.isArray(value)) throw invalidType(name, expected, value);
  // By index: a hole of a sparse list is refused as the undefined it reads as.
  const list: number[] = [];
  for (let i = 0; i < value.length; i++) list.push(validateInteger(value[i], `${name}[${i}]`, min, max));
  return list;
}

/** The longest delay setTimeout keeps: past it (or NaN, or Infinity) Node fires the timer after 1 ms. */
export const MAX_TIMEOUT_MS = 0x7fffffff;

/**
 * `value` as a delay in ms for a timer: an integer from `min` to
 * MAX_TIMEOUT_MS; anything else (a non-number too) a RangeError
 * (ERR_OUT_OF_RANGE) naming `name`, where setTimeout would fire at once.
 * The message shows `given`: what the caller wrote, when `value` was parsed from it.
 */
export function validateTimeoutMs(value: unknown, name: string, min = 0, given: unknown = value): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMEOUT_MS) {
    throw argumentError(new RangeError(`${name} must be an integer from ${min} to ${MAX_TIMEOUT_MS} (ms), not ${describeValue(given)}`), 'ERR_OUT_OF_RANGE');
  }
  return value;
}

/**
 * `value` as a deadline in ms from now: any finite number from 0, fractions
 * and values past setTimeout's range included (it is compared with the
 * clock, never given to a timer; a caller's remaining time has fractions);
 * anything else (NaN would never pass, a non-number) a RangeError
 * (ERR_OUT_OF_RANGE) naming `name`.
 */
export function validateDeadlineMs(value: unknown, name: string): number {
  // Number.isFinite does not coerce: a non-number is never finite.
  if (!Number.isFinite(value) || (value as number) < 0) {
    throw argumentError(new RangeError(`${name} must be a finite number of ms from 0, not ${describeValue(value)}`), 'ERR_OUT_OF_RANGE');
  }
  return value as number;
}
