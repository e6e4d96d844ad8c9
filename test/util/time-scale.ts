/**
 * How much slower than a plain build the code under test runs here:
 * FDBRIDGE_TEST_TIME_SCALE (1 unless set; scripts/test-sanitize.sh sets it
 * for the ASan + UBSan build, which every process the tests start preloads).
 * It scales what only guards against a hang (jest's limit on a test, a
 * connect's or a row's own time limit where no test is about that limit),
 * never a time a test checks, as Node's own suites scale theirs
 * (common.platformTimeout) for sanitizer and debug builds.
 */
export const TIME_SCALE = timeScale(process.env['FDBRIDGE_TEST_TIME_SCALE']);

function timeScale(value: string | undefined): number {
  if (value === undefined || value === '') return 1;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 1) throw new RangeError(`FDBRIDGE_TEST_TIME_SCALE must be a number >= 1, not ${JSON.stringify(value)}`);
  return n;
}

/** `ms` scaled by TIME_SCALE (a whole number of ms). */
export function scaled(ms: number): number {
  return Math.ceil(ms * TIME_SCALE);
}

/** What a test gives each of its runs of rows beyond the rows' own limits (loading the scenarios, a helper daemon's start, the looks). */
const RUN_MARGIN_MS = 30_000;

/**
 * jest's limit for a test that runs rows, property runs of them one after
 * another (fast-check with endOnFailure: a failed run is the last), at most
 * `rows` rows a run, each with the time limit `rowMs`
 * (RunnerOptions.timeoutMs, unscaled here: pass scaled(rowMs) to the
 * runner): should every row of a run hang, each reaching its limit twice
 * (run(), then the wait for the callbacks it scheduled), the run still ends
 * with the rows' own failures, before jest's limit would fail the test
 * without a word. Scaled.
 */
export function rowsTestLimit(o: { rowMs: number; rows: number; runs: number }): number {
  return scaled(o.rows * 2 * o.rowMs + o.runs * RUN_MARGIN_MS);
}
