// Stryker's mutants of some lines of a file, as StrykerJS makes them (@stryker-mutator/instrumenter,
// the version in node_modules), with those a `// Stryker disable` comment marks flagged `Ignored`.
//   node scripts/mutants-by-hand/list.mjs <file> <from>-<to> [--json]
// A mutant is listed when its whole node lies within the lines (as `--mutate file:from-to` does).
// With <index> after the range (apply.mjs), one of them is written into the file instead.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = process.cwd();
const { Instrumenter } = await import(createRequire(path.join(root, 'package.json')).resolve('@stryker-mutator/instrumenter'));

export async function listMutants(file, range) {
  const [from, to] = range.split('-').map(Number);
  const quiet = () => undefined;
  const logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, trace: quiet, isDebugEnabled: () => false, isTraceEnabled: () => false, isInfoEnabled: () => false };
  const content = fs.readFileSync(path.join(root, file), 'utf8');
  const mutate = [{ start: { line: from - 1, column: 0 }, end: { line: to - 1, column: Number.MAX_SAFE_INTEGER } }];
  const { mutants } = await new Instrumenter(logger).instrument([{ name: path.join(root, file), mutate, content }], {
    plugins: null,
    excludedMutations: [],
    ignorers: [],
    noHeader: true,
  });
  const lines = content.split('\n');
  const offset = (p) => lines.slice(0, p.line).reduce((a, l) => a + l.length + 1, 0) + p.column;
  return mutants.map((m, i) => ({
    i,
    mutator: m.mutatorName,
    line: m.location.start.line + 1,
    column: m.location.start.column,
    ignored: m.status === 'Ignored',
    original: content.slice(offset(m.location.start), offset(m.location.end)),
    replacement: m.replacement,
    start: offset(m.location.start),
    end: offset(m.location.end),
  }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, range, ...rest] = process.argv.slice(2);
  const list = await listMutants(file, range);
  if (rest.includes('--json')) console.log(JSON.stringify(list));
  else for (const m of list) console.log([m.i, `${m.line}:${m.column}`, m.mutator, m.ignored ? 'Ignored' : '', `${JSON.stringify(m.original).slice(0, 60)} -> ${JSON.stringify(m.replacement).slice(0, 80)}`].join('\t'));
}
