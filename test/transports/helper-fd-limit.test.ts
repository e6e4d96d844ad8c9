/**
 * A helper daemon under a low hard RLIMIT_NOFILE (1024, as many containers
 * and service units set it): by default it serves fewer connections and
 * keeps room for its clients' fds; given more connections than the limit
 * has room for, it refuses to start, naming the limit.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, makeMemfd, type HelperStatus } from '../../src';
import { closeFd } from '../../src/fd';
import { CLI, exitOf } from '../util/processes';

const NOFILE = 1024;

/** `fdbridge helper --socket PATH ARGS` with RLIMIT_NOFILE NOFILE (soft and hard), and what it prints. */
function helperUnderLimit(socketPath: string, args: string[] = []) {
  const child = spawn('prlimit', [`--nofile=${NOFILE}`, process.execPath, CLI, 'helper', '--socket', socketPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = exitOf(child);
  const listening = new Promise<boolean>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening on')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  return { child, exited, listening, stderr: () => err };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-nofile-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('by default it serves, with fewer connections, and keeps room for client fds', async () => {
  const socketPath = join(dir, 'helper.sock');
  const daemon = helperUnderLimit(socketPath);
  try {
    expect(await daemon.listening).toBe(true);
    const conn = await connect('helper', { command: { name: 'status' }, socketPath });
    const memfd = makeMemfd('nofile');
    try {
      expect(await conn.dupFileDescriptor(memfd)).toEqual(expect.any(Number));
      const { limits } = await conn.call<HelperStatus>('status');
      // (1024 - 512 kept for the daemon) / 4: half of the rest to connections at 2 fds each, half to client fds.
      expect(limits.maxConnections).toBe(128);
      expect(limits.maxFdsTotal).toBe(NOFILE - 2 * 128 - 512);
      expect(limits.maxFdsPerUid).toBe(limits.maxFdsTotal); // it serves its own uid alone
    } finally {
      closeFd(memfd);
      await conn.close();
    }
  } finally {
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  }
});

test('given more connections than the limit leaves room for, it refuses to start (exit 3), naming the limit', async () => {
  const daemon = helperUnderLimit(join(dir, 'helper.sock'), ['--max-connections', '256']);
  const listened = await daemon.listening;
  if (listened) daemon.child.kill('SIGTERM');
  expect(listened).toBe(false);
  expect(await daemon.exited).toEqual({ code: 3, signal: null });
  expect(daemon.stderr()).toMatch(/RLIMIT_NOFILE 1024 leaves no room for client fds \(256 connections take 2 each, 512 are kept for the daemon\): raise the limit .* or lower maxConnections/);
});
