/**
 * src/native.ts (the typed binding of the addon) is private to src/: code
 * outside it (scenarios, harness, scripts, tests, what users see of fdbridge)
 * uses the public fd operations (src/fd.ts, exported from the package), the
 * raw-socket helpers (src/testing.ts) and, in tests, the counters and fakes
 * of src/test-hooks.ts instead. This test reads every TypeScript and
 * JavaScript file there and fails on an import, require or dynamic import
 * that resolves to src/native (or its compiled dist/src/native.js), and on a
 * path to dist/src/native.js written into a script a test runs in another
 * process.
 *
 * The tests of the addon itself, under test/native/, reach the binding
 * through one entry, test/native/binding.ts: it is the one file outside src/
 * that imports src/native, and nothing outside test/native/ imports it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

import { packageRoot } from '../../src/paths';

const CHECKED = ['harness', 'scenarios', 'scripts', 'test'];
const NATIVE = [join(packageRoot, 'src', 'native'), join(packageRoot, 'dist', 'src', 'native')];
const NATIVE_TESTS = join(packageRoot, 'test', 'native');
const BINDING_ENTRY = join(NATIVE_TESTS, 'binding');

/**
 * Files outside test/native/ that load the compiled binding by path, with why:
 * the fd tracker's tests need a native addon whose own frames make an fd, and
 * fdbridge's addon stands for any addon a user's code loads.
 */
const LOADS_ADDON_AS_ANY_ADDON = ['test/harness/track-fds.test.ts', 'test/harness/fd-origin.test.ts'];

/** The module specifiers `source` imports, requires or dynamically imports (comments included: a false alarm there costs a reword). */
export function moduleSpecifiers(source: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s*)(['"`])([^'"`\n]+)\1/g;
  for (let m = re.exec(source); m !== null; m = re.exec(source)) out.push(m[2] as string);
  return out;
}

/**
 * A path to dist/src/native(.js) built in a string, as a script run in
 * another process requires it: `join(packageRoot, 'dist', 'src', 'native.js')`,
 * `join(DIST_SRC, 'native.js')`, '.../dist/src/native'.
 */
const BUILT_NATIVE_PATH = /(?:\bdist['"]?\s*[,/]\s*['"]?src['"]?\s*[,/]\s*['"]?|\bDIST_SRC\s*,\s*['"])native(?:\.js)?['"]/;

/** Whether `specifier`, imported from the file at `from`, resolves to `targets` (.ts or .js). */
function resolvesTo(from: string, specifier: string, targets: readonly string[]): boolean {
  if (!specifier.startsWith('.')) return false;
  const target = resolve(dirname(from), specifier).replace(/\.(ts|js)$/, '');
  return targets.includes(target);
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.isFile() && /\.(ts|js)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** What `file` (its text: `source`) does that this test forbids, one line each. */
function offences(file: string, source: string): string[] {
  const name = relative(packageRoot, file).split(sep).join('/');
  const inNativeTests = file.startsWith(NATIVE_TESTS + sep);
  const out: string[] = [];
  for (const specifier of moduleSpecifiers(source)) {
    if (resolvesTo(file, specifier, NATIVE)) {
      // Under test/native, TypeScript goes through the entry; a JavaScript
      // fixture run as its own process has only the compiled file to load.
      const allowed = inNativeTests && (file.endsWith('.js') || file === `${BINDING_ENTRY}.ts`);
      if (!allowed) out.push(`${name} imports ${specifier}`);
    }
    if (resolvesTo(file, specifier, [BINDING_ENTRY]) && !inNativeTests) out.push(`${name} imports ${specifier} (the addon tests' entry)`);
  }
  if (BUILT_NATIVE_PATH.test(source) && !inNativeTests && !LOADS_ADDON_AS_ANY_ADDON.includes(name)) {
    out.push(`${name} names dist/src/native.js in a script it runs`);
  }
  return out;
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
    "const n = require('../dist/src/native.js');",
  ];
  for (const line of forms) {
    expect(moduleSpecifiers(line).some((s) => resolvesTo(from, s, NATIVE))).toBe(true);
  }
  // Other modules whose names end the same way are not it.
  expect(moduleSpecifiers("import { x } from '../src/not-native';").some((s) => resolvesTo(from, s, NATIVE))).toBe(false);
  expect(moduleSpecifiers("import { x } from './support/native';").some((s) => resolvesTo(from, s, NATIVE))).toBe(false);
});

test('each rule catches what it is for, and lets through what it allows', () => {
  const at = (path: string): string => join(packageRoot, ...path.split('/'));
  const imports = "import { native } from '../../src/native';";
  expect(offences(at('test/hostile/x.test.ts'), imports)).toEqual(['test/hostile/x.test.ts imports ../../src/native']);
  // Under test/native only the entry imports it; the tests import the entry.
  expect(offences(at('test/native/x.test.ts'), imports)).toEqual(['test/native/x.test.ts imports ../../src/native']);
  expect(offences(at('test/native/binding.ts'), imports)).toEqual([]);
  expect(offences(at('test/native/x.test.ts'), "import { native } from './binding';")).toEqual([]);
  expect(offences(at('test/native/fixture.js'), "const { native } = require('../../dist/src/native.js');")).toEqual([]);
  expect(offences(at('test/fuzz/x.ts'), "import { native } from '../native/binding';")).toEqual([
    "test/fuzz/x.ts imports ../native/binding (the addon tests' entry)",
  ]);
  // Scripts for other processes, in the forms tests build them.
  for (const script of [
    'const { native } = require(${JSON.stringify(join(DIST_SRC, \'native.js\'))});',
    'const { native } = require(${JSON.stringify(join(packageRoot, "dist", "src", "native.js"))});',
    "import { native } from ${JSON.stringify(join(packageRoot, 'dist', 'src', 'native'))};",
    "require('/opt/fdbridge/dist/src/native.js')",
  ]) {
    expect(offences(at('test/transports/x.test.ts'), script)).toEqual(['test/transports/x.test.ts names dist/src/native.js in a script it runs']);
  }
  expect(offences(at('test/transports/x.test.ts'), "require(join(DIST_SRC, 'testing.js')); join(packageRoot, 'native', 'x.cc')")).toEqual([]);
});

test('nothing outside src/ but the addon tests imports src/native, and they do through one entry', () => {
  const found: string[] = [];
  let files = 0;
  for (const top of CHECKED) {
    for (const file of sourceFiles(join(packageRoot, top))) {
      if (file === __filename) continue; // its examples name src/native on purpose
      files++;
      found.push(...offences(file, readFileSync(file, 'utf8')));
    }
  }
  expect(files).toBeGreaterThan(200); // the walk found the trees it checks
  expect(found).toEqual([]);
});
