/**
 * trackFds in an ES module: `import { openSync, closeSync } from 'node:fs'`
 * (the README's style) binds the module's exports as they were at the first
 * import, before a check wraps them. The recorder makes those bindings its
 * wrappers (module.syncBuiltinESMExports), so an open through them is named
 * and a close through them ends the record of the fd it closes. Run as an
 * .mjs program in a child process (jest here loads CommonJS only).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { packageRoot } from '../../src/paths';

const run = promisify(execFile);

const PROGRAM = (entry: string): string => `
import { openSync, closeSync, writeFileSync } from 'node:fs';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { checkFdLeaks } from ${JSON.stringify(entry)};

const path = join(process.argv[2], 'config');
writeFileSync(path, 'x');
const out = {};
let helperFd = -1;
let leaked = -1;
const helper = () => {
  helperFd = openSync(path, 'r');
  closeSync(helperFd);
};
const report = await checkFdLeaks(async () => {
  helper();
  leaked = openSync(path, 'r'); // LEAK LINE
}, { trackFds: true, settleMs: 0 });
out.sameNumber = leaked === helperFd;
out.leaks = report.leaks.map((l) => ({ fd: l.fd, call: l.openedAt?.call, js: l.openedAt?.js ?? [] }));
out.leaked = leaked;
closeSync(leaked);
// After the check the bindings are still the module's functions (the wrappers, recording nothing).
out.sameAsModule = openSync === fs.openSync && closeSync === fs.closeSync;
process.stdout.write(JSON.stringify(out));
`;

test('in an ES module, named imports of node:fs are recorded: the leak is named at its line, the closed helper fd is not blamed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-track-esm-'));
  try {
    const file = join(dir, 'program.mjs');
    const source = PROGRAM(join(packageRoot, 'dist', 'src', 'index.js'));
    writeFileSync(file, source);
    const leakLine = source.split('\n').findIndex((l) => l.includes('// LEAK LINE')) + 1;
    const { stdout, stderr } = await run(process.execPath, [file, dir], { cwd: dir });
    expect(stderr).toBe('');
    const out = JSON.parse(stdout) as { sameNumber: boolean; leaked: number; sameAsModule: boolean; leaks: Array<{ fd: number; call?: string; js: string[] }> };
    expect(out.sameNumber).toBe(true); // the scene: the leak took the helper's number
    expect(out.leaks.map((l) => [l.fd, l.call])).toEqual([[out.leaked, 'fs.openSync']]);
    expect(out.leaks[0]!.js[0]).toContain(`${file}:${leakLine}:`);
    expect(out.sameAsModule).toBe(true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
