/**
 * Where the compiled JavaScript lives. Workers, children and helpers run
 * plain JS from dist/ (built by `npm ci`/`npm run build`), also when the
 * client itself runs from TypeScript sources (ts-jest, ts-node).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The directory holding package.json and build/ (src/ under ts-jest,
 * dist/src/ when built). Found without loading the addon, so that
 * `fdbridge --version` works on a broken install.
 */
export const packageRoot: string = (() => {
  let dir = __dirname;
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`fdbridge: cannot find the package root above ${__dirname}`);
    dir = up;
  }
})();

/** Absolute path of a compiled module, e.g. distPath('src/commands/log-command.js'). */
export function distPath(relative: string): string {
  return join(packageRoot, 'dist', relative);
}

/** Like distPath, but fails with a clear message when the build is missing. */
export function requireDistFile(relative: string): string {
  const p = distPath(relative);
  if (!existsSync(p)) {
    throw new Error(`fdbridge: ${p} is missing; build the TypeScript first (\`npm run build\` or \`npx tsc -p .\`)`);
  }
  return p;
}
