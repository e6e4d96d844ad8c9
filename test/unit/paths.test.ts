/**
 * Where the compiled JavaScript lives (src/paths.ts): the package root is
 * the nearest directory at or above the module's own that holds
 * binding.gyp, however far up (generated: copies of the compiled module at
 * depths 0 to 5 under a directory with one); with none up to `/`, loading
 * the module fails naming where it looked. distPath joins under
 * `<root>/dist`; requireDistFile returns that path when the file is there
 * and otherwise fails naming the file and the command that builds it.
 * Opens no fd it keeps.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { distPath, packageRoot, requireDistFile } from '../../src/paths';

const RUNS = { seed: 20261204, numRuns: 20 };

/** The repository: this file is test/unit/paths.test.ts. */
const ROOT = join(__dirname, '..', '..');
const COMPILED = join(ROOT, 'dist', 'src', 'paths.js');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-paths-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('the package root is the repository; distPath and requireDistFile name files under its dist/', () => {
  expect(packageRoot).toBe(ROOT);
  expect(distPath('src/paths.js')).toBe(COMPILED);
  expect(requireDistFile('src/paths.js')).toBe(COMPILED);
});

test('requireDistFile of a file the build did not make: an error naming it and how to build', () => {
  const missing = join(ROOT, 'dist', 'src', 'no-such-module.js');
  expect(() => requireDistFile('src/no-such-module.js')).toThrow(
    new Error(`fdbridge: ${missing} is missing; build the TypeScript first (\`npm run build\` or \`npx tsc -p .\`)`),
  );
});

let copies = 0;

test('generated: the nearest binding.gyp at or above the module, however far up', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 2 }), (depth, above) => {
      // binding.gyp in `root` and in `above` directories over it; the module `depth` levels under it.
      const base = join(dir, `tree-${copies++}`);
      const parts = Array.from({ length: above }, (_, i) => `up${i}`);
      const root = join(base, ...parts);
      const here = join(root, ...Array.from({ length: depth }, (_, i) => `d${i}`));
      mkdirSync(here, { recursive: true });
      for (let i = 0; i <= above; i++) writeFileSync(join(base, ...parts.slice(0, i), 'binding.gyp'), '{}');
      copyFileSync(COMPILED, join(here, 'paths.js'));
      const loaded = require(join(here, 'paths.js')) as typeof import('../../src/paths');
      expect(loaded.packageRoot).toBe(root);
      expect(loaded.distPath('a/b.js')).toBe(join(root, 'dist', 'a', 'b.js'));
    }),
    RUNS,
  );
});

test('no binding.gyp up to /: loading the module fails naming where it looked', () => {
  const here = join(dir, 'no-root', 'a');
  mkdirSync(here, { recursive: true });
  copyFileSync(COMPILED, join(here, 'paths.js'));
  expect(() => require(join(here, 'paths.js'))).toThrow(new Error(`fdbridge: cannot find the package root above ${here}`));
});
