/**
 * The README's example compiles (strict TypeScript, against the built
 * package's type declarations) and runs, printing one line per transport.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import ts from 'typescript';

import { transportNames } from '../src';
import { packageRoot } from '../src/paths';
import { readmeBlock } from './util/readme';

/** No time limit on the examples: each ends by the library's own deadlines (connect's and receive's timeoutMs). */
const run = promisify(execFile);

/**
 * jest's limit, a hang guard only: a strict type check of an example against
 * Node's and the package's declarations, then a run on every transport, took
 * 14 s at load average 19 on 2 cores, and past jest's default 30 s at 40.
 */
const HANG_GUARD_MS = 180_000;

/** Type-checks (strict) and emits `file` with `options`; returns the diagnostics' messages. */
function compile(file: string, options: ts.CompilerOptions): string[] {
  const program = ts.createProgram([file], {
    strict: true,
    noUnusedLocals: true,
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    typeRoots: [join(packageRoot, 'node_modules', '@types')],
    skipLibCheck: true,
    outDir: dirname(file),
    ...options,
  });
  const emitted = program.emit();
  const diagnostics = ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics);
  return diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

test('the README example type-checks and runs on every transport', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-readme-'));
  try {
    // The example imports 'fdbridge' as a user would; point it at this build.
    const source = readmeBlock('readme-example').replace(/from 'fdbridge'/g, `from ${JSON.stringify(join(packageRoot, 'dist', 'src'))}`);
    const file = join(dir, 'example.ts');
    writeFileSync(file, source);
    expect(
      compile(file, { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, esModuleInterop: true }),
    ).toEqual([]);

    const { stdout } = await run(process.execPath, [join(dir, 'example.js')]);
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(transportNames().length);
    transportNames().forEach((t, i) => expect(lines[i]).toMatch(new RegExp(`^hello from ${t}, pid \\d+$`)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, HANG_GUARD_MS);

test('the first example (an ES module with top-level await) type-checks and runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-readme-'));
  try {
    // The built package's entry, by path: an ES module importing the CommonJS build.
    const source = readmeBlock('readme-quick-example').replace(/from 'fdbridge'/g, `from ${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))}`);
    const file = join(dir, 'example.mts');
    writeFileSync(file, source);
    expect(compile(file, { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext })).toEqual([]);

    const { stdout, stderr } = await run(process.execPath, [join(dir, 'example.mjs')], { cwd: dir });
    expect({ stdout, stderr }).toEqual({ stdout: '', stderr: '' });
    expect(readFileSync(join(dir, 'app.log'), 'utf8')).toMatch(/^hello from pid \d+\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, HANG_GUARD_MS);

test('the datagram example (bound service, client sending an fd, an answer with a deadline) type-checks and runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-readme-'));
  try {
    const source = readmeBlock('readme-datagram-example').replace(/from 'fdbridge'/g, `from ${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))}`);
    const file = join(dir, 'datagram.mts');
    writeFileSync(file, source);
    expect(compile(file, { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext })).toEqual([]);

    const { stdout, stderr } = await run(process.execPath, [join(dir, 'datagram.mjs')], { cwd: dir });
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^done hello, pid \d+\n$/);
    // The sockets closed at the end of the module (`using`) and removed their files.
    expect(readdirSync(join(dir, 'service'))).toEqual([]);
    expect(readdirSync(join(dir, 'client'))).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, HANG_GUARD_MS);
