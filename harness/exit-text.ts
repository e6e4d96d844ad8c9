/**
 * How a process ended, in the harness's words (a row's, a daemon's, a
 * server's that exited before it listened).
 */

/** How a process ended: its exit code or the signal that ended it (both null: not known, or it never started). */
export interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * How a process ended, in a row's words: 'signal SIGKILL', or its exit code
 * after `codeWord` ('exit code 3'; a row process's own is 'status 3');
 * undefined when neither is known.
 */
export function exitText(how: Ended, codeWord: 'exit code' | 'status' = 'exit code'): string | undefined {
  if (how.signal !== null) return `signal ${how.signal}`;
  if (how.code !== null) return `${codeWord} ${how.code}`;
  return undefined;
}
