/**
 * The helper daemon's guarantees: who may connect, where its socket lives,
 * what it never removes, and that it cleans up after itself.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, connect, HelperDaemon, PeerRefusedError, PROBE_COMMAND } from '../../src';
import { packageRoot } from '../../src/paths';
import { rawListen } from '../../src/testing';
import { defaultHelperSocketPath } from '../../src/transports/helper-daemon';
import { kernelHasPassRights } from '../../scenarios/support/hostile';
import { echoFromNewDaemon } from '../util/helper-status';
import { startHelperProcess } from '../util/processes';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-helper-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const execFileAsync = promisify(execFile);
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** Runs a client as uid/gid `nobody` against `socketPath` (trusting our uid as the daemon's); returns what it printed. */
async function connectAsNobody(socketPath: string): Promise<{ code: string; echoed?: string; message?: string; quota?: string }> {
  const script = `
    const { connect, PROBE_COMMAND } = require(${JSON.stringify(join(packageRoot, 'dist', 'src'))});
    connect('helper', { command: PROBE_COMMAND, socketPath: ${JSON.stringify(socketPath)}, trustPeer: { uids: [${process.getuid?.() ?? 0}] } })
      .then(async (c) => { const echoed = await c.call('echo', 'hi'); await c.close(); console.log(JSON.stringify({ code: 'OK', echoed })); })
      .catch((e) => console.log(JSON.stringify({ code: e.code, message: e.message, quota: e.quota })));`;
  // Asynchronously: a daemon in this process must keep serving meanwhile.
  // No time limit of its own: the client's connect ends by its typed timeoutMs (10 s by default).
  const { stdout } = await execFileAsync(process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY });
  return JSON.parse(stdout.trim()) as { code: string; echoed?: string; message?: string; quota?: string };
}

