/**
 * `process.stdin` is made at first use, like process.stdout, and on a
 * terminal libuv reopens the terminal for it (a non-blocking fd of its own,
 * kept for the process's life). Code under test touches it more often than
 * it seems: `process.stdin.isTTY` (is this session interactive?), readline
 * prompts. A leak check must give the same verdict whether stdin is a
 * terminal, a pipe or a file: the runtime's fd is not the test's leak, and
 * an fd the test itself opens on the terminal (a reopen of fd 0) and leaves
 * open still is.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';

type Stdin = 'tty' | 'pipe' | 'file';

let dir: string;
let fixture: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-stdin-leak-'));
  fixture = join(dir, 'check-stdin.js');
  writeFileSync(
    fixture,
    `const { openSync, writeFileSync } = require('node:fs');
const { checkFdLeaks } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
(async () => {
  const touched = await checkFdLeaks(() => { void process.stdin.isTTY; });
  let reopened;
  const leaked = await checkFdLeaks(() => { reopened = openSync('/proc/self/fd/0', 'r'); });
  const show = (r) => r.leaks.map((l) => ({ fd: l.fd, target: l.target }));
  writeFileSync(process.argv[2], JSON.stringify({ isTTY: process.stdin.isTTY === true, touched: show(touched), leaked: show(leaked), reopened }));
})().catch((err) => { writeFileSync(process.argv[2], JSON.stringify({ error: String(err) })); });
`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the fixture with its stdin a terminal (script(1)), a pipe, or a file (/dev/null). */
function runFixture(stdin: Stdin, out: string): Promise<number | null> {
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const child =
    stdin === 'tty'
      ? spawn('script', ['-qec', [process.execPath, fixture, out].map(quote).join(' '), '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
      : stdin === 'pipe'
        ? // a pipe(2), as a shell makes (Node's stdio 'pipe' is a socketpair, which cannot be reopened)
          spawn('sh', ['-c', `true | exec ${[process.execPath, fixture, out].map(quote).join(' ')}`], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn(process.execPath, [fixture, out], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.resume();
  child.stderr?.resume();
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
}

test.each<Stdin>(['tty', 'pipe', 'file'])('stdin a %s: touching process.stdin leaks nothing; a reopen of fd 0 left open is caught', async (stdin) => {
  const out = join(dir, `${stdin}.json`);
  const code = await runFixture(stdin, out);
  const r = JSON.parse(readFileSync(out, 'utf8')) as { isTTY: boolean; touched: unknown[]; leaked: Array<{ fd: number }>; reopened: number; error?: string };
  expect({ code, error: r.error, isTTY: r.isTTY }).toEqual({ code: 0, error: undefined, isTTY: stdin === 'tty' });
  expect(r.touched).toEqual([]);
  expect(r.leaked.map((l) => l.fd)).toEqual([r.reopened]);
});
