/**
 * TypeScript modules with no build step: a user's scenarios
 * (`*.scenario.ts`) and command modules (`my-command.ts`) are compiled as
 * they are required, in whichever thread or process loads them (the
 * harness, a worker, a child or pidfd process, a helper daemon), and so is
 * every `.ts` module they import.
 *
 * The compiler is Sucrase: types stripped, `import`/`export` turned into
 * CommonJS, and every line kept where it was, so a stack trace (and
 * --track-fds) names the line of the `.ts` file itself. Nothing is type
 * checked: that is the editor's and `tsc --noEmit`'s job. Node's own type
 * stripping (22.18+) is not relied on: Node 20 lacks it, and its strip-only
 * mode rejects parameter properties (`constructor(readonly context: ...)`,
 * the usual shape of a command) and enums, and gives ES-module semantics
 * (no `__dirname`); one compiler behaves the same on every Node.
 */
import { readFileSync } from 'node:fs';
import Module from 'node:module';

type Loader = (module: NodeJS.Module & { _compile(code: string, filename: string): void }, filename: string) => void;

const EXTENSIONS = ['.ts', '.cts'] as const;

/** True for a `.ts` or `.cts` module path (not a declaration file). */
export function isTypeScriptModule(path: string): boolean {
  return /\.c?ts$/.test(path) && !/\.d\.c?ts$/.test(path);
}

/** Sucrase, loaded on the first TypeScript module only. */
function compile(source: string, filename: string): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { transform } = require('sucrase') as typeof import('sucrase');
  try {
    return transform(source, { transforms: ['typescript', 'imports'], filePath: filename, production: true }).code;
  } catch (err) {
    throw new SyntaxError(`cannot compile ${filename}: ${(err as Error).message}`, { cause: err });
  }
}

let enabled = false;

/**
 * Registers the `.ts`/`.cts` loader in this thread's CommonJS loader, once.
 * A loader someone registered before (ts-node, @swc/register) is kept, and
 * then loads fdbridge's `.ts` modules too; Node's own type stripping, when
 * this Node has it, is replaced (see the file comment).
 */
export function enableTypeScriptModules(): void {
  if (enabled) return;
  enabled = true;
  const extensions = (Module as unknown as { _extensions: Record<string, Loader> })._extensions;
  const nodeStripsTypes = Boolean((process.features as { typescript?: unknown }).typescript);
  for (const ext of EXTENSIONS) {
    if (extensions[ext] !== undefined && !nodeStripsTypes) continue;
    extensions[ext] = (module, filename) => module._compile(compile(readFileSync(filename, 'utf8'), filename), filename);
  }
}

/**
 * `require(path)`, where `path` may be a TypeScript module (absolute, or
 * resolvable from this package). Throws what require throws; a `.ts` file
 * that does not parse is a SyntaxError naming it, with line and column.
 */
export function requireModule(path: string): unknown {
  if (isTypeScriptModule(path)) enableTypeScriptModules();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path);
}
