/**
 * Trust between a helper daemon and its clients, attacked by another local
 * user (nobody, 65534; these tests run as root, so they are skipped when not):
 * a client hands nothing to a listener it does not trust, and a daemon never
 * listens where another user could put a socket of theirs in its place.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, HelperDaemon, makeMemfd, closeFd, PeerRefusedError, PROBE_COMMAND, SystemError, type ConnectOptions } from '../../src';
import { diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { failNativeCall } from '../../src/test-hooks';
import { UnixSocket } from '../../src/socket';
import { defaultHelperSocketPath, TAKEN_OVER_REFUSAL } from '../../src/transports/helper-daemon';
import { DIST_SRC, isRoot, NOBODY, runAsNobody, spawnAsUid } from '../util/nobody';
import { fdTableSettles } from '../util/processes';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-trust-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * As nobody (or `uid`): listens at `address` (a path or @name), accepts
 * every client and counts what arrives (bytes, fds), printing {"listening"}
 * first, {"received"} once the first message has been read, and
 * {"bytes","fds"} when told to stop by SIGTERM.
 */
function squatter(address: string, uid = NOBODY): ReturnType<typeof runAsNobody> {
  const abstract = address.startsWith('@');
  const script = `
    const { closeFd } = require(${JSON.stringify(DIST_SRC)});
    const { UnixServer } = require(${JSON.stringify(join(DIST_SRC, 'socket.js'))});
    const server = UnixServer.listen(${JSON.stringify(abstract ? { abstract: address.slice(1) } : address)}, { kind: 'seqpacket', mode: 0o666 });
    let bytes = 0, fds = 0, told = false;
    const sockets = [];
    server.onConnection((err, s) => {
      if (!s) return;
      sockets.push(s);
      s.setMessageHandler((e, data, got) => {
        if (data) bytes += data.length;
        if (got) { fds += got.length; for (const fd of got) closeFd(fd); }
        if (data && !told) { told = true; console.log(JSON.stringify({ received: true })); }
      });
    });
    process.on('SIGTERM', () => { console.log(JSON.stringify({ bytes, fds })); process.exit(0); });
    console.log(JSON.stringify({ listening: true }));`;
  return uid === NOBODY ? runAsNobody(script) : spawnAsUid(uid, process.execPath, ['-e', script]);
}

const describeRoot = isRoot ? describe : describe.skip;

