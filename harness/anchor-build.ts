/**
 * The C anchor of the bench (native/bench/scm_pingpong.c) is a tool of this
 * repository, not part of the library: `npm run build` in a checkout builds
 * it into build/bench/, and a user's install compiles nothing for it. An
 * installed package ships only the source; the bench compiles it into its
 * own temporary directory when it runs there (with $CC, default cc).
 *
 * `node dist/harness/anchor-build.js` builds the checkout's copy.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { packageRoot } from '../src/paths';

const execFileAsync = promisify(execFile);

/** Where a checkout's build puts the C ping-pong. */
export function scmPingpongPath(): string {
  return join(packageRoot, 'build', 'bench', 'scm_pingpong');
}

/** Optimized as node-gyp's Release build of the addon is (-O3, frame pointers kept). */
const CFLAGS = ['-O3', '-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fno-omit-frame-pointer'];

/** Compiles the C ping-pong to `out`; rejects with the compiler's output when it cannot. */
export async function buildScmPingpong(out: string = scmPingpongPath()): Promise<string> {
  const cc = process.env['CC'] || 'cc';
  mkdirSync(dirname(out), { recursive: true });
  try {
    await execFileAsync(cc, [...CFLAGS, '-o', out, join(packageRoot, 'native', 'bench', 'scm_pingpong.c')]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why = e.code === 'ENOENT' ? `no C compiler (${cc}) on the PATH` : (e.stderr?.trim() || e.message);
    throw new Error(`cannot build the C anchor (native/bench/scm_pingpong.c): ${why}`, { cause: err });
  }
  return out;
}

/**
 * The C ping-pong to run: the checkout's build when there is one, else one
 * compiled into `dir` now.
 */
export async function scmPingpong(dir: string): Promise<string> {
  const built = scmPingpongPath();
  return existsSync(built) ? built : buildScmPingpong(join(dir, 'scm_pingpong'));
}

if (require.main === module) {
  buildScmPingpong().then(
    (out) => process.stderr.write(`built ${out}\n`),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
