/**
 * "It removes a stale socket left by a dead daemon, never takes a live
 * daemon's path": the stale test is a connect that says ECONNREFUSED. A
 * socket that is bound and not yet listening (another daemon between its
 * bind and its listen, or a program that binds first and listens later)
 * answers ECONNREFUSED too, yet its process is alive and holds the name. A
 * helper started at that path must refuse (ERR_FDBRIDGE_HELPER_RUNNING) and
 * leave the other socket's file in place; once that socket is closed the
 * name is stale and is taken.
 */
import { spawn } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { HelperDaemon } from '../../src';
import { exitOf } from '../util/processes';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-live-name-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('a name bound by a live socket that is not listening yet is never taken; once that socket is closed it is', async () => {
  const socketPath = join(dir, 'helper.sock');
  // Binds a SEQPACKET socket at the path, says so, and keeps it (unlistened) until its stdin ends.
  const holder = spawn(
    'python3',
    ['-c', 'import socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\ns.bind(sys.argv[1])\nprint("bound", flush=True)\nsys.stdin.read()\n', socketPath],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout.once('data', () => resolve());
      holder.once('exit', (code) => reject(new Error(`python3 exited (${code}) before binding`)));
    });
    const held = lstatSync(socketPath).ino;
    expect(() => HelperDaemon.start({ socketPath })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_HELPER_RUNNING' }));
    expect(lstatSync(socketPath).ino).toBe(held);
  } finally {
    holder.stdin.end();
    await exitOf(holder);
  }
  // The holder is gone: its name is a stale file now, and is replaced.
  const daemon = HelperDaemon.start({ socketPath });
  await daemon.close();
});
