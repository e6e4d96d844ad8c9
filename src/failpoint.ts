/**
 * Failpoints: a testing aid that makes the command's process (a child or
 * pidfd command process, or a helper daemon) SIGKILL itself at a chosen step
 * of a request, so that fault tests can kill it exactly there rather than
 * "soon, probably". Set through the environment of that process:
 *
 *     FDBRIDGE_FAILPOINT=after-receive      SIGKILL after the first DUP/GETFD request's
 *                                           fds are installed here, before the reply
 *     FDBRIDGE_FAILPOINT=after-receive:2    ... after the second such request (a 600-fd
 *                                           dupFileDescriptors is 3 requests: mid-batch)
 *     FDBRIDGE_FAILPOINT=on-close           SIGKILL when the client's CLOSE arrives,
 *                                           before the command is closed and CLOSED sent
 *
 * Requests are counted per process (a helper daemon counts over all its
 * clients). The variable is read once, when the serving code is loaded; when
 * it is unset nothing else happens (one `undefined` check per request). A
 * value that does not parse makes serving fail at once instead of being
 * ignored: a fault test must not pass because its fault never fired.
 *
 * Not for production: it kills the process on purpose.
 */

/** The environment variable read by the serving side. */
export const FAILPOINT_ENV = 'FDBRIDGE_FAILPOINT';

/** Where a failpoint can fire. */
export const FAILPOINT_NAMES = ['after-receive', 'on-close'] as const;
export type FailpointName = (typeof FAILPOINT_NAMES)[number];

export interface FailpointSpec {
  point: FailpointName;
  /** Fire at the hit-th passage (1-based). */
  hit: number;
}

/**
 * Parses `<point>[:N]` (N a positive integer, default 1). Throws a
 * RangeError naming the accepted forms otherwise.
 */
export function parseFailpoint(text: string): FailpointSpec {
  const m = /^([a-z-]+)(?::(\d+))?$/.exec(text.trim());
  const point = FAILPOINT_NAMES.find((name) => name === m?.[1]);
  const hit = m?.[2] === undefined ? 1 : Number(m[2]);
  if (point === undefined || !Number.isSafeInteger(hit) || hit < 1) {
    throw new RangeError(
      `${FAILPOINT_ENV}=${JSON.stringify(text)} is not a failpoint; use <point>[:N] with point one of ${FAILPOINT_NAMES.join(', ')} and N >= 1`,
    );
  }
  return { point, hit };
}

/** An armed failpoint: counts passages of its point and fires once, at the chosen one. */
export class Failpoint {
  readonly spec: FailpointSpec;
  #left: number;
  readonly #fire: () => void;

  /** `fire` defaults to SIGKILL of this process (tests pass their own). */
  constructor(spec: FailpointSpec, fire: () => void = () => process.kill(process.pid, 'SIGKILL')) {
    this.spec = spec;
    this.#left = spec.hit;
    this.#fire = fire;
  }

  /** Marks one passage of `point`; fires on the spec's hit-th passage (and never again). */
  pass(point: FailpointName): void {
    // Past the hit-th passage the count goes on below 0: it reaches 0 once.
    if (point === this.spec.point && --this.#left === 0) this.#fire();
  }
}

/**
 * The failpoint `env` asks for: undefined when the variable is unset or
 * empty, an armed Failpoint, or the parse error (to be thrown by whoever
 * starts serving; throwing at module load would break every process that
 * merely imports the library with a bad value in its environment).
 */
export function failpointFromEnv(env: NodeJS.ProcessEnv = process.env): Failpoint | RangeError | undefined {
  const text = env[FAILPOINT_ENV];
  if (text === undefined || text === '') return undefined;
  try {
    return new Failpoint(parseFailpoint(text));
  } catch (err) {
    return err as RangeError;
  }
}
