#!/usr/bin/env node
/**
 * The package's install step (package.json "install"). Plain JavaScript: it
 * runs before anything is compiled.
 *
 * An installed package carries prebuilt binaries (prebuilds/<platform>-<arch>/,
 * one Node-API build for every supported Node). When one matches this
 * platform and loads, there is nothing to do. Otherwise the addon is built
 * from source with node-gyp, which needs python3, make and a C++17 compiler:
 * those are checked first, so that a missing one is named in one line rather
 * than in node-gyp's forty.
 *
 * A checkout of the repository (it has tsconfig.json, which the package does
 * not ship) always builds from source: a prebuilt binary there could be
 * older than native/. So does `npm rebuild fdbridge --build-from-source`
 * (npm_config_build_from_source).
 */
'use strict';

const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { delimiter, join } = require('node:path');

const root = join(__dirname, '..');

function say(line) {
  process.stderr.write(`fdbridge: ${line}\n`);
}

/** The prebuilt binary for this platform, if one is there and loads; else why not. */
function usablePrebuild() {
  let file;
  try {
    // Only prebuilds: a build/ left in the package is not what was shipped.
    process.env.PREBUILDS_ONLY = '1';
    file = require('node-gyp-build').resolve(root);
  } catch {
    return { why: `no prebuilt binary for ${process.platform}-${process.arch} (${libc()}) in this package` };
  } finally {
    delete process.env.PREBUILDS_ONLY;
  }
  try {
    require(file);
    return { file };
  } catch (err) {
    // e.g. a glibc older than the one it was built against.
    return { why: `the prebuilt binary ${file} does not load here: ${String(err.message).split('\n')[0]}` };
  }
}

function libc() {
  return existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
}

/** The first of `names` found on the PATH (or given as an absolute path), else undefined. */
function which(names) {
  for (const name of names) {
    if (!name) continue;
    if (name.includes('/')) {
      if (existsSync(name)) return name;
      continue;
    }
    for (const dir of (process.env.PATH || '').split(delimiter)) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return undefined;
}

/** What building from source needs and is missing here. */
function missingTools() {
  const missing = [];
  const env = process.env;
  if (!which([env.npm_config_python, env.PYTHON, 'python3', 'python'])) missing.push('python3');
  if (!which(['make'])) missing.push('make');
  if (!which([env.CXX, 'g++', 'c++', 'clang++'])) missing.push('a C++17 compiler (g++)');
  return missing;
}

/** How to run node-gyp: this checkout's own (a devDependency), else npm's (npm_config_node_gyp), else the PATH's. */
function nodeGyp() {
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] })];
  } catch {
    const bundled = process.env.npm_config_node_gyp;
    if (bundled && existsSync(bundled)) return [process.execPath, bundled];
    return ['node-gyp'];
  }
}

function buildFromSource(reason) {
  say(`${reason}; building the native addon from source (node-gyp)`);
  const missing = missingTools();
  if (missing.length > 0) {
    say(
      `cannot build from source: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed. ` +
        'Building needs python3, make and a C++17 compiler (e.g. `apt-get install python3 make g++`, ' +
        '`apk add python3 make g++`). Prebuilt binaries cover linux-x64 and linux-arm64 with glibc.',
    );
    return 1;
  }
  const [cmd, ...args] = nodeGyp();
  const r = spawnSync(cmd, [...args, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status === 0) return 0;
  say(
    `building from source failed (node-gyp rebuild: ${r.error ? r.error.message : `exit status ${r.status}`}; ` +
      'its output is above). It needs python3, make, a C++17 compiler and the Node.js headers ' +
      '(node-gyp downloads them, or set npm_config_nodedir).',
  );
  return 1;
}

function main() {
  if (existsSync(join(root, 'tsconfig.json'))) return buildFromSource('a checkout of the repository');
  const fromSource = process.env.npm_config_build_from_source;
  if (fromSource === 'true' || fromSource === 'fdbridge') return buildFromSource('--build-from-source');
  const prebuild = usablePrebuild();
  if (prebuild.file) return 0;
  return buildFromSource(prebuild.why);
}

process.exitCode = main();
