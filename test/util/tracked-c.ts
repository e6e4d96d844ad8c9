/**
 * A C program run under the native recorder (native/fdtrack/fdtrack.c), for
 * the tests of what it records in processes Node is not part of.
 */
import { execFileSync } from 'node:child_process';
import { basename, join } from 'node:path';

import { fdtrackLibrary, trackingEnvironment } from '../../src/fd-track';

/**
 * Compiles `source` (a C file, with -pthread) into `dir` and runs it with
 * `args` under the recorder, which records into `dir`; returns its stdout.
 */
export function runCUnderTracker(dir: string, source: string, args: readonly string[] = []): string {
  const library = fdtrackLibrary(dir);
  if (library.path === undefined) throw new Error(`the interposer could not be built: ${library.unavailable}`);
  const program = join(dir, basename(source, '.c'));
  execFileSync('cc', ['-O0', '-pthread', '-o', program, source]);
  return execFileSync(program, [...args], { env: { ...process.env, ...trackingEnvironment(dir, library.path, process.env) }, encoding: 'utf8' });
}
