/**
 * src/native.ts (the typed binding of the addon) is private to src/: code
 * outside it (scenarios, harness, scripts, what users see of fdbridge) uses
 * the public fd operations (src/fd.ts, exported from the package) and the
 * raw-socket helpers (src/testing.ts) instead. This test reads every
 * TypeScript file there and fails on an import, require or dynamic import
 * that resolves to src/native.
 *
 * test/ is not held to it: test/native/ tests the binding itself, and other
 * suites reach it to play a misbehaving peer at the syscall level.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

import { packageRoot } from '../../src/paths';

const CHECKED = ['harness', 'scenarios', 'scripts'];
const NATIVE = join(packageRoot, 'src', 'native');

/** The module specifiers `source` imports, requires or dynamically imports (comments included: a false alarm there costs a reword). */
export function moduleSpecifiers(source: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s*)(['"`])([^'"`\n]+)\1/g;
  for (let m = re.exec(source); m !== null; m = re.exec(source)) out.push(m[2] as string);
  return out;
}

/** Whether `specifier`, imported from the file at `from`, names src/native (.ts or .js). */
function namesNative(from: string, specifier: string): boolean {
  if (!specifier.startsWith('.')) return false;
  const target = resolve(dirname(from), specifier).replace(/\.(ts|js)$/, '');
  return target === NATIVE;
}

function typescriptFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? typescriptFiles(join(dir, e.name)) : e.isFile() && e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

test('the specifier scanner sees every form of import', () => {
  const from = join(packageRoot, 'scenarios', 'x.scenario.ts');
  const forms = [
    "import { native } from '../src/native';",
    'import type { NativeBinding } from "../src/native.js";',
    "import '../src/native';",
    "const n = require('../src/native');",
    "const m = await import('../src/native');",
    "}import '../src/native';",
  ];
  for (const line of forms) {
    expect(moduleSpecifiers(line).some((s) => namesNative(from, s))).toBe(true);
  }
  // Other modules whose names end the same way are not it.
  expect(moduleSpecifiers("import { x } from '../src/not-native';").some((s) => namesNative(from, s))).toBe(false);
  expect(moduleSpecifiers("import { x } from './support/native';").some((s) => namesNative(from, s))).toBe(false);
});

test('nothing outside src/ (but tests) imports src/native', () => {
  const offenders: string[] = [];
  let files = 0;
  for (const top of CHECKED) {
    for (const file of typescriptFiles(join(packageRoot, top))) {
      files++;
      for (const specifier of moduleSpecifiers(readFileSync(file, 'utf8'))) {
        if (namesNative(file, specifier)) offenders.push(`${relative(packageRoot, file)} imports ${specifier}`);
      }
    }
  }
  expect(files).toBeGreaterThan(50); // the walk found the trees it checks
  expect(offenders).toEqual([]);
});