describeRoot('a client trusts only the listener it should (as another uid: nobody)', () => {
  test('a listener of another uid at an abstract name gets nothing: PeerRefusedError before the HELLO', async () => {
    const name = `@fdbridge-squat-${process.pid}`;
    const attacker = squatter(name);
    try {
      await attacker.line('listening');
      const memfd = makeMemfd('secret');
      try {
        const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(PeerRefusedError);
        expect((err as PeerRefusedError).peer).toMatchObject({ uid: NOBODY, pid: attacker.pid });
        // It says whose socket it is and how to trust it, if that was meant.
        expect((err as Error).message).toBe(
          `connect: the socket at ${name} belongs to pid ${attacker.pid}, uid ${NOBODY}, not to uid ${process.getuid?.() ?? 0}; nothing was sent to it ` +
            '(name that uid or pid in options.trustPeer to trust it)',
        );
      } finally {
        closeFd(memfd);
      }
      attacker.child.kill('SIGTERM');
      expect(await attacker.line('bytes')).toEqual({ bytes: 0, fds: 0 });
    } finally {
      attacker.kill();
      await attacker.exited();
    }
  });

  test.each([
    ['its uid', (pid: number) => ({ uids: [NOBODY], pid })],
    ['its pid (checked with its pidfd)', (pid: number) => ({ pids: [pid] })],
  ])('a listener the caller named by %s is trusted: the HELLO reaches it', async (_what, trust) => {
    const name = `@fdbridge-squat-trusted-${process.pid}`;
    const attacker = squatter(name);
    try {
      await attacker.line('listening');
      const { pid: _pid, ...trustPeer } = trust(attacker.pid) as { uids?: number[]; pids?: number[]; pid?: number };
      // It never answers: the handshake times out, after the HELLO went out.
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name, trustPeer, timeoutMs: 300 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_TIMEOUT' });
      // The HELLO was sent before the timeout began; the squatter may read it
      // only later (a loaded machine), and a SIGTERM handled first would count nothing.
      await attacker.line('received');
      attacker.child.kill('SIGTERM');
      const seen = await attacker.line<{ bytes: number; fds: number }>('bytes');
      expect(seen.bytes).toBeGreaterThan(0);
      expect(seen.fds).toBe(0);
    } finally {
      attacker.kill();
      await attacker.exited();
    }
  });

  test("a daemon run by root is trusted without naming it (root can read the client's files anyway); the client is nobody", async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-root-daemon-${process.pid}`, allowUids: [NOBODY] });
    try {
      const p = runAsNobody(`
        const { closeFd, connect, makeMemfd } = require(${JSON.stringify(DIST_SRC)});
        (async () => {
          const fd = makeMemfd('for-root');
          const c = await connect('helper', { command: { name: 'log' }, socketPath: ${JSON.stringify(daemon.socketPath)} });
          const there = await c.dupFileDescriptor(fd);
          await c.close(); closeFd(fd);
          return { there: typeof there };
        })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
      expect(await p.line('result')).toEqual({ result: { there: 'number' } });
      await p.exited();
      expect(daemon.stats.connections).toBe(1);
    } finally {
      await daemon.close();
    }
  });

  test('a client that is not root (nobody) trusts a daemon of its own uid without naming it', async () => {
    const p = runAsNobody(`
      const { connect, HelperDaemon, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
      (async () => {
        const daemon = HelperDaemon.start({ diagnostics: true, socketPath: '@fdbridge-nobody-own-${process.pid}' });
        try {
          const c = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath });
          const echoed = await c.call('echo', 'mine');
          await c.close();
          return { echoed };
        } finally {
          await daemon.close();
        }
      })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
    expect(await p.line('result')).toEqual({ result: { echoed: 'mine' } });
    await p.exited();
  });

  test("a listener named by its pid whose process has exited, its socket held on by another: refused, its pidfd says the process is gone", async () => {
    const name = `fdbridge-squat-exited-${process.pid}`;
    // As nobody: listen, hand the listening socket to a process that keeps
    // it (fd 3) and never accepts, print that process's pid, and exit.
    const maker = runAsNobody(`
      const { spawn } = require('node:child_process');
      const { rawListen } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
      const fd = rawListen('seqpacket', ${JSON.stringify(name)}, { abstract: true });
      const holder = spawn(process.execPath, ['-e', 'setInterval(() => undefined, 1 << 30)'], { stdio: ['ignore', 'ignore', 'ignore', fd], detached: true });
      console.log(JSON.stringify({ holder: holder.pid }));
      process.exit(0);`);
    const { holder } = await maker.line<{ holder: number }>('holder');
    try {
      await maker.exited();
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: `@${name}`, trustPeer: { pids: [maker.pid] } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerRefusedError);
      expect((err as PeerRefusedError).peer).toMatchObject({ uid: NOBODY, pid: maker.pid });
      expect((err as Error).message).toBe(
        `connect: the process that listens at @${name} (pid ${maker.pid}) is no longer running (its pidfd says -1); nothing was sent to it`,
      );
    } finally {
      process.kill(holder, 'SIGKILL');
    }
  });

  test.each([
    ['ENOPROTOOPT, a kernel without SO_PEERPIDFD: trusted by its SO_PEERCRED pid, the HELLO reaches it', 'ENOPROTOOPT', true],
    ['EINVAL, a kernel before 6.16 whose listener has exited and been reaped: refused, the listener gets nothing', 'EINVAL', false],
    ['any other error (EMFILE): connect fails with it, the listener gets nothing', 'EMFILE', false],
  ] as const)('a listener named by its pid whose pidfd cannot be had, %s', async (_what, code, trusted) => {
    const name = `@fdbridge-squat-no-pidfd-${process.pid}`;
    const attacker = squatter(name);
    const restore = failNativeCall('peerPidfd', new SystemError(-osConstants.errno[code], 'getsockopt(SO_PEERPIDFD)'));
    try {
      await attacker.line('listening');
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name, trustPeer: { pids: [attacker.pid] }, timeoutMs: 300 }).catch((e: unknown) => e);
      restore();
      attacker.child.kill('SIGTERM');
      const seen = await attacker.line<{ bytes: number; fds: number }>('bytes');
      if (trusted) {
        // It never answers: the handshake times out, after the HELLO went out.
        expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_TIMEOUT' });
        expect(seen.bytes).toBeGreaterThan(0);
      } else if (code === 'EINVAL') {
        expect(err).toBeInstanceOf(PeerRefusedError);
        expect((err as PeerRefusedError).peer).toMatchObject({ uid: NOBODY, pid: attacker.pid });
        expect((err as Error).message).toBe(
          `connect: the process that listens at ${name} (pid ${attacker.pid}) is no longer running (SO_PEERPIDFD found no process: EINVAL); nothing was sent to it`,
        );
        expect(seen.bytes).toBe(0);
      } else {
        expect(err).toBeInstanceOf(SystemError);
        expect(err).toMatchObject({ code, syscall: 'getsockopt(SO_PEERPIDFD)' });
        expect(seen.bytes).toBe(0);
      }
      expect(seen.fds).toBe(0);
    } finally {
      restore();
      attacker.kill();
      await attacker.exited();
    }
  });

  test("a listener of another uid whose name carries the text of a taken-over daemon's refusal is refused and not connected to again", async () => {
    // A connect is made again only when a daemon refuses it as queued before it took its socket over.
    const name = `@fdbridge-squat ${TAKEN_OVER_REFUSAL} ${process.pid}`;
    const attacker = squatter(name);
    const connects = jest.spyOn(UnixSocket, 'connect');
    try {
      await attacker.line('listening');
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerRefusedError);
      expect((err as PeerRefusedError).peer).toMatchObject({ uid: NOBODY, pid: attacker.pid });
      expect(connects).toHaveBeenCalledTimes(1);
      attacker.child.kill('SIGTERM');
      expect(await attacker.line('bytes')).toEqual({ bytes: 0, fds: 0 });
    } finally {
      connects.mockRestore();
      attacker.kill();
      await attacker.exited();
    }
  });

  test('trusting some other pid does not trust this listener', async () => {
    const name = `@fdbridge-squat-otherpid-${process.pid}`;
    const attacker = squatter(name);
    try {
      await attacker.line('listening');
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name, trustPeer: { pids: [process.pid], uids: [12345] } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerRefusedError);
      attacker.child.kill('SIGTERM');
      expect(await attacker.line('bytes')).toEqual({ bytes: 0, fds: 0 });
    } finally {
      attacker.kill();
      await attacker.exited();
    }
  });

  // trustPeer given as a string (a uid or pid read from an environment
  // variable or a config file) was once searched by String.prototype.includes:
  // '100001' trusted uids 10000, 1000, 100, 10 and 1, and '1' + pid the pid.
  test.each([
    ['uids: "100001", a listener of uid 10000', 10_000, () => ({ uids: '100001' })],
    ['pids: "1" + its pid', NOBODY, (pid: number) => ({ pids: `1${pid}` })],
  ])('trustPeer %s: a TypeError before connecting, the listener gets nothing', async (_what, uid, trust) => {
    const name = `@fdbridge-squat-substring-${process.pid}`;
    const attacker = squatter(name, uid);
    try {
      await attacker.line('listening');
      const trustPeer = trust(attacker.pid) as unknown as ConnectOptions['trustPeer'];
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: name, trustPeer, timeoutMs: 300 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TypeError);
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/^connect: options\.trustPeer\.(uids|pids) must be an array/) });
      attacker.child.kill('SIGTERM');
      expect(await attacker.line('bytes')).toEqual({ bytes: 0, fds: 0 });
    } finally {
      attacker.kill();
      await attacker.exited();
    }
  });

  test('a socket another user planted in a shared sticky directory gets nothing either', async () => {
    chmodSync(dir, 0o755); // nobody may pass through
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const path = join(shared, 'helper.sock');
    const attacker = squatter(path);
    try {
      await attacker.line('listening');
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: path }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerRefusedError);
      // ...and no daemon of ours would have listened there in the first place.
      expect(() => HelperDaemon.start({ diagnostics: true, socketPath: join(shared, 'mine.sock') })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
      attacker.child.kill('SIGTERM');
      expect(await attacker.line('bytes')).toEqual({ bytes: 0, fds: 0 });
    } finally {
      attacker.kill();
      await attacker.exited();
    }
  });
});

describe('options.trustPeer is checked before any socket is made', () => {
  let daemon: HelperDaemon;
  beforeAll(() => {
    // Of our own uid: a connect that got as far as the socket would be served.
    daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@fdbridge-trust-options-${process.pid}` });
  });
  afterAll(async () => {
    await daemon.close();
  });

  /**
   * What connect rejects with for `trustPeer` ('connected' if it does not),
   * and how this process's fd table differs afterwards: at once for a
   * refusal; once the daemon here has closed its end for a connection.
   */
  async function refusal(trustPeer: unknown): Promise<{ err: unknown; fds: string }> {
    const baseline = openFdTable();
    const conn = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath, trustPeer: trustPeer as ConnectOptions['trustPeer'] }).catch((e: unknown) => ({ refused: e }));
    if ('refused' in conn) return { err: conn.refused, fds: formatFdTableDiff(diffFdTables(baseline, openFdTable())) };
    await conn.close();
    return { err: 'connected', fds: await fdTableSettles(process.pid, baseline) };
  }

  const uid = fc.integer({ min: 0, max: 0x7fffffff });
  const pid = fc.integer({ min: 1, max: 0x7fffffff });
  const field = fc.constantFrom('uids' as const, 'pids' as const);
  /** A value that is no array: a string (of digits too), a number, a Set, an object, null... */
  const notArray = fc.oneof(
    fc.string(),
    uid.map(String),
    fc.integer(),
    fc.double(),
    fc.array(uid).map((a) => new Set(a)),
    fc.dictionary(fc.string(), uid),
    fc.constantFrom(null, true, 1n),
  );
  /** A list entry that is no uid nor pid: negative, fractional, past 2^31 - 1, a string, null... */
  const badEntry = fc.oneof(
    fc.integer({ max: -1 }),
    fc.double({ noInteger: true }),
    fc.integer({ min: 2 ** 31, max: Number.MAX_SAFE_INTEGER }),
    uid.map(String),
    fc.constantFrom(null, undefined, Number.NaN, Infinity, 1n, [1]),
  );

  test('uids or pids that is not an array: a TypeError naming it, nothing connected, the fd table the same', async () => {
    await fc.assert(
      fc.asyncProperty(field, notArray, async (key, value) => {
        const { err, fds } = await refusal({ [key]: value });
        expect(err).toBeInstanceOf(TypeError);
        expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(new RegExp(`^connect: options\\.trustPeer\\.${key} must be an array of ${key}, not `)) });
        expect(fds).toBe('');
      }),
      { numRuns: 200, examples: [['uids', '100001'], ['pids', '125119'], ['uids', 10_000], ['uids', new Set([10_000])]] },
    );
  });

  test('a list with an entry that is not one: a TypeError or RangeError naming that entry, nothing connected, the fd table the same', async () => {
    await fc.assert(
      fc.asyncProperty(
        field,
        // Pids: each a valid uid too.
        fc.array(pid, { maxLength: 5 }),
        fc.array(pid, { maxLength: 5 }),
        badEntry,
        async (key, before, after, bad) => {
          const { err, fds } = await refusal({ [key]: [...before, bad, ...after] });
          expect([TypeError, RangeError].some((E) => err instanceof E)).toBe(true);
          expect((err as Error).message).toMatch(new RegExp(`^connect: options\\.trustPeer\\.${key}\\[${before.length}\\] must be an integer from ${key === 'pids' ? 1 : 0} to 2147483647, not `));
          expect(fds).toBe('');
        },
      ),
      { numRuns: 200, examples: [['pids', [], [], 0]] },
    );
  });

  test('trustPeer that is not an object, or has a key other than uids and pids: a TypeError naming it and what it must be', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.oneof(fc.string(), fc.integer(), fc.array(uid), fc.constantFrom(null, true)).map((value): { value: unknown; says: string } => ({ value, says: 'connect: options.trustPeer must be an object ({ uids?, pids? })' })),
          fc
            .string({ minLength: 1 })
            .filter((k) => k !== 'uids' && k !== 'pids' && k !== '__proto__')
            .map((k): { value: unknown; says: string } => ({ value: { uids: [], [k]: [1] }, says: `connect: options.trustPeer.${k} must be left out: a daemon is trusted by uids and pids only` })),
        ),
        async ({ value, says }) => {
          const { err, fds } = await refusal(value);
          expect(err).toBeInstanceOf(TypeError);
          expect((err as Error).message.startsWith(`${says}, not `)).toBe(true);
          expect(fds).toBe('');
        },
      ),
      { numRuns: 100, examples: [[{ value: { uid: [1000] }, says: 'connect: options.trustPeer.uid must be left out: a daemon is trusted by uids and pids only' }]] },
    );
  });

  test('uids and pids that are arrays of such integers connect; no refused connect ever reached the daemon', async () => {
    const before = daemon.stats.connections;
    let made = 0;
    await fc.assert(
      fc.asyncProperty(fc.record({ uids: fc.array(uid, { maxLength: 4 }), pids: fc.array(pid, { maxLength: 4 }) }, { requiredKeys: [] }), async (trustPeer) => {
        const { err, fds } = await refusal(trustPeer);
        expect(err).toBe('connected');
        made++;
        expect(fds).toBe('');
      }),
      { numRuns: 20 },
    );
    // Accepted in the order connected: every refused connect of the tests
    // above came before these, and none of them was served or refused.
    expect(daemon.stats.connections - before).toBe(made);
    expect(daemon.stats.connections).toBe(made);
    expect(daemon.stats.refused).toBe(0);
  });
});

