/**
 * The `--logfile [!]path | - | -stdout | -stderr` option of `fdbridge log`,
 * end to end: the client opens the target, the command (here in a child
 * process) writes its log there.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { logRedirectOption, parseLogfileArgument, type Connection } from '../../src';
import { fdFlags } from '../../src/fd';
import { CLI, exitOf } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

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

/**
 * `fdbridge log --logfile FIFO LINE`, its exit status and stderr; past a
 * hang guard (far above what it takes) a TimeoutError saying what it
 * printed, the process killed.
 */
async function logUnhung(fifo: string, line: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'log', '--transport', 'child', '--logfile', fifo, line], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const { code } = await new HangGuard(scaled(20_000)).within(exitOf(child), 'fdbridge log --logfile FIFO exiting', () => `stderr: ${JSON.stringify(stderr)}`);
    await new Promise((r) => (child.stderr.readableEnded ? r(undefined) : child.stderr.once('end', r)));
    return { code, stderr };
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exitOf(child);
    }
  }
}

test('a FIFO that nobody reads: a clear error naming it, exit status 3, no wait for a reader', async () => {
  const fifo = join(cwd, 'log.fifo');
  execFileSync('mkfifo', [fifo]);
  const { code, stderr } = await logUnhung(fifo, 'unread');
  expect(code).toBe(3);
  expect(stderr).toContain(`--logfile ${fifo}: it is a FIFO that nobody reads`);
  expect(stderr).toMatch(/ENXIO/);
});

test('a Unix socket path (open gives ENXIO too): its error, not said to be a FIFO nobody reads', async () => {
  const path = join(cwd, 'log.sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  try {
    const { code, stderr } = await logUnhung(path, 'unread');
    expect(code).toBe(3);
    expect(stderr).toMatch(/ENXIO/);
    expect(stderr).not.toContain('FIFO');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test("a FIFO with a reader gets the line; the command's copy is a blocking fd", async () => {
  const fifo = join(cwd, 'log.fifo');
  execFileSync('mkfifo', [fifo]);
  // Non-blocking: a FIFO's read end opens at once with no writer yet.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const { code, stderr } = await logUnhung(fifo, 'read');
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const buf = Buffer.alloc(64);
    const n = readSync(reader, buf);
    expect(buf.toString('utf8', 0, n)).toBe('read\n');
  } finally {
    closeSync(reader);
  }
  // What is handed to the command, here to a stand-in: O_NONBLOCK cleared again.
  const reader2 = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const seen: Array<{ nonblock: boolean }> = [];
  try {
    const stand = {
      dupFileDescriptor: (fd: number) => {
        seen.push(fdFlags(fd));
        return Promise.resolve(1000);
      },
      call: () => Promise.resolve(undefined),
    } as unknown as Connection;
    await logRedirectOption(stand, fifo);
  } finally {
    closeSync(reader2);
  }
  expect(seen).toEqual([expect.objectContaining({ nonblock: false })]);
});
