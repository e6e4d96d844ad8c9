/**
 * The C anchors of the bench (native/bench/scm_pingpong.c, the ping-pong;
 * native/bench/frame_bench.c, the frame server and its load generator) are
 * tools of this repository, not part of the library: `npm run build` in a
 * checkout builds them into build/bench/, and a user's install compiles
 * nothing for them. An installed package ships only the sources; the bench
 * compiles them into its own temporary directory when it runs there (with
 * $CC, default cc).
 *
 * `node dist/harness/anchor-build.js` builds the checkout's copies.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { packageRoot } from '../src/paths';

const execFileAsync = promisify(execFile);

/** The C anchors, by the name of their source (native/bench/NAME.c) and binary. */
export type CAnchorName = 'scm_pingpong' | 'frame_bench';
const C_ANCHORS: readonly CAnchorName[] = ['scm_pingpong', 'frame_bench'];

/** Where a checkout's build puts C anchor `name`. */
export function cAnchorPath(name: CAnchorName): string {
  return join(packageRoot, 'build', 'bench', name);
}

/** Where a checkout's build puts the C ping-pong. */
export function scmPingpongPath(): string {
  return cAnchorPath('scm_pingpong');
}

/** Optimized as node-gyp's Release build of the addon is (-O3, frame pointers kept). */
const CFLAGS = ['-O3', '-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fno-omit-frame-pointer'];

/** Compiles C anchor `name` to `out`; rejects with the compiler's output when it cannot. */
export async function buildCAnchor(name: CAnchorName, out: string = cAnchorPath(name)): Promise<string> {
  const cc = process.env['CC'] || 'cc';
  mkdirSync(dirname(out), { recursive: true });
  try {
    await execFileAsync(cc, [...CFLAGS, '-o', out, join(packageRoot, 'native', 'bench', `${name}.c`)]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why = e.code === 'ENOENT' ? `no C compiler (${cc}) on the PATH` : (e.stderr?.trim() || e.message);
    throw new Error(`cannot build the C anchor (native/bench/${name}.c): ${why}`, { cause: err });
  }
  return out;
}

/** Compiles the C ping-pong to `out`. */
export function buildScmPingpong(out: string = scmPingpongPath()): Promise<string> {
  return buildCAnchor('scm_pingpong', out);
}

/**
 * C anchor `name` to run: the checkout's build when there is one, else one
 * compiled into `dir` now.
 */
export async function cAnchor(name: CAnchorName, dir: string): Promise<string> {
  const built = cAnchorPath(name);
  return existsSync(built) ? built : buildCAnchor(name, join(dir, name));
}

/** The C ping-pong to run (see cAnchor). */
export function scmPingpong(dir: string): Promise<string> {
  return cAnchor('scm_pingpong', dir);
}

if (require.main === module) {
  Promise.all(C_ANCHORS.map((name) => buildCAnchor(name))).then(
    (outs) => process.stderr.write(`built ${outs.join(', ')}\n`),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