describe('a daemon listens only where nobody else can write', () => {
  test.each([
    ['world-writable', 0o777],
    ['world-writable and sticky (as /tmp)', 0o1777],
    ['group-writable', 0o770],
  ])('an explicit socket path in a %s directory is refused', (_what, mode) => {
    const d = join(dir, 'd');
    mkdirSync(d);
    chmodSync(d, mode);
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: join(d, 'h.sock') })).toThrow(
      expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH', message: expect.stringMatching(/others can write/) }),
    );
  });

  test('a directory above it that others can write and that is not sticky is refused too', () => {
    const open = join(dir, 'open');
    mkdirSync(join(open, 'mine'), { recursive: true });
    chmodSync(open, 0o777);
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: join(open, 'mine', 'h.sock') })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
  });

  (isRoot ? test : test.skip)("a directory of another uid (nobody's) is refused", () => {
    const theirs = join(dir, 'theirs');
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, NOBODY, NOBODY);
    expect(() => HelperDaemon.start({ diagnostics: true, socketPath: join(theirs, 'h.sock') })).toThrow(
      expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH', message: expect.stringMatching(/belongs to uid 65534/) }),
    );
  });

  test('a private directory under a sticky /tmp is fine', async () => {
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: join(dir, 'h.sock') });
    try {
      const conn = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath });
      expect(await conn.call('echo', 'ok')).toBe('ok');
      await conn.close();
    } finally {
      await daemon.close();
    }
  });

  test('the default never falls back to a shared directory: XDG_RUNTIME_DIR unset gives /run (root) or /run/user/<uid>, else an error', () => {
    const saved = process.env['XDG_RUNTIME_DIR'];
    delete process.env['XDG_RUNTIME_DIR'];
    try {
      const uid = process.getuid?.() ?? 0;
      let path: string | undefined;
      let error: unknown;
      try {
        path = defaultHelperSocketPath();
      } catch (e) {
        error = e;
      }
      if (uid === 0) expect(path).toBe('/run/fdbridge/helper.sock');
      else if (path !== undefined) expect(path).toBe(`/run/user/${uid}/fdbridge/helper.sock`);
      else expect(error).toMatchObject({ code: 'ERR_FDBRIDGE_NO_RUNTIME_DIR' });
      expect(path ?? '').not.toMatch(new RegExp(`^${tmpdir()}`));
    } finally {
      if (saved !== undefined) process.env['XDG_RUNTIME_DIR'] = saved;
    }
  });

  test('an XDG_RUNTIME_DIR that others can write is refused, not replaced by somewhere else', () => {
    const saved = process.env['XDG_RUNTIME_DIR'];
    const runtime = join(dir, 'runtime');
    mkdirSync(runtime);
    chmodSync(runtime, 0o777);
    process.env['XDG_RUNTIME_DIR'] = runtime;
    try {
      expect(() => HelperDaemon.start({ diagnostics: true })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
    } finally {
      if (saved === undefined) delete process.env['XDG_RUNTIME_DIR'];
      else process.env['XDG_RUNTIME_DIR'] = saved;
    }
  });
});

