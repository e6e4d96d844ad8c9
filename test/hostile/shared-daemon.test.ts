/**
 * A helper daemon shared between users, attacked by one of them (nobody,
 * 65534; these tests run as root, so they are skipped when not): what one
 * allowed user learns about the others through the daemon, and what it can
 * make the daemon write where the daemon's own lines go.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, LOG_COMMAND, makeMemfd, PeerRefusedError, RemoteError, type Connection } from '../../src';
import { daemonLogLine } from '../../src/commands/log-command';
import { UnixSocket } from '../../src/socket';
import { rawListen } from '../../src/testing';
import type { HelperStatus } from '../../src/transports/helper-daemon';
import { DIST_SRC, isRoot, NOBODY, runAsNobody } from '../util/nobody';
import { CLI, exitOf, startHelperProcess, type HelperProcess } from '../util/processes';
import { assertGuarded } from '../util/wait-for';

const describeRoot = isRoot ? describe : describe.skip;
const ME = process.getuid?.() ?? 0;

/** Runs `body` as nobody with `src`, `connect` and `socketPath` in scope (the daemon is root's: trusted by default); resolves with what it returned, or { error, message }. */
function asNobody(socketPath: string, body: string): Promise<Record<string, unknown>> {
  const p = runAsNobody(`
    const src = require(${JSON.stringify(DIST_SRC)});
    const { connect } = src;
    const socketPath = ${JSON.stringify(socketPath)};
    (async () => { ${body} })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
  return p.line<{ result: Record<string, unknown> }>('result').then(async (r) => (await p.exited(), r.result));
}

describeRoot('status on a shared daemon: another uid sees its own clients and the totals only', () => {
  test('for any number of the owner\'s clients and fds, nobody\'s status lists none of them but counts them all; the owner sees everyone', async () => {
    await assertGuarded(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 3 }), async (rootClients, fdsEach) => {
        const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-privacy-${process.pid}`, allowUids: [NOBODY] });
        const conns: Connection[] = [];
        const memfd = makeMemfd('held');
        try {
          for (let i = 0; i < rootClients; i++) {
            const c = await connect('helper', { command: LOG_COMMAND, socketPath: daemon.socketPath });
            conns.push(c);
            for (let j = 0; j < fdsEach; j++) await c.dupFileDescriptor(memfd);
          }
          // nobody: one log connection holding one fd, and the status connection.
          const seen = (await asNobody(daemon.socketPath, `
            const fd = src.makeMemfd('mine');
            const mine = await connect('helper', { command: { name: 'log' }, socketPath });
            await mine.dupFileDescriptor(fd);
            const st = await connect('helper', { command: { name: 'status' }, socketPath });
            const s = await st.call('status');
            await st.close(); await mine.close(); src.closeFd(fd);
            return { status: s, pid: process.pid };`)) as { status: HelperStatus; pid: number };
          const s = seen.status;
          expect(s).toMatchObject({ onlyUid: NOBODY, fdsHeld: rootClients * fdsEach + 1 });
          expect(s.stats.active).toBe(rootClients + 2);
          // Its own two connections, and nothing of root's: no pid, no uid.
          expect(s.clients).toHaveLength(2);
          for (const c of s.clients) expect(c).toMatchObject({ uid: NOBODY, pid: seen.pid });
          expect(s.uids).toEqual([{ uid: NOBODY, connections: 2, fdsHeld: 1, fdsClosing: 0, socketsClosing: 0, logBytes: 0 }]);
          expect(JSON.stringify(s.clients)).not.toContain(`"pid":${process.pid}`);

          // The owner, through the same command, sees every client and no filter.
          const st = await connect('helper', { command: { name: 'status' }, socketPath: daemon.socketPath });
          try {
            const mine = await st.call<HelperStatus>('status');
            expect(mine.onlyUid).toBeUndefined();
            expect(mine.clients).toHaveLength(rootClients + 1);
            expect(mine.clients.every((c) => c.uid === ME && c.pid === process.pid)).toBe(true);
            expect(mine.uids).toEqual([{ uid: ME, connections: rootClients + 1, fdsHeld: rootClients * fdsEach, fdsClosing: 0, socketsClosing: 0, logBytes: 0 }]);
          } finally {
            await st.close();
          }
        } finally {
          for (const c of conns) await c.close();
          closeFd(memfd);
          await daemon.close();
        }
      }),
      { numRuns: 4 },
    );
  });

  test('`fdbridge helper --status` run by nobody prints the totals and its own connection, never the owner\'s pid or uid', async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-cli-${process.pid}`, allowUids: [NOBODY] });
    const owner = await connect('helper', { command: LOG_COMMAND, socketPath: daemon.socketPath });
    try {
      // Asynchronously: the daemon answering it runs on this process's loop.
      const run = await new Promise<{ status: number | string | null | undefined; stdout: string; stderr: string }>((resolve) => {
        execFile('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, CLI, 'helper', '--status', '--socket', daemon.socketPath], (err, stdout, stderr) =>
          resolve({ status: err ? err.code : 0, stdout, stderr }),
        );
      });
      expect(run).toMatchObject({ status: 0 });
      expect(run.stdout).toMatch(/clients: 2 now/);
      expect(run.stdout).toMatch(/the clients of uid 65534 only/);
      expect(run.stdout).toMatch(new RegExp(`uid ${NOBODY}: 1 client`));
      expect(run.stdout).not.toMatch(new RegExp(`pid ${process.pid} uid`));
      expect(run.stdout).not.toMatch(new RegExp(`uid ${ME}\\b`));
    } finally {
      await owner.close();
      await daemon.close();
    }
  });
});

/** Resolves once the daemon's stderr holds a line containing `marker`; returns all of its stderr then. */
function stderrWith(helper: HelperProcess, marker: string): Promise<string> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (helper.stderr().includes(marker)) {
        helper.child.stderr?.off('data', check);
        resolve(helper.stderr());
      }
    };
    helper.child.stderr?.on('data', check);
    check();
  });
}

/** What daemonLogLine escaped, put back (\xNN and \uNNNN; every backslash it wrote starts one). */
function unescape(body: string): string {
  return body.replace(/\\x([0-9a-f]{2})|\\u([0-9a-f]{4})/g, (_m, x: string | undefined, u: string | undefined) => String.fromCharCode(parseInt((x ?? u)!, 16)));
}

/** How the daemon's log marks a client's line. */
const prefix = (pid: number, uid: number): string => `fdbridge helper: log from pid ${pid} (uid ${uid}): `;

describe("a client's line in the daemon's own log", () => {
  test('is exactly one line, marked with its pid and uid, with no control, separator or bidi character left, and says what was written (generated)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.oneof(fc.constantFrom('\n', '\r', '\x1b', '\\', '\x85', '\u2028', '\u202e', '\u2066', '\x00', '\x7f'), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' })) }), fc.nat(), fc.nat(), (line, pid, uid) => {
        const out = daemonLogLine({ pid, uid }, line);
        expect(out.startsWith(prefix(pid, uid))).toBe(true);
        expect(out.endsWith('\n')).toBe(true);
        const body = out.slice(prefix(pid, uid).length, -1);
        expect(body).not.toMatch(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
        // Nothing is lost: the line comes back whole (one final newline is the line's end).
        expect(unescape(body)).toBe(line.endsWith('\n') ? line.slice(0, -1) : line);
      }),
      { numRuns: 500 },
    );
  });
});

describeRoot("the log of a shared daemon, before a client redirects it (the daemon in its own process, its own lines on its stderr)", () => {
  let helper: HelperProcess;
  const socketPath = `@fdbridge-log-injection-${process.pid}`;
  beforeAll(async () => {
    helper = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY), '--verbose']);
  });
  afterAll(async () => {
    await helper?.stop('SIGTERM');
  });

  test("another uid's lines are refused with a typed error and never reach it; once redirected they go to that client's own file", async () => {
    const forged = `fdbridge helper: refused pid 1: uid 0 is not allowed`;
    const r = await asNobody(socketPath, `
      const c = await connect('helper', { command: { name: 'log' }, socketPath });
      try {
        const before = await c.call('log', ${JSON.stringify(`x
${forged}`)}).then(() => 'written', (e) => ({ name: e.name, code: e.remote && e.remote.code, message: e.message }));
        const fd = src.makeMemfd('');
        await c.call('redirectLogToFd', await c.dupFileDescriptor(fd));
        await c.call('log', 'mine');
        const size = require('node:fs').fstatSync(fd).size;
        src.closeFd(fd);
        return { before, size };
      } finally { await c.close(); }`);
    expect(r['before']).toMatchObject({ name: RemoteError.name, code: 'ERR_FDBRIDGE_LOG_NOT_REDIRECTED', message: expect.stringMatching(/redirect the log first/) });
    expect(r['size']).toBe('mine\n'.length);
    // A line the owner logs after nobody's call settled: nobody's, had it been written, would be above it.
    const marker = `owner-marker-${process.pid}-${Date.now()}`;
    const owner = await connect('helper', { command: LOG_COMMAND, socketPath });
    try {
      await owner.call('log', marker);
    } finally {
      await owner.close();
    }
    const err = await stderrWith(helper, marker);
    expect(err).not.toContain(forged);
    expect(err).not.toMatch(/^x$/m);
  });

  test("the owner's lines arrive marked and escaped: a line that forges the daemon's own is one line of the client's", async () => {
    const forged = `fdbridge helper: refused pid 1: uid 0 is not allowed`;
    const marker = `owner-forge-${process.pid}-${Date.now()}`;
    const owner = await connect('helper', { command: LOG_COMMAND, socketPath });
    try {
      await owner.call('log', `${marker}\n${forged}\r\x1b[2K${forged}`);
    } finally {
      await owner.close();
    }
    const lines = (await stderrWith(helper, marker)).split('\n');
    expect(lines.filter((l) => l.startsWith(forged))).toEqual([]);
    expect(lines.filter((l) => l.includes(marker))).toEqual([`${prefix(process.pid, process.getuid?.() ?? 0)}${marker}\\x0a${forged}\\x0d\\x1b[2K${forged}`]);
  });
});

/** Starts `fdbridge helper` as systemd would for a socket unit (the listening socket as fd 3, LISTEN_PID its own pid), as nobody when `asNobody`. */
function activatedDaemon(
  listenFd: number,
  asNobody: boolean,
  args: string[],
): { child: ChildProcess; stderr: () => string; lastWords: () => Promise<string>; listening: Promise<void> } {
  const cmd = ['sh', '-c', `LISTEN_PID=$$ exec "$0" "$@"`, process.execPath, CLI, 'helper', '--verbose', ...args];
  const child = asNobody
    ? spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...cmd], { stdio: ['ignore', 'pipe', 'pipe', listenFd], env: { ...process.env, LISTEN_FDS: '1' } })
    : spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe', listenFd], env: { ...process.env, LISTEN_FDS: '1' } });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const listening = new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the daemon exited (${code}) before listening: ${err}`)));
  });
  // Its stderr once the pipe is drained ('close' comes after 'exit'): what a
  // crash printed last (an assertion, an abort's reason) is read too.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const lastWords = async (): Promise<string> => {
    if (child.exitCode !== null || child.signalCode !== null) await closed;
    return err;
  };
  return { child, stderr: () => err, lastWords, listening };
}

