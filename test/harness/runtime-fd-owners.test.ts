/**
 * What warmRuntimeFds says of each fd the runtime opened for itself, in a
 * fresh process, as a report or the oracle's notes print it
 * (describeRuntimeFd): libuv's EMFILE reserve, whether it is `/dev/null` or,
 * where that cannot be opened (no /dev, in a mount namespace), `/`; libuv's
 * inotify fd; a terminal reopened for process.stdin, process.stdout and
 * process.stderr, by its /dev/pts name or as /dev/tty. process.stdin is made
 * only on a terminal: a pipe on stdin is left as it was, blocking (a stream
 * made of it would set O_NONBLOCK on a pipe other processes share). A second
 * call opens nothing. This process has warmed its own before any test, so
 * each case runs in a process of its own; nothing is opened here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { distPath } from '../../src/paths';

const RESERVE = "libuv's EMFILE reserve (opened by an event loop's first pipe, socket or TTY handle, kept for the loop's life)";
const TERMINAL =
  "process.stdin, process.stdout or process.stderr on a terminal (libuv reopens the terminal for a non-blocking fd of its own; kept for the process's life)";
const INOTIFY = "libuv's inotify fd (opened by an event loop's first fs.watch, kept for the loop's life)";

/** Warms, twice, and writes what it got to argv[1], with whether stdin (fd 0) is non-blocking afterwards. */
const WARM = `
const { readFileSync, writeFileSync } = require('node:fs');
const { describeRuntimeFd, warmRuntimeFds } = require(${JSON.stringify(distPath('src/runtime-fds.js'))});
const first = warmRuntimeFds();
const again = warmRuntimeFds();
const flags = parseInt(/flags:\\s*(\\d+)/.exec(readFileSync('/proc/self/fdinfo/0', 'utf8'))[1], 8);
writeFileSync(process.argv[1], JSON.stringify({ lines: first.map(describeRuntimeFd), again, stdinNonBlocking: (flags & 0o4000) !== 0 }));
`;

type Setting = 'stdout a file, stdin a pipe' | 'a terminal on stdin, stdout and stderr' | 'stdin opened from /dev/tty' | 'no /dev';

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs WARM in `setting`; resolves with what it wrote. */
function warmIn(setting: Setting, out: string): Promise<{ code: number | null; lines: string[]; again: unknown[]; stdinNonBlocking: boolean }> {
  const node = [process.execPath, '-e', WARM, out].map(quote).join(' ');
  const child =
    setting === 'stdout a file, stdin a pipe'
      ? spawn('sh', ['-c', `exec ${node} > ${quote(`${out}.stdout`)}`], { stdio: ['pipe', 'ignore', 'ignore'] })
      : setting === 'no /dev'
        ? spawn('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs none /dev && exec ${node} > ${quote(`${out}.stdout`)}`], { stdio: ['pipe', 'ignore', 'ignore'] })
        : spawn('script', ['-qec', setting === 'stdin opened from /dev/tty' ? `sh -c ${quote(`exec ${node} < /dev/tty`)}` : node, '/dev/null'], {
            stdio: ['pipe', 'ignore', 'ignore'],
          });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      try {
        resolve({ code, ...(JSON.parse(readFileSync(out, 'utf8')) as { lines: string[]; again: unknown[]; stdinNonBlocking: boolean }) });
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** `fd N -> ` taken off: the numbers depend on what the runtime had open. */
const withoutNumber = (line: string): string => line.replace(/^fd \d+ -> /, '');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-runtime-owners-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const noDev = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs none /dev']).status === 0;

test.each<[Setting, string[], boolean | undefined]>([
  ['stdout a file, stdin a pipe', [`/dev/null: ${RESERVE}`, `anon_inode:inotify: ${INOTIFY}`], false],
  ['no /dev', [`/: ${RESERVE}`, `anon_inode:inotify: ${INOTIFY}`], false],
  [
    'a terminal on stdin, stdout and stderr',
    [`/dev/null: ${RESERVE}`, `/dev/pts/N: ${TERMINAL}`, `/dev/pts/N: ${TERMINAL}`, `/dev/pts/N: ${TERMINAL}`, `anon_inode:inotify: ${INOTIFY}`],
    undefined,
  ],
  ['stdin opened from /dev/tty', [`/dev/null: ${RESERVE}`, `/dev/pts/N: ${TERMINAL}`, `/dev/pts/N: ${TERMINAL}`, `/dev/tty: ${TERMINAL}`, `anon_inode:inotify: ${INOTIFY}`], undefined],
])('%s: the runtime fds opened, each with its owner', async (setting, expected, stdinNonBlocking) => {
  if (setting === 'no /dev' && !noDev) {
    console.log('runtime-fd-owners.test: unshare -rm with a mount is not allowed here, so the case without /dev is skipped');
    return;
  }
  const got = await warmIn(setting, join(dir, `${setting.replace(/\W+/g, '-')}.json`));
  expect(got.code).toBe(0);
  expect(got.lines.map(withoutNumber).map((l) => l.replace(/^\/dev\/pts\/\d+:/, '/dev/pts/N:')).sort()).toEqual([...expected].sort());
  expect(got.again).toEqual([]);
  // On a terminal, what libuv leaves of fd 0's flags is its own business.
  if (stdinNonBlocking !== undefined) expect(got.stdinNonBlocking).toBe(stdinNonBlocking);
});
