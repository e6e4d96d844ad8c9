// Writes mutant <index> of list.mjs's listing into <file> (undo: git checkout -- <file>), and its
// transpiled module into dist/ (so child processes, workers and the CLI run it too).
//   node scripts/mutants-by-hand/apply.mjs <file> <from>-<to> <index>
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { listMutants } from './list.mjs';

const [file, range, index] = process.argv.slice(2);
const m = (await listMutants(file, range))[Number(index)];
const text = fs.readFileSync(file, 'utf8');
fs.writeFileSync(file, text.slice(0, m.start) + m.replacement + text.slice(m.end));
const ts = createRequire(path.resolve('package.json'))('typescript');
const { options } = ts.getParsedCommandLineOfConfigFile('tsconfig.json', {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
const out = ts.transpileModule(fs.readFileSync(file, 'utf8'), { compilerOptions: options, fileName: file });
fs.writeFileSync(path.join(options.outDir, path.relative(options.rootDir ?? '.', path.resolve(file))).replace(/\.ts$/, '.js'), out.outputText);
console.log(`applied ${m.i} ${m.line}:${m.column} ${m.mutator}: ${JSON.stringify(m.original).slice(0, 80)} -> ${JSON.stringify(m.replacement).slice(0, 120)}`);