/** A script run as nobody: `body` runs with `src` (the package's entry), `connect`, `trustPeer` and `socketPath` in scope; prints JSON. */
function nobodyClient(socketPath: string, body: string): Promise<Record<string, unknown>> {
  const p = runAsNobody(`
    const src = require(${JSON.stringify(DIST_SRC)});
    const { connect } = src;
    const trustPeer = { uids: [${process.getuid?.() ?? 0}] };
    const socketPath = ${JSON.stringify(socketPath)};
    (async () => { ${body} })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
  return p.line<{ result: Record<string, unknown> }>('result').then((r) => r.result);
}

describeRoot('a client names a command and never chooses code (as another uid: nobody, allowed)', () => {
  let marker: string;
  let evil: string;
  beforeEach(() => {
    chmodSync(dir, 0o755);
    marker = join(dir, 'evil-ran');
    evil = join(dir, 'evil.js');
    // A module that, if the daemon ever require()d it, would leave a mark.
    require('node:fs').writeFileSync(evil, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran'); exports.Evil = class { constructor() {} };`);
  });

  test('a HELLO naming a module path is refused and the module is never loaded', async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-cmd-${process.pid}`, allowUids: [NOBODY] });
    try {
      const raw = await nobodyClient(daemon.socketPath, `
        const { rawConnect, receiveNow, sendNow } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
        const { encodeJson, FrameType, PROTOCOL_VERSION } = require(${JSON.stringify(join(DIST_SRC, 'protocol.js'))});
        const fd = rawConnect('seqpacket', socketPath.slice(1), true);
        sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { module: ${JSON.stringify(evil)}, export: 'Evil' } }));
        for (let i = 0; i < 500; i++) {
          const m = receiveNow(fd, 65536, 0);
          if (m) return { type: m.data[0], body: m.data.toString('utf8', 8) };
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
        }
        return { type: 'none' };`);
      expect(raw['type']).toBe(8); // ERROR
      expect(JSON.parse(raw['body'] as string)).toMatchObject({ code: 'ERR_FDBRIDGE_UNKNOWN_COMMAND' });
      // Through the library a module-only spec never even leaves the client.
      const viaApi = await nobodyClient(daemon.socketPath, `
        return connect('helper', { command: { module: ${JSON.stringify(evil)}, export: 'Evil' }, socketPath, trustPeer }).then(() => ({ ok: true }));`);
      expect(viaApi).toMatchObject({ error: 'TypeError' });
      expect(require('node:fs').existsSync(marker)).toBe(false);
    } finally {
      await daemon.close();
    }
  });

  test('diagnostic commands are off unless the daemon was started with them; started ones are served by name', async () => {
    const plain = HelperDaemon.start({ socketPath: `@fdbridge-cmd-plain-${process.pid}`, allowUids: [NOBODY], commands: { keep: { module: join(DIST_SRC, 'commands', 'probe-command.js'), export: 'ProbeCommand' } } });
    const diag = HelperDaemon.start({ socketPath: `@fdbridge-cmd-diag-${process.pid}`, allowUids: [NOBODY], diagnostics: true });
    try {
      const ask = (path: string, name: string): Promise<Record<string, unknown>> =>
        nobodyClient(path, `const c = await connect('helper', { command: { name: ${JSON.stringify(name)} }, socketPath, trustPeer }); const w = await c.call('where'); await c.close(); return { pid: w.pid };`);
      expect(await ask(plain.socketPath, 'probe')).toMatchObject({ error: 'ERR_FDBRIDGE_UNKNOWN_COMMAND', message: expect.stringMatching(/serves: log, status, keep/) });
      expect(await ask(plain.socketPath, 'log')).toEqual({ pid: process.pid });
      expect(await ask(plain.socketPath, 'keep')).toEqual({ pid: process.pid });
      expect(await ask(diag.socketPath, 'probe')).toEqual({ pid: process.pid });
      expect(await ask(plain.socketPath, '../evil')).toMatchObject({ error: 'TypeError' });
      expect(plain.commandNames).toEqual(['log', 'status', 'keep']);
    } finally {
      await plain.close();
      await diag.close();
    }
  });

  test("a command sees only its own connection's fds: another client cannot adopt them by number", async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-cmd-fds-${process.pid}`, allowUids: [NOBODY] });
    try {
      const result = await nobodyClient(daemon.socketPath, `
        const { closeFd, makeMemfd } = src;
        const fd = makeMemfd('victim');
        const victim = await connect('helper', { command: { name: 'log' }, socketPath, trustPeer });
        const there = await victim.dupFileDescriptor(fd);
        const thief = await connect('helper', { command: { name: 'log' }, socketPath, trustPeer });
        const stolen = await thief.call('redirectLogToFd', there).then(() => 'adopted', (e) => e.message);
        await thief.close();
        // The victim's own command can still adopt it.
        await victim.call('redirectLogToFd', there);
        await victim.call('log', 'mine');
        await victim.close();
        const size = require('node:fs').fstatSync(fd).size;
        closeFd(fd);
        return { stolen, size };`);
      expect(result['stolen']).toMatch(/was not duplicated into this command/);
      expect(result['size']).toBe('mine\n'.length);
    } finally {
      await daemon.close();
    }
  });
});