/** Resolves once `n` more HELLOs (any send on a UnixSocket) have gone out of this process: the connections they open are queued on the listener. */
function afterSends(n: number): { sent: Promise<void>; restore: () => void } {
  const original = UnixSocket.prototype.send;
  let count = 0;
  let done!: () => void;
  const sent = new Promise<void>((resolve) => (done = resolve));
  const spy = jest.spyOn(UnixSocket.prototype, 'send').mockImplementation(function (this: UnixSocket, ...args: Parameters<UnixSocket['send']>) {
    const p = original.apply(this, args);
    if (++count === n) done();
    return p;
  });
  return { sent, restore: () => spy.mockRestore() };
}

describeRoot("socket activation: a socket made by root (PID 1's part) and served by a daemon of another uid (User=)", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-activated-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('clients judge the uid that serves, not the socket\'s maker: those queued before the daemon took the socket over are refused and connect again', async () => {
    const socketPath = join(dir, 'activated.sock');
    const listenFd = rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 16 });
    // Two clients connect before the daemon runs (the first is what starts a socket unit's service).
    const hellos = afterSends(2);
    const trustsRootOnly = connect('helper', { command: LOG_COMMAND, socketPath }).then(
      (c) => c,
      (e: unknown) => e,
    );
    const trustsNobody = connect('helper', { command: LOG_COMMAND, socketPath, trustPeer: { uids: [NOBODY] } });
    await hellos.sent;
    hellos.restore();
    const daemon = activatedDaemon(listenFd, true, ['--allow-uid', '0']);
    closeFd(listenFd);
    const memfd = makeMemfd('for nobody');
    try {
      await daemon.listening;
      const refused = await trustsRootOnly;
      expect(refused).toBeInstanceOf(PeerRefusedError);
      expect((refused as PeerRefusedError).peer).toMatchObject({ uid: NOBODY, pid: daemon.child.pid });
      expect((refused as Error).message).toMatch(/nothing was sent/);
      const served = await trustsNobody;
      try {
        expect(served.location.pid).toBe(daemon.child.pid);
        expect(typeof (await served.dupFileDescriptor(memfd))).toBe('number');
      } finally {
        await served.close();
      }
      expect(daemon.stderr()).toMatch(/2 connection\(s\) made while the socket was uid 0's \(pid \d+\) refused/);
      // One made now reads the daemon's own credentials at once.
      await expect(connect('helper', { command: LOG_COMMAND, socketPath })).rejects.toMatchObject({
        code: 'ERR_FDBRIDGE_REFUSED',
        peer: { uid: NOBODY, pid: daemon.child.pid },
      });
      daemon.child.kill('SIGTERM');
      expect(await exitOf(daemon.child)).toEqual({ code: 0, signal: null });
    } catch (err) {
      throw new Error(`${(err as Error).message}\ndaemon stderr:\n${await daemon.lastWords()}`, { cause: err });
    } finally {
      closeFd(memfd);
      if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGKILL');
    }
  });

  test('a daemon of the maker\'s own uid serves the connections queued before it started, and clients read its own pid from then on', async () => {
    const socketPath = join(dir, 'activated.sock');
    const listenFd = rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 16 });
    const hellos = afterSends(1);
    const early = connect('helper', { command: LOG_COMMAND, socketPath });
    await hellos.sent;
    hellos.restore();
    const daemon = activatedDaemon(listenFd, false, []);
    closeFd(listenFd);
    try {
      await daemon.listening;
      const conn = await early;
      try {
        expect(conn.location.pid).toBe(daemon.child.pid);
      } finally {
        await conn.close();
      }
      const later = await UnixSocket.connect(socketPath, { kind: 'seqpacket' });
      try {
        expect(later.peerCredentials()).toMatchObject({ pid: daemon.child.pid, uid: ME });
      } finally {
        later.close();
      }
      expect(daemon.stderr()).not.toMatch(/made while the socket was/);
      daemon.child.kill('SIGTERM');
      expect(await exitOf(daemon.child)).toEqual({ code: 0, signal: null });
    } catch (err) {
      throw new Error(`${(err as Error).message}\ndaemon stderr:\n${await daemon.lastWords()}`, { cause: err });
    } finally {
      if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGKILL');
    }
  });
});
