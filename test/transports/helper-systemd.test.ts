/**
 * The helper daemon as a systemd service: socket activation (the listening
 * socket arrives as fd 3 with LISTEN_FDS/LISTEN_PID; its path and mode are
 * the unit's, so the daemon neither checks nor removes them), READY=1 to
 * NOTIFY_SOCKET (a fake one here), and `fdbridge helper --status`.
 */
import { execFile, spawn } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { connect, DatagramSocket, dupFd, HelperDaemon, makeMemfd, closeFd, openFdTable, PROBE_COMMAND } from '../../src';
import { rawListen } from '../../src/testing';
import { listenFdsFromSystemd } from '../../src/transports/systemd';
import { echoFromNewDaemon } from '../util/helper-status';
import { CLI, exitOf } from '../util/processes';

const execFileAsync = promisify(execFile);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-systemd-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('socket activation, READY=1 on NOTIFY_SOCKET, and --status showing clients, fds held and quota hits', async () => {
  const notifyPath = join(dir, 'notify');
  const notify = DatagramSocket.bind(notifyPath);
  const socketPath = join(dir, 'activated.sock');
  // What systemd does for a .socket unit: bind and listen, then pass it on.
  const listenFd = rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 16 });
  // LISTEN_PID must be the daemon's own pid: sh learns it ($$) and execs node in its place.
  const child = spawn('sh', ['-c', `LISTEN_PID=$$ exec "$0" "$@"`, process.execPath, CLI, 'helper', '--verbose', '--max-fds', '3'], {
    stdio: ['ignore', 'pipe', 'pipe', listenFd],
    env: { ...process.env, LISTEN_FDS: '1', NOTIFY_SOCKET: notifyPath },
  });
  closeFd(listenFd); // the daemon has its own copy now
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const memfd = makeMemfd('held');
  try {
    const ready = await notify.receive({ timeoutMs: 20_000 });
    expect(ready.data.toString()).toMatch(/^READY=1\n/m);
    expect(ready.data.toString()).toContain(`MAINPID=${child.pid}`);
    // Served on the unit's socket; the quota given on the command line applies.
    const conn = await connect('helper', { command: { name: 'log' }, socketPath });
    // The unit's socket stays at fd 3 (sd_listen_fds's protocol); the
    // connection it accepted is the daemon's own, above its fd floor.
    const daemonFds = openFdTable(child.pid);
    const [soft] = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${child.pid}/limits`, 'utf8'))!.slice(1).map(Number) as [number];
    const floor = Math.min(Math.floor(soft / 2), 8192);
    expect(daemonFds.get(3)).toMatch(/^socket:/);
    const accepted = [...daemonFds].filter(([fd, target]) => fd > 3 && target.startsWith('socket:'));
    expect(accepted.length).toBeGreaterThan(0);
    expect(accepted.filter(([fd]) => fd < floor)).toEqual([]);
    for (let i = 0; i < 3; i++) await conn.dupFileDescriptor(memfd);
    await expect(conn.dupFileDescriptor(memfd)).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'fds' });
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'helper', '--status', '--socket', socketPath]); // ends by connect's typed timeoutMs
    expect(stdout).toMatch(/^clients: 2 now/m); // this one and the status request's own
    expect(stdout).toMatch(/^fds held: 3, \d+ being closed \(at most 3 per client, \d+ per uid, \d+ in all\)$/m);
    expect(stdout).toMatch(new RegExp(`^  uid ${process.getuid?.() ?? 0}: 2 client\\(s\\) and 0 socket\\(s\\) held up \\(at most 256\\), 3 fds held, 0 being closed, 0 bytes of log lines waiting$`, 'm')); // its own uid alone: the per-uid limit is the total
    expect(stdout).toMatch(/^log lines waiting to be written: 0 bytes \(at most 4194304 per uid\)$/m);
    expect(stdout).toMatch(/^quota hits: connections 0, uidConnections 0, fds 1, uidFds 0, totalFds 0, calls 0/m);
    expect(stdout).toMatch(/^held back: a uid's connections went unread 0 time\(s\)/m);
    expect(stdout).toMatch(new RegExp(`^  pid ${process.pid} uid ${process.getuid?.() ?? 0}: 3 fds held`, 'm'));
    await conn.close();
    child.kill('SIGTERM');
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    // The socket file is the unit's: left in place.
    expect(lstatSync(socketPath).isSocket()).toBe(true);
  } catch (err) {
    throw new Error(`${(err as Error).message}\ndaemon stderr:\n${stderr}`, { cause: err });
  } finally {
    closeFd(memfd);
    notify.close();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

test("a daemon's close leaves the unit's socket to systemd, which keeps a copy: a client that connects after it waits in the backlog, and the next daemon started on the socket serves it", async () => {
  const socketPath = join(dir, 'activated.sock');
  const listening = rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 16 });
  const systemd = dupFd(listening); // systemd's own copy, kept to start the service again
  try {
    expect(await echoFromNewDaemon({ diagnostics: true, socketPath, listenFd: listening }, 'first')).toBe('first');
    // Nobody serves now; the socket still listens (systemd's copy), its file in place.
    expect(lstatSync(socketPath).isSocket()).toBe(true);
    const waiting = connect('helper', { command: PROBE_COMMAND, socketPath, timeoutMs: 20_000 });
    const second = HelperDaemon.start({ diagnostics: true, socketPath, listenFd: dupFd(systemd) });
    try {
      const late = await waiting;
      expect(await late.call('echo', 'second')).toBe('second');
      await late.close();
    } finally {
      await second.close();
    }
  } finally {
    closeFd(systemd);
  }
});

test('without LISTEN_PID naming this process, passed fds are not taken as sockets to serve', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_FDS: '1', LISTEN_PID: String(process.pid + 1) };
  expect(listenFdsFromSystemd(env)).toEqual([]);
  expect(env).toEqual({}); // unset, as sd_listen_fds(1) does, so children do not inherit them
});
