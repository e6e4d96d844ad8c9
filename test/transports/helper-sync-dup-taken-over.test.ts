/**
 * dupFileDescriptorSync on a connection served by a helper daemon on this
 * thread throws UnsupportedError at once (that daemon answers from the event
 * loop the call would block), also when the connection's SO_PEERCRED names
 * another process: one made while the socket still belonged to the process
 * that made it (socket activation: systemd binds, the daemon takes the
 * socket over and serves what was queued, its maker's uid being ours).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, connect, HelperDaemon, makeMemfd, PROBE_COMMAND, UnsupportedError, type Connection } from '../../src';
import { UnixSocket } from '../../src/socket';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { DIST_SRC } from '../util/nobody';
import { exitOf } from '../util/processes';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-sync-taken-over-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A listening socket at `path` made by another process (of our uid), which sends it here and exits: what systemd hands a socket unit's service. */
async function listenerMadeElsewhere(path: string): Promise<{ fd: number; maker: number }> {
  const [here, there] = rawSocketPair('seqpacket');
  try {
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const { rawListen, sendNow } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
         sendNow(3, Buffer.from('listening'), [rawListen('seqpacket', ${JSON.stringify(path)}, { mode: 0o600 })]);`,
      ],
      { stdio: ['ignore', 'ignore', 'inherit', there] },
    );
    closeFd(there);
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    const m = receiveNow(here, 64, 1);
    expect(m?.fds).toHaveLength(1);
    return { fd: m!.fds[0]!, maker: child.pid as number };
  } finally {
    closeFd(here);
  }
}

test("a connection queued on a socket another process made, then served by a daemon on this thread that took it over: UnsupportedError at once, nothing sent; dupFileDescriptor works", async () => {
  const socketPath = join(dir, 'activated.sock');
  const { fd: listenFd, maker } = await listenerMadeElsewhere(socketPath);
  // The client connects (and sends its HELLO) before the daemon runs.
  const original = UnixSocket.prototype.send;
  let hello!: () => void;
  const sent = new Promise<void>((resolve) => (hello = resolve));
  const spy = jest.spyOn(UnixSocket.prototype, 'send').mockImplementation(function (this: UnixSocket, ...args: Parameters<UnixSocket['send']>) {
    hello();
    return original.apply(this, args);
  });
  const early = connect('helper', { command: PROBE_COMMAND, socketPath });
  let daemon: HelperDaemon | undefined;
  let conn: Connection | undefined;
  const fd = makeMemfd('sync-dup-taken-over');
  try {
    await sent;
    spy.mockRestore();
    daemon = HelperDaemon.start({ diagnostics: true, socketPath, listenFd });
    conn = await early;
    // Served here, though its SO_PEERCRED read the maker's pid.
    expect(await conn.call('where')).toMatchObject({ pid: process.pid });
    expect(conn.location.pid).toBe(process.pid);
    expect(maker).not.toBe(process.pid);
    // A timeout the call would wait out if it waited: it must not wait.
    const err = (() => {
      try {
        (conn as Connection).dupFileDescriptorSync(fd, { timeoutMs: 2000 });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(UnsupportedError);
    // It says why and what to do instead.
    expect((err as Error).message).toBe(
      'dupFileDescriptorSync cannot be answered by a helper daemon started on this thread (HelperDaemon.start here): ' +
        'it answers from the event loop this call would block; use dupFileDescriptor, or run the daemon in a worker thread or another process',
    );
    expect(await conn.call('identities', [])).toEqual([]);
    expect(daemon.status().fdsHeld).toBe(0);
    expect(typeof (await conn.dupFileDescriptor(fd))).toBe('number');
  } finally {
    spy.mockRestore();
    closeFd(fd);
    await conn?.close();
    await daemon?.close();
  }
});