describe('who may connect', () => {
  if (!isRoot) {
    test.skip('a client of another uid is refused (needs root to run a client as another uid)', () => undefined);
    // eslint-disable-next-line no-console
    console.log('helper-daemon.test: not running as root, so the other-uid tests are skipped');
    return;
  }

  test('a peer of another uid is refused by its SO_PEERCRED uid (abstract socket: no file permissions to stop it)', async () => {
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@fdbridge-test-${process.pid}-refuse` });
    try {
      const result = await connectAsNobody(daemon.socketPath);
      expect(result.code).toBe('ERR_FDBRIDGE_REFUSED');
      // The client is told why (its uid, not a limit it could wait out), to ask for --allow-uid.
      expect({ quota: result.quota, message: result.message }).toEqual({ quota: undefined, message: expect.stringContaining(`uid ${NOBODY} may not use this helper`) });
      expect(daemon.stats.refused).toBe(1);
      expect(daemon.stats.connections).toBe(0);
    } finally {
      await daemon.close();
    }
  });

  test('a refused peer leaves no fd behind: the kernel refuses its fds from its connect on (else what it sent is closed)', async () => {
    const name = `fdbridge-test-${process.pid}-refuse-fds`;
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@${name}` });
    try {
      // As nobody: connect, send a HELLO-shaped frame with 253 fds at once
      // (it may arrive before the daemon has even accepted), wait for
      // REFUSED, then try again.
      const script = `
        const { makePipe } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'fd.js'))});
        const { rawConnect, receiveNow, sendNow } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'testing.js'))});
        const fd = rawConnect('seqpacket', ${JSON.stringify(name)}, true);
        const [r, w] = makePipe();
        const attempt = () => { try { sendNow(fd, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), new Array(253).fill(w)); return 'sent'; } catch (e) { return e.code; } };
        const first = attempt();
        let answer = null;
        for (let i = 0; i < 500 && answer === null; i++) {
          const m = receiveNow(fd, 65536, 253);
          if (m) answer = m.data[0]; else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
        }
        console.log(JSON.stringify({ first, answer, second: attempt() }));`;
      // No time limit of its own: the script ends after at most 500 receive attempts.
      const { stdout } = await execFileAsync(process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY });
      const result = JSON.parse(stdout.trim()) as { first: string; answer: number; second: string };
      expect(result.answer).toBe(3); // REFUSED
      // Sent before the daemon accepted, or after: the listener's SO_PASSRIGHTS
      // off holds from the connect on (the kernel copies it then).
      if (kernelHasPassRights()) expect(result).toMatchObject({ first: 'EPERM', second: 'EPERM' });
      else expect(result.first).toBe('sent');
      expect(daemon.stats.refused).toBe(1);
      // The daemon runs in this process: the global check of its fd table
      // after this test proves the fds that did arrive were closed.
    } finally {
      await daemon.close();
    }
  });

  test('an allow-listed uid is served', async () => {
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@fdbridge-test-${process.pid}-allow`, allowUids: [NOBODY] });
    try {
      expect(await connectAsNobody(daemon.socketPath)).toEqual({ code: 'OK', echoed: 'hi' });
      expect(daemon.stats.connections).toBe(1);
    } finally {
      await daemon.close();
    }
  });

  test('a filesystem socket is 0600: another uid cannot even connect (EACCES)', async () => {
    chmodSync(dir, 0o755);
    const socketPath = join(dir, 'h.sock');
    const helperProc = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY)]);
    try {
      expect(statSync(socketPath).mode & 0o777).toBe(0o600);
      expect((await connectAsNobody(socketPath)).code).toBe('EACCES');
    } finally {
      await helperProc.stop();
    }
  });
});

/**
 * An LD_PRELOAD shim that plays the attacker deterministically: right after
 * a successful bind(2) of a filesystem socket, it replaces the fresh socket
 * file with what FDB_RACE says ("symlink:TARGET" or "file"), i.e. exactly
 * in the window between bind and the chmod that follows it.
 */
const RACE_SHIM = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int bind(int fd, const struct sockaddr* addr, socklen_t len) {
  int (*real)(int, const struct sockaddr*, socklen_t) =
      (int (*)(int, const struct sockaddr*, socklen_t))dlsym(RTLD_NEXT, "bind");
  int r = real(fd, addr, len);
  const char* race = getenv("FDB_RACE");
  const struct sockaddr_un* un = (const struct sockaddr_un*)addr;
  if (r == 0 && race != NULL && addr->sa_family == AF_UNIX && un->sun_path[0] != 0) {
    unlink(un->sun_path);
    if (strncmp(race, "symlink:", 8) == 0) {
      symlink(race + 8, un->sun_path);
    } else {
      int f = open(un->sun_path, O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (f >= 0) { write(f, "planted", 7); close(f); }
    }
  }
  return r;
}
`;

/** Compiles RACE_SHIM into `dir`; undefined when there is no C compiler. */
function buildRaceShim(dir: string): string | undefined {
  const src = join(dir, 'race.c');
  const lib = join(dir, 'race.so');
  writeFileSync(src, RACE_SHIM);
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-o', lib, src, '-ldl'], { stdio: 'pipe' });
    return lib;
  } catch {
    return undefined;
  }
}

describe('the socket file', () => {
  test('the default path is in a private 0700 directory under $XDG_RUNTIME_DIR, the socket 0600', async () => {
    const saved = process.env['XDG_RUNTIME_DIR'];
    process.env['XDG_RUNTIME_DIR'] = dir;
    try {
      expect(defaultHelperSocketPath()).toBe(join(dir, 'fdbridge', 'helper.sock'));
      const daemon = HelperDaemon.start({ diagnostics: true });
      try {
        expect(lstatSync(join(dir, 'fdbridge')).mode & 0o777).toBe(0o700);
        expect(lstatSync(daemon.socketPath).mode & 0o777).toBe(0o600);
        const conn = await connect('helper', { command: PROBE_COMMAND });
        expect(await conn.call('echo', 1)).toBe(1);
        await conn.close();
      } finally {
        await daemon.close();
      }
      expect(() => lstatSync(join(dir, 'fdbridge', 'helper.sock'))).toThrow(/ENOENT/);
    } finally {
      if (saved === undefined) delete process.env['XDG_RUNTIME_DIR'];
      else process.env['XDG_RUNTIME_DIR'] = saved;
    }
  });

  test('a default directory that is not private is refused', () => {
    const saved = process.env['XDG_RUNTIME_DIR'];
    process.env['XDG_RUNTIME_DIR'] = dir;
    try {
      const mine = join(dir, 'fdbridge');
      require('node:fs').mkdirSync(mine, { mode: 0o755 });
      chmodSync(mine, 0o755);
      expect(() => HelperDaemon.start({ diagnostics: true })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
    } finally {
      if (saved === undefined) delete process.env['XDG_RUNTIME_DIR'];
      else process.env['XDG_RUNTIME_DIR'] = saved;
    }
  });

  test('a stale socket file left by a dead daemon is replaced', async () => {
    const socketPath = join(dir, 'stale.sock');
    // A bound, never-listening socket closed without unlink: what a SIGKILLed daemon leaves.
    closeFd(rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 1 }));
    expect(lstatSync(socketPath).isSocket()).toBe(true);
    expect(await echoFromNewDaemon({ diagnostics: true, socketPath }, 'served')).toBe('served');
  });

  test("a live daemon's path is never taken", async () => {
    const socketPath = join(dir, 'live.sock');
    const first = HelperDaemon.start({ diagnostics: true, socketPath });
    try {
      expect(() => HelperDaemon.start({ diagnostics: true, socketPath })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_HELPER_RUNNING' }));
      const conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
      expect(await conn.call('echo', 'still here')).toBe('still here');
      await conn.close();
    } finally {
      await first.close();
    }
  });

  test('something that is not a socket is never unlinked: a file, or a symlink (not followed)', () => {
    const file = join(dir, 'file.sock');
    writeFileSync(file, 'precious');
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: file })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
    expect(readFileSync(file, 'utf8')).toBe('precious');

    const target = join(dir, 'target');
    writeFileSync(target, 'also precious');
    const link = join(dir, 'link.sock');
    symlinkSync(target, link);
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: link })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('also precious');
  });

  test.each(['symlink', 'file'] as const)(
    'a %s swapped in between bind() and chmod() is not followed, not chmodded, not unlinked: the start fails',
    async (kind) => {
      const shim = buildRaceShim(dir);
      if (shim === undefined) {
        // eslint-disable-next-line no-console
        console.log('helper-daemon.test: no C compiler (cc), so the bind/chmod race test is skipped');
        return;
      }
      const target = join(dir, 'target');
      writeFileSync(target, 'precious', { mode: 0o644 });
      chmodSync(target, 0o644);
      const socketPath = join(dir, 'raced.sock');
      const script = `
        const { HelperDaemon } = require(${JSON.stringify(join(packageRoot, 'dist', 'src'))});
        try { HelperDaemon.start({ diagnostics: true, socketPath: ${JSON.stringify(socketPath)} }); console.log(JSON.stringify({ code: 'STARTED' })); process.exit(0); }
        catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
      const { stdout } = await execFileAsync(process.execPath, ['-e', script], {
        // After any library already preloaded (the sanitizer run's libasan must stay first).
        env: { ...process.env, LD_PRELOAD: [process.env['LD_PRELOAD'], shim].filter(Boolean).join(':'), FDB_RACE: kind === 'symlink' ? `symlink:${target}` : 'file' },
      });
      const result = JSON.parse(stdout.trim()) as { code: string; message?: string };
      // The shim did swap the path (else this test proves nothing)...
      const st = lstatSync(socketPath);
      expect(kind === 'symlink' ? st.isSymbolicLink() : st.isFile()).toBe(true);
      // ...and the daemon saw it was no longer its socket: it did not start,
      expect(result.code).toBe('ENOTSOCK');
      // did not chmod through the symlink, did not unlink what was planted.
      expect(statSync(target).mode & 0o777).toBe(0o644);
      expect(readFileSync(target, 'utf8')).toBe('precious');
      if (kind === 'file') expect(readFileSync(socketPath, 'utf8')).toBe('planted');
    },
  );

  test('a path longer than 107 bytes is a clear error', () => {
    const long = join(dir, 'x'.repeat(120));
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: long })).toThrow(/107/);
  });

  test('the daemon removes its socket file on SIGTERM and on SIGINT', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const socketPath = join(dir, `${signal}.sock`);
      const proc = await startHelperProcess(socketPath);
      expect(lstatSync(socketPath).isSocket()).toBe(true);
      expect(await proc.stop(signal)).toEqual({ code: 0, signal: null });
      expect(() => lstatSync(socketPath)).toThrow(/ENOENT/);
    }
  });

  test('connecting where no daemon listens names the path and the way out', async () => {
    const socketPath = join(dir, 'nobody-home.sock');
    const err = await connect('helper', { command: PROBE_COMMAND, socketPath }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENOENT' });
    expect((err as Error).message).toContain(socketPath);
    expect((err as Error).message).toContain('npx fdbridge helper --socket');
  });
});

test('PeerRefusedError is exported for callers to match on', () => {
  expect(new PeerRefusedError('x').code).toBe('ERR_FDBRIDGE_REFUSED');
});
