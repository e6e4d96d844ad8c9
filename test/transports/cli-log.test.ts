/**
 * The `--logfile [!]path | - | -stdout | -stderr` option of `fdbridge log`,
 * end to end: the client opens the target, the command (here in a child
 * process) writes its log there.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { parseLogfileArgument } from '../../src';
import { CLI } from '../util/processes';

const run = promisify(execFile);
let cwd: string;

beforeEach(() => {
  cwd = mkdtempSync(join(tmpdir(), 'fdbridge-cli-'));
});

afterEach(() => {
  rmSync(cwd, { recursive: true, force: true });
});

async function log(logfile: string, ...lines: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, 'log', '--transport', 'child', '--logfile', logfile, ...lines], { cwd });
}

test('-stderr writes to stderr, not to a file named -stderr', async () => {
  const { stdout, stderr } = await log('-stderr', 'to stderr');
  expect(stderr).toBe('to stderr\n');
  expect(stdout).toBe('');
  expect(existsSync(join(cwd, '-stderr'))).toBe(false);
  expect(readdirSync(cwd)).toEqual([]);
});

test.each(['-', '-stdout'])('%s writes to stdout', async (arg) => {
  const { stdout, stderr } = await log(arg, 'to stdout');
  expect(stdout).toBe('to stdout\n');
  expect(stderr).toBe('');
  expect(readdirSync(cwd)).toEqual([]);
});

test('a path appends (relative to the cwd), !path truncates', async () => {
  writeFileSync(join(cwd, 'app.log'), 'before\n');
  await log('app.log', 'one', 'two');
  expect(readFileSync(join(cwd, 'app.log'), 'utf8')).toBe('before\none\ntwo\n');
  await log('!app.log', 'fresh');
  expect(readFileSync(join(cwd, 'app.log'), 'utf8')).toBe('fresh\n');
});

test('parseLogfileArgument covers every form and rejects an empty one', () => {
  expect(parseLogfileArgument('-')).toEqual({ kind: 'stdout' });
  expect(parseLogfileArgument('-stdout')).toEqual({ kind: 'stdout' });
  expect(parseLogfileArgument('-stderr')).toEqual({ kind: 'stderr' });
  expect(parseLogfileArgument('/x/y.log')).toEqual({ kind: 'file', path: '/x/y.log', truncate: false });
  expect(parseLogfileArgument('!/x/y.log')).toEqual({ kind: 'file', path: '/x/y.log', truncate: true });
  expect(parseLogfileArgument('!')).toMatchObject({ kind: 'file', truncate: false });
  expect(() => parseLogfileArgument('')).toThrow(TypeError);
});
