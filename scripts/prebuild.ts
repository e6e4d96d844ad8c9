/**
 * `npm run prebuilds [-- ARCH...]`: the prebuilt binaries the package ships,
 * prebuilds/linux-<arch>/fdbridge.napi.glibc.node (node-gyp-build's naming:
 * one Node-API build serves every supported Node). Default: x64 and arm64,
 * the other one cross-compiled (Debian: g++-aarch64-linux-gnu or
 * g++-x86-64-linux-gnu), or those listed in FDBRIDGE_PREBUILD_ARCHS
 * (x64,arm64). `npm pack` runs it (prepack).
 *
 * Each arch is built in a temporary copy of binding.gyp and native/ (not
 * native/bench: the bench's tool is no part of the package), so the
 * checkout's own build/ is never replaced by another arch's. Each result is
 * stripped and its ELF machine checked; the newest glibc symbol version it
 * needs is printed (the oldest glibc it loads on). An install on an older
 * glibc finds it does not load and builds from source (scripts/install.js).
 *
 * FDBRIDGE_PREBUILD_HOST_ADDON names a Release build of these same sources
 * for this machine's arch (the pack test's: its checkout's
 * build/Release/fdbridge.node, brought up to date with native/ by make):
 * that arch's binary is then that file, stripped and checked like a build
 * here, instead of the same sources compiled a second time.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { arch as hostArch, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

import { packageRoot } from '../src/paths';

interface Target {
  /** Node's name for it (process.arch). */
  arch: string;
  /** GNU triple of its cross toolchain. */
  triple: string;
  /** ELF e_machine. */
  machine: number;
}

const TARGETS: Record<string, Target> = {
  x64: { arch: 'x64', triple: 'x86_64-linux-gnu', machine: 62 },
  arm64: { arch: 'arm64', triple: 'aarch64-linux-gnu', machine: 183 },
};

/** Where node-gyp-build looks for `arch`'s binary. */
export function prebuildPath(arch: string): string {
  return join(packageRoot, 'prebuilds', `linux-${arch}`, 'fdbridge.napi.glibc.node');
}

/**
 * Node's headers, without a download: npm's nodedir setting, else the
 * running Node's own (a distribution's /usr/include/node, or the include/
 * beside an unpacked Node's bin/). Node-API's headers are the same for every
 * arch.
 */
function nodeDir(): string | undefined {
  const configured = process.env['npm_config_nodedir'];
  if (configured) return configured;
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function onPath(name: string): boolean {
  return (process.env['PATH'] ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, name)));
}

/** The compilers for `target`: the host's own (CC/CXX, else gcc/g++), or the cross toolchain's. */
function toolchain(target: Target): { env: NodeJS.ProcessEnv; strip: string } {
  if (target.arch === hostArch()) {
    const cxx = process.env['CXX'] || 'g++';
    return { env: { CC: process.env['CC'] || 'gcc', CXX: cxx, LINK: cxx }, strip: 'strip' };
  }
  const prefix = `${target.triple}-`;
  if (!onPath(`${prefix}g++`)) {
    throw new Error(
      `cannot build linux-${target.arch}: no cross compiler ${prefix}g++ on the PATH ` +
        `(Debian: apt-get install g++-${target.triple.replace(/_/g, '-')})`,
    );
  }
  return {
    env: { CC: `${prefix}gcc`, CXX: `${prefix}g++`, LINK: `${prefix}g++`, AR: `${prefix}ar` },
    strip: `${prefix}strip`,
  };
}

function elfMachine(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const header = Buffer.alloc(20);
    readSync(fd, header, 0, 20, 0);
    if (header.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
    return header.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}

/** The newest GLIBC_x.y among the symbol versions `file` needs (objdump -T), or undefined. */
function newestGlibc(file: string, triple: string): string | undefined {
  const objdump = onPath(`${triple}-objdump`) ? `${triple}-objdump` : 'objdump';
  let out: string;
  try {
    out = execFileSync(objdump, ['-T', file], { encoding: 'utf8' });
  } catch {
    return undefined;
  }
  const versions = [...out.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const last = versions.at(-1);
  return last ? `${last[0]}.${last[1]}` : undefined;
}

/** The Release build FDBRIDGE_PREBUILD_HOST_ADDON names, for `target` when it is this machine's arch; else undefined. */
function hostAddon(target: Target): string | undefined {
  const file = process.env['FDBRIDGE_PREBUILD_HOST_ADDON'];
  if (!file || target.arch !== hostArch()) return undefined;
  if (!existsSync(file)) throw new Error(`FDBRIDGE_PREBUILD_HOST_ADDON names ${file}, which does not exist`);
  return file;
}

export function prebuild(target: Target): string {
  const { env, strip } = toolchain(target);
  const work = mkdtempSync(join(tmpdir(), `fdbridge-prebuild-${target.arch}-`));
  try {
    const built = join(work, 'build', 'Release', 'fdbridge.node');
    const given = hostAddon(target);
    if (given) {
      mkdirSync(dirname(built), { recursive: true });
      copyFileSync(given, built);
    } else {
      compile(target, env, work);
    }
    execFileSync(strip, ['--strip-unneeded', built]);
    const machine = elfMachine(built);
    if (machine !== target.machine) {
      throw new Error(`linux-${target.arch}: built an ELF for machine ${machine}, not ${target.machine} (wrong compiler?)`);
    }
    const out = prebuildPath(target.arch);
    mkdirSync(join(out, '..'), { recursive: true });
    copyFileSync(built, out);
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Builds the addon for `target` with node-gyp in `work` (build/Release/fdbridge.node there). */
function compile(target: Target, env: NodeJS.ProcessEnv, work: string): void {
  copyFileSync(join(packageRoot, 'binding.gyp'), join(work, 'binding.gyp'));
  mkdirSync(join(work, 'native'));
  for (const f of readdirSync(join(packageRoot, 'native'))) {
    if (/\.(cc|h)$/.test(f)) cpSync(join(packageRoot, 'native', f), join(work, 'native', f));
  }
  // binding.gyp asks node-addon-api for its include directory.
  symlinkSync(join(packageRoot, 'node_modules'), join(work, 'node_modules'));
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [packageRoot] });
  const dir = nodeDir();
  execFileSync(process.execPath, [nodeGyp, 'rebuild', '--loglevel=warn', `--arch=${target.arch}`, ...(dir ? [`--nodedir=${dir}`] : [])], {
    cwd: work,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

function main(args: string[]): number {
  const fromEnv = process.env['FDBRIDGE_PREBUILD_ARCHS']?.split(',').filter((a) => a !== '');
  const archs = args.length > 0 ? args : (fromEnv ?? Object.keys(TARGETS));
  for (const a of archs) {
    const target = TARGETS[a];
    if (!target) {
      process.stderr.write(`prebuild: unknown arch ${a}; use ${Object.keys(TARGETS).join(', ')}\n`);
      return 2;
    }
    try {
      const out = prebuild(target);
      const glibc = newestGlibc(out, target.triple);
      process.stderr.write(`prebuild: ${out} (${glibc ? `needs glibc ${glibc}` : 'glibc version unknown'})\n`);
    } catch (err) {
      process.stderr.write(`prebuild: ${(err as Error).message}\n`);
      return 1;
    }
  }
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
