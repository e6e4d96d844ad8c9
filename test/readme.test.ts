/**
 * The README's example compiles (strict TypeScript, against the built
 * package's type declarations) and runs, printing one line per transport.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import ts from 'typescript';

import { transportNames } from '../src';
import { packageRoot } from '../src/native';

const run = promisify(execFile);

function readmeExample(): string {
  const readme = readFileSync(join(packageRoot, 'README.md'), 'utf8');
  const m = /<!-- readme-example:start -->\s*```ts\n([\s\S]*?)```\s*<!-- readme-example:end -->/.exec(readme);
  if (!m?.[1]) throw new Error('README.md has no readme-example block');
  return m[1];
}

test('the README example type-checks and runs on every transport', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-readme-'));
  try {
    // The example imports 'fdbridge' as a user would; point it at this build.
    const source = readmeExample().replace(/from 'fdbridge'/g, `from ${JSON.stringify(join(packageRoot, 'dist', 'src'))}`);
    const file = join(dir, 'example.ts');
    writeFileSync(file, source);
    const program = ts.createProgram([file], {
      strict: true,
      noUnusedLocals: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      typeRoots: [join(packageRoot, 'node_modules', '@types')],
      esModuleInterop: true,
      skipLibCheck: true,
      outDir: dir,
    });
    const emitted = program.emit();
    const diagnostics = ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics);
    const messages = diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(messages).toEqual([]);

    const { stdout } = await run(process.execPath, [join(dir, 'example.js')], { timeout: 60_000 });
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(transportNames().length);
    transportNames().forEach((t, i) => expect(lines[i]).toMatch(new RegExp(`^hello from ${t}, pid \\d+$`)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
