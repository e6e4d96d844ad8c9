/**
 * The socket-file rules (src/socket-file.ts) called directly, as every
 * socket that binds a name uses them (the helper daemon's listener, a bound
 * datagram socket), against what another local user can put in the way: a
 * directory they can write, one of theirs, their symlink on the way, a
 * socket of theirs at the name (live, bound and not listening yet, of
 * another kind, in another network namespace, with a full backlog), a file
 * where a socket was, a name swapped between the probe and the unlink, a
 * socket file another filesystem gives the same inode number. Where a mode
 * decides, every mode is tried. The jest setup checks the open-fd table
 * after every test (the probe's connection included).
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lchownSync, lstatSync, mkdirSync, readFileSync, renameSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

import { FdBridgeError, SystemError } from '../../src/errors';
import { packageRoot } from '../../src/paths';
import { bindReplacingStale, checkSocketDirectory, ensurePrivateDir, socketFileIdentity, unlinkOwnSocketFile } from '../../src/socket-file';
import { isRoot, NOBODY, runAsNobody } from '../util/nobody';
import { exitOf } from '../util/processes';
import { constants, native } from './binding';
import { thrown, withScope, type Scope } from './helpers';

const describeRoot = isRoot ? describe : describe.skip;
const DIST_SRC = join(packageRoot, 'dist', 'src');

/** What `fn` threw, as code and message; `ok` when it returned. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return `${(err as NodeJS.ErrnoException).code}: ${(err as Error).message}`;
  }
}

function unsafe(message: string): string {
  return `ERR_FDBRIDGE_UNSAFE_PATH: ${message}`;
}

/** A SEQPACKET socket bound and listening at `path`, closed with the test. */
function listener(s: Scope, path: string, backlog = 16): number {
  const fd = native.listen(constants.SOCK_SEQPACKET, path, false, 0o600, backlog);
  s.defer(() => native.close(fd));
  return fd;
}

/** What a process killed while it held a socket at `path` leaves: the file, nobody bound behind it. */
function staleSocket(path: string, type: number = constants.SOCK_SEQPACKET): number {
  native.close(native.listen(type, path, false, 0o600, 0));
  return lstatSync(path).ino;
}

/** bindReplacingStale binding a SEQPACKET listener at `path` (closed with the test), in use meaning `inUse`. */
function bindSeqpacket(s: Scope, path: string, inUse: Error): number {
  const fd = bindReplacingStale(path, constants.SOCK_SEQPACKET, () => native.listen(constants.SOCK_SEQPACKET, path, false, 0o600, 16), () => inUse);
  s.defer(() => native.close(fd));
  return fd;
}

/** bindReplacingStale binding a socket of `type` at `path`: 'bound' (the socket closed at once) or what it threw. */
function tryBind(path: string, type: number, inUse: Error): unknown {
  try {
    native.close(bindReplacingStale(path, type, () => native.listen(type, path, false, 0o600, 16), () => inUse));
    return 'bound';
  } catch (err) {
    return err;
  }
}

/** True when a SEQPACKET connect to `path` is accepted by the listening socket `fd` (the name leads to it). */
function reaches(path: string, fd: number): boolean {
  const c = native.connect(constants.SOCK_SEQPACKET, path, false);
  native.close(c);
  const accepted = native.listenAgain(fd, 16);
  for (const a of accepted) native.close(a);
  return accepted.length === 1;
}

interface HeldSocket {
  path: string;
  kind: 'seqpacket' | 'dgram';
  listen?: boolean;
  backlog?: number;
  /** A datagram socket connected to this path after its bind. */
  connectTo?: string;
}

const HOLDER = `
import json, socket, sys
kinds = {'seqpacket': socket.SOCK_SEQPACKET, 'dgram': socket.SOCK_DGRAM}
held = []
for spec in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, kinds[spec['kind']])
    s.bind(spec['path'])
    if spec.get('listen'): s.listen(spec.get('backlog', 16))
    if spec.get('connectTo'): s.connect(spec['connectTo'])
    held.append(s)
print('ready', flush=True)
sys.stdin.read()
`;

/**
 * Another process (python3) that binds the sockets of `specs` and keeps them
 * until stop(), after which their files are stale. `prefix`: a command to
 * run it under (`unshare -n`: in a network namespace of its own).
 */
async function holdSockets(specs: readonly HeldSocket[], prefix: readonly string[] = []): Promise<{ stop(): Promise<void> }> {
  const argv = [...prefix, 'python3', '-c', HOLDER, JSON.stringify(specs)];
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async (): Promise<void> => {
    child.stdin.end();
    await exitOf(child);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`${argv[0]} exited (${code}) before its sockets were bound: ${stderr}`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { stop };
}

/** Calls `onConnect(fd or error)` after each native.connect (the probe's), until the returned function puts the real one back. */
function afterConnect(onConnect: (result: number | unknown) => void): () => void {
  const real = native.connect;
  native.connect = (...args: Parameters<typeof native.connect>): number => {
    let fd: number;
    try {
      fd = real(...args);
    } catch (err) {
      onConnect(err);
      throw err;
    }
    onConnect(fd);
    return fd;
  };
  return () => {
    native.connect = real;
  };
}

/** Calls `then()` after each native.unixFileBound (bindReplacingStale's question of who is bound), until the returned function puts the real one back. */
function afterBoundQuestion(then: () => void): () => void {
  const real = native.unixFileBound;
  native.unixFileBound = (...args: Parameters<typeof native.unixFileBound>): boolean => {
    const bound = real(...args);
    then();
    return bound;
  };
  return () => {
    native.unixFileBound = real;
  };
}

describe('checkSocketDirectory: nobody but us and root can replace what is in the directory', () => {
  test('every mode: the directory itself is refused exactly when group or others can write it', () =>
    withScope((s) => {
      const dir = join(s.dir(), 'd');
      mkdirSync(dir);
      for (let mode = 0; mode <= 0o7777; mode++) {
        chmodSync(dir, mode);
        const expected = (mode & 0o022) === 0 ? 'ok' : unsafe(`${dir} has mode ${mode.toString(8)}: others can write there and replace the socket; use a directory only you can write`);
        if (outcome(() => checkSocketDirectory(dir)) !== expected) expect([mode.toString(8), outcome(() => checkSocketDirectory(dir))]).toEqual([mode.toString(8), expected]);
      }
    }));

  test('every mode: a directory above it is refused exactly when group or others can write it and it is not sticky', () =>
    withScope((s) => {
      const above = join(s.dir(), 'above');
      const dir = join(above, 'd');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      for (let mode = 0; mode <= 0o7777; mode++) {
        chmodSync(above, mode);
        const expected =
          (mode & 0o022) !== 0 && (mode & 0o1000) === 0
            ? unsafe(`${above} has mode ${mode.toString(8)}: others can write there (and it is not sticky), so they can replace what is below it`)
            : 'ok';
        if (outcome(() => checkSocketDirectory(dir)) !== expected) expect([mode.toString(8), outcome(() => checkSocketDirectory(dir))]).toEqual([mode.toString(8), expected]);
      }
    }));

  test('a directory that does not exist is nothing to take over; a path through a file is an error, not a missing directory', () =>
    withScope((s) => {
      const base = s.dir();
      expect(outcome(() => checkSocketDirectory(join(base, 'missing')))).toBe('ok');
      expect(outcome(() => checkSocketDirectory(join(base, 'missing', 'deeper')))).toBe('ok');
      const file = join(base, 'file');
      writeFileSync(file, '');
      expect(outcome(() => checkSocketDirectory(file))).toBe(unsafe(`${file} is not a directory`));
      expect(thrown(() => checkSocketDirectory(join(file, 'sub')))).toMatchObject({ code: 'ENOTDIR', syscall: 'lstat' });
    }));

  describeRoot('another user (nobody) on the way', () => {
    test("a directory of theirs, or one under a directory of theirs, is refused naming their uid; root's and ours are not", () =>
      withScope((s) => {
        const base = s.dir();
        const theirs = join(base, 'theirs');
        mkdirSync(join(theirs, 'd'), { recursive: true, mode: 0o700 });
        chownSync(theirs, NOBODY, NOBODY);
        const refusal = unsafe(`${theirs} belongs to uid ${NOBODY}, neither us (0) nor root: refusing a socket under it`);
        expect(outcome(() => checkSocketDirectory(theirs))).toBe(refusal);
        expect(outcome(() => checkSocketDirectory(join(theirs, 'd')))).toBe(refusal);
        chownSync(theirs, 0, 0);
        expect(outcome(() => checkSocketDirectory(join(theirs, 'd')))).toBe('ok');
      }));

    test('a symlink of theirs on the way is refused, as the directory and above it; a symlink of ours is followed and checked', () =>
      withScope((s) => {
        const base = s.dir();
        const real = join(base, 'real');
        mkdirSync(join(real, 'd'), { recursive: true, mode: 0o700 });
        const link = join(base, 'link');
        symlinkSync(real, link);
        // Ours (root's): the path through it is the directory it names, which is safe.
        expect(outcome(() => checkSocketDirectory(link))).toBe('ok');
        expect(outcome(() => checkSocketDirectory(join(link, 'd')))).toBe('ok');
        // Theirs: they can point it elsewhere between our bind() and a client's connect().
        lchownSync(link, NOBODY, NOBODY);
        const refusal = unsafe(`${link} is a symlink of uid ${NOBODY}; refusing a socket path through it`);
        expect(outcome(() => checkSocketDirectory(link))).toBe(refusal);
        expect(outcome(() => checkSocketDirectory(join(link, 'd')))).toBe(refusal);
        // Ours again, to a directory others can write: what it names is checked.
        lchownSync(link, 0, 0);
        chmodSync(join(real, 'd'), 0o777);
        expect(outcome(() => checkSocketDirectory(join(link, 'd')))).toMatch(/^ERR_FDBRIDGE_UNSAFE_PATH: .*\/real\/d has mode 777: others can write there/);
      }));
  });
});

describe('ensurePrivateDir: a directory of ours that nobody else can enter', () => {
  test('a missing one is made 0700 whatever the umask', () =>
    withScope((s) => {
      const dir = join(s.dir(), 'private');
      const umask = process.umask(0);
      try {
        ensurePrivateDir(dir);
      } finally {
        process.umask(umask);
      }
      expect(lstatSync(dir).mode & 0o7777).toBe(0o700);
      // Its parent missing: mkdir's error.
      expect(thrown(() => ensurePrivateDir(join(dir, 'no', 'such')))).toMatchObject({ code: 'ENOENT', syscall: 'mkdir' });
    }));

  test('every mode of an existing one: refused exactly when group or others have any access', () =>
    withScope((s) => {
      const dir = join(s.dir(), 'private');
      mkdirSync(dir);
      for (let mode = 0; mode <= 0o7777; mode++) {
        chmodSync(dir, mode);
        const expected = (mode & 0o077) === 0 ? 'ok' : unsafe(`${dir} has mode ${(mode & 0o777).toString(8)}; a socket's directory must be private (0700)`);
        if (outcome(() => ensurePrivateDir(dir)) !== expected) expect([mode.toString(8), outcome(() => ensurePrivateDir(dir))]).toEqual([mode.toString(8), expected]);
      }
    }));

  test('a symlink to a private directory, or a file, at the name is refused and left as it is', () =>
    withScope((s) => {
      const base = s.dir();
      const real = join(base, 'real');
      mkdirSync(real, { mode: 0o700 });
      const link = join(base, 'link');
      symlinkSync(real, link);
      expect(outcome(() => ensurePrivateDir(link))).toBe(unsafe(`${link} exists and is not a directory (a symlink?); refusing to use it`));
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      const file = join(base, 'file');
      writeFileSync(file, 'kept');
      expect(outcome(() => ensurePrivateDir(file))).toBe(unsafe(`${file} exists and is not a directory (a symlink?); refusing to use it`));
      expect(readFileSync(file, 'utf8')).toBe('kept');
    }));

  describeRoot('as root', () => {
    test("a private directory of another user's (nobody) is refused naming their uid", () =>
      withScope((s) => {
        const dir = join(s.dir(), 'theirs');
        mkdirSync(dir, { mode: 0o700 });
        chownSync(dir, NOBODY, NOBODY);
        expect(outcome(() => ensurePrivateDir(dir))).toBe(unsafe(`${dir} belongs to uid ${NOBODY}, not 0; refusing to use it`));
      }));
  });
});

describeRoot('as another user (nobody): the rules hold for whoever runs them', () => {
  test("their own directories are theirs, root's are trusted, a third user's are not; what they may not make is their error", () =>
    withScope(async (s) => {
      const base = s.dir();
      chmodSync(base, 0o755);
      const own = join(base, 'own');
      mkdirSync(join(own, 'private'), { recursive: true, mode: 0o700 });
      chownSync(own, NOBODY, NOBODY);
      chownSync(join(own, 'private'), NOBODY, NOBODY);
      const rootDir = join(base, 'root');
      mkdirSync(rootDir, { mode: 0o755 });
      const third = join(base, 'third');
      mkdirSync(third, { mode: 0o755 });
      chownSync(third, 4321, 4321);
      const cases = {
        ownCheck: ['checkSocketDirectory', join(own, 'private')],
        ownPrivate: ['ensurePrivateDir', join(own, 'private')],
        ownNew: ['ensurePrivateDir', join(own, 'new')],
        rootCheck: ['checkSocketDirectory', rootDir],
        rootPrivate: ['ensurePrivateDir', join(rootDir, 'new')],
        thirdCheck: ['checkSocketDirectory', third],
      };
      const script = `
        const f = require(${JSON.stringify(join(DIST_SRC, 'socket-file.js'))});
        const cases = ${JSON.stringify(cases)};
        const out = {};
        for (const [name, [fn, dir]] of Object.entries(cases)) {
          try { f[fn](dir); out[name] = 'ok'; } catch (e) { out[name] = e.code + ': ' + e.message; }
        }
        console.log(JSON.stringify({ out }));`;
      const p = runAsNobody(script);
      s.child(p.child);
      const { out } = await p.line<{ out: Record<keyof typeof cases, string> }>('out');
      await p.exited();
      expect(out).toEqual({
        ownCheck: 'ok',
        ownPrivate: 'ok',
        ownNew: 'ok',
        rootCheck: 'ok',
        rootPrivate: expect.stringMatching(/^EACCES: /),
        thirdCheck: unsafe(`${third} belongs to uid 4321, neither us (${NOBODY}) nor root: refusing a socket under it`),
      });
      expect(lstatSync(join(own, 'new')).mode & 0o777).toBe(0o700);
    }));

  test("a socket file they cannot connect to (root's, 0600) is their error (EACCES), never taken for stale", () =>
    withScope(async (s) => {
      const base = s.dir();
      chmodSync(base, 0o755);
      const dir = join(base, 'theirs');
      mkdirSync(dir, { mode: 0o700 });
      const path = join(dir, 'h.sock');
      const ino = staleSocket(path);
      chownSync(dir, NOBODY, NOBODY);
      const script = `
        const { bindReplacingStale } = require(${JSON.stringify(join(DIST_SRC, 'socket-file.js'))});
        const { rawListen } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
        const { closeFd } = require(${JSON.stringify(join(DIST_SRC, 'fd.js'))});
        let result;
        try { closeFd(bindReplacingStale(${JSON.stringify(path)}, ${constants.SOCK_SEQPACKET}, () => rawListen('seqpacket', ${JSON.stringify(path)}), () => new Error('in use'))); result = 'bound'; }
        catch (e) { result = e.code + ' ' + e.syscall; }
        console.log(JSON.stringify({ result }));`;
      const p = runAsNobody(script);
      s.child(p.child);
      expect((await p.line<{ result: string }>('result')).result).toBe('EACCES connect');
      await p.exited();
      expect(lstatSync(path).ino).toBe(ino);
    }));
});

describe('bindReplacingStale: a dead process\'s socket file is replaced, nobody else\'s name is taken', () => {
  const IN_USE = new FdBridgeError('ERR_FDBRIDGE_ADDRESS_IN_USE', 'in use (the test)');

  test('a free name is bound at once; a stale socket file is replaced, by an absolute or a relative path, while other sockets are bound elsewhere', () =>
    withScope((s) => {
      const dir = s.dir();
      listener(s, join(dir, 'other.sock'));
      const fresh = join(dir, 'fresh.sock');
      expect(reaches(fresh, bindSeqpacket(s, fresh, IN_USE))).toBe(true);
      for (const path of [join(dir, 'stale.sock'), relative(process.cwd(), join(dir, 'stale-relative.sock'))]) {
        staleSocket(path);
        expect(reaches(path, bindSeqpacket(s, path, IN_USE))).toBe(true);
      }
    }));

  test("a live listener's name is never taken, and the probe's connection is of fdbridge's own numbers (above the floor), closed at once", () =>
    withScope((s) => {
      const path = join(s.dir(), 'live.sock');
      const live = listener(s, path);
      const ino = lstatSync(path).ino;
      const probes: unknown[] = [];
      const restore = afterConnect((r) => probes.push(r));
      try {
        expect(thrown(() => bindSeqpacket(s, path, IN_USE))).toBe(IN_USE);
      } finally {
        restore();
      }
      expect(probes).toHaveLength(1);
      expect(probes[0]).toBeGreaterThanOrEqual(native.fdFloor());
      expect(lstatSync(path).ino).toBe(ino);
      // The probe's own connection was accepted (and is closed): the live one is still reached by the name.
      for (const a of native.listenAgain(live, 16)) native.close(a);
      expect(reaches(path, live)).toBe(true);
    }));

  test('a full backlog (EAGAIN) is someone alive', () =>
    withScope((s) => {
      const path = join(s.dir(), 'busy.sock');
      listener(s, path, 0);
      const queued: number[] = [];
      s.defer(() => queued.forEach((fd) => native.close(fd)));
      for (;;) {
        try {
          queued.push(native.connect(constants.SOCK_SEQPACKET, path, false));
        } catch (err) {
          expect(err).toMatchObject({ code: 'EAGAIN' });
          break;
        }
        if (queued.length > 64) throw new Error('a backlog of 0 took more than 64 connections');
      }
      expect(thrown(() => bindSeqpacket(s, path, IN_USE))).toBe(IN_USE);
    }));

  test('sockets of another process that are not listening: bound only, of another kind (EPROTOTYPE), or a datagram socket connected elsewhere (EPERM), at names with any characters, by an absolute or a relative path; stale once it has exited', () =>
    withScope(async (s) => {
      const dir = s.dir();
      const names = ['plain.sock', 'one space.sock', 'two  spaces.sock', 'tab\there.sock', 'new\nline.sock', ' leading.sock', 'trailing.sock '];
      const specs: HeldSocket[] = [{ path: join(dir, 'peer.sock'), kind: 'dgram' }];
      for (const name of names) specs.push({ path: join(dir, name), kind: 'seqpacket' });
      specs.push({ path: relative(process.cwd(), join(dir, 'bound relative.sock')), kind: 'seqpacket' });
      specs.push({ path: join(dir, 'dgram.sock'), kind: 'dgram' });
      specs.push({ path: join(dir, 'connected.sock'), kind: 'dgram', connectTo: join(dir, 'peer.sock') });
      const holder = await holdSockets(specs);
      const probes: Array<{ path: string; type: number }> = [
        ...names.map((name) => ({ path: join(dir, name), type: constants.SOCK_SEQPACKET })),
        // Bound by a relative path, probed by the same one (from the same working directory); bound by an absolute path, probed by a relative one.
        { path: relative(process.cwd(), join(dir, 'bound relative.sock')), type: constants.SOCK_SEQPACKET },
        { path: relative(process.cwd(), join(dir, 'plain.sock')), type: constants.SOCK_SEQPACKET },
        { path: join(dir, 'dgram.sock'), type: constants.SOCK_SEQPACKET },
        { path: join(dir, 'connected.sock'), type: constants.SOCK_DGRAM },
      ];
      const before = probes.map(({ path }) => lstatSync(path).ino);
      try {
        const results = probes.map(({ path, type }) => [path, tryBind(path, type, IN_USE)]);
        expect(results).toEqual(probes.map(({ path }) => [path, IN_USE]));
        expect(probes.map(({ path }) => lstatSync(path).ino)).toEqual(before);
      } finally {
        await holder.stop();
      }
      const results = probes.map(({ path, type }) => {
        const result = [path, tryBind(path, type, IN_USE)];
        unlinkSync(path);
        return result;
      });
      expect(results).toEqual(probes.map(({ path }) => [path, 'bound']));
    }));

  test('a live listener in another network namespace (not in this one\'s /proc/net/unix nor its sock_diag dump) is never taken', () =>
    withScope(async (s) => {
      if (spawnSync('unshare', ['-n', 'true']).status !== 0) {
        // eslint-disable-next-line no-console
        console.log('socket-file.test: unshare -n is not allowed here, so the other-namespace case is skipped');
        return;
      }
      const path = join(s.dir(), 'elsewhere.sock');
      const holder = await holdSockets([{ path, kind: 'seqpacket', listen: true }], ['unshare', '-n']);
      try {
        const ino = lstatSync(path).ino;
        // Neither /proc/net/unix nor sock_diag shows another namespace's sockets: only the probe's connect finds this one (listening).
        expect(readFileSync('/proc/net/unix', 'utf8')).not.toContain(path);
        expect(native.unixFileBound([lstatSync(path).dev], ino % 2 ** 32)).toBe(false);
        expect(thrown(() => bindSeqpacket(s, path, IN_USE))).toBe(IN_USE);
        expect(lstatSync(path).ino).toBe(ino);
      } finally {
        await holder.stop();
      }
    }));

  test('a stale file is replaced even while an abstract socket of the same name listens', () =>
    withScope((s) => {
      const path = join(s.dir(), 'twin.sock');
      const abstract = native.listen(constants.SOCK_SEQPACKET, path, true, -1, 16);
      s.defer(() => native.close(abstract));
      staleSocket(path);
      expect(reaches(path, bindSeqpacket(s, path, IN_USE))).toBe(true);
    }));

  test("without sock_diag and without /proc/net/unix to read (a sandbox that has neither), a stale file is still replaced: the probe's ECONNREFUSED decides alone", () =>
    withScope((s) => {
      const path = join(s.dir(), 'no-proc.sock');
      staleSocket(path);
      const realBound = native.unixFileBound;
      native.unixFileBound = () => {
        throw new SystemError(93, 'sock_diag'); // EPROTONOSUPPORT: no NETLINK_SOCK_DIAG
      };
      s.defer(() => {
        native.unixFileBound = realBound;
      });
      // The module's own fs (not a copy of its exports), so that socket-file's calls see the replacement.
      const fs = require('node:fs') as typeof import('node:fs');
      const real = fs.readFileSync;
      const read = jest.spyOn(fs, 'readFileSync').mockImplementation(((file: unknown, ...rest: unknown[]) => {
        if (file === '/proc/net/unix') throw Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: 'ENOENT' });
        return (real as (...a: unknown[]) => unknown)(file, ...rest);
      }) as typeof fs.readFileSync);
      try {
        expect(reaches(path, bindSeqpacket(s, path, IN_USE))).toBe(true);
        expect(read).toHaveBeenCalledWith('/proc/net/unix', 'utf8');
      } finally {
        read.mockRestore();
      }
    }));

  test('what is not a socket is never removed: a file, a symlink (to a stale socket), named in the error', () =>
    withScope((s) => {
      const dir = s.dir();
      const file = join(dir, 'file.sock');
      writeFileSync(file, 'kept');
      expect(outcome(() => bindSeqpacket(s, file, IN_USE))).toBe(unsafe(`${file} exists and is not a socket (a file); refusing to remove it`));
      expect(readFileSync(file, 'utf8')).toBe('kept');
      const target = join(dir, 'target.sock');
      const ino = staleSocket(target);
      const link = join(dir, 'link.sock');
      symlinkSync(target, link);
      expect(outcome(() => bindSeqpacket(s, link, IN_USE))).toBe(unsafe(`${link} exists and is not a socket (a symlink); refusing to remove it`));
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(lstatSync(target).ino).toBe(ino);
    }));

  test("a failure of bind other than EADDRINUSE is the caller's, and nothing is removed", () =>
    withScope((s) => {
      const path = join(s.dir(), 'stale.sock');
      const ino = staleSocket(path);
      for (const err of [new SystemError(13, 'bind'), new TypeError('a bad argument')]) {
        expect(thrown(() => bindReplacingStale(path, constants.SOCK_SEQPACKET, () => { throw err; }, () => IN_USE))).toBe(err);
        expect(lstatSync(path).ino).toBe(ino);
      }
    }));

  test('a name swapped after the probe or after the question of who is bound (a file, a live socket a process that raced us bound elsewhere and renamed there, another stale socket) is not unlinked', () =>
    withScope((s) => {
      const dir = s.dir();
      let n = 0;
      for (const when of ['probe', 'question'] as const) {
        for (const swapIn of ['file', 'live socket', 'stale socket'] as const) {
          n += 1;
          const path = join(dir, `${n}.sock`);
          staleSocket(path);
          // Bound under another name and renamed into place: the kernel finds it by its file, once renamed.
          const racer = swapIn === 'live socket' ? listener(s, join(dir, `racer${n}.sock`)) : -1;
          const other = join(dir, `other${n}.sock`);
          const otherIno = swapIn === 'stale socket' ? staleSocket(other) : -1;
          const swap = (): void => {
            // Moved away, not unlinked: what is swapped in cannot take its inode number.
            renameSync(path, `${path}.old`);
            if (swapIn === 'file') writeFileSync(path, 'kept');
            else renameSync(swapIn === 'live socket' ? join(dir, `racer${n}.sock`) : other, path);
          };
          const restore = when === 'probe' ? afterConnect(swap) : afterBoundQuestion(swap);
          let result: unknown;
          try {
            result = thrown(() => bindSeqpacket(s, path, IN_USE));
          } finally {
            restore();
          }
          // Swapped in before the question, a live socket is found bound; anything else is left to bind, which fails.
          if (when === 'probe' && swapIn === 'live socket') expect([when, swapIn, result]).toEqual([when, swapIn, IN_USE]);
          else expect([when, swapIn, result]).toEqual([when, swapIn, expect.objectContaining({ code: 'EADDRINUSE', syscall: 'bind' })]);
          if (swapIn === 'file') expect(readFileSync(path, 'utf8')).toBe('kept');
          else if (swapIn === 'live socket') expect(reaches(path, racer)).toBe(true);
          else expect(lstatSync(path).ino).toBe(otherIno);
        }
      }
    }));
});

describe('unlinkOwnSocketFile: only the very socket file that was made', () => {
  test('it is removed; with no identity, or once the name is another file or socket, nothing is', () =>
    withScope((s) => {
      const dir = s.dir();
      const path = join(dir, 'own.sock');
      staleSocket(path);
      const identity = socketFileIdentity(path);
      expect(identity).toEqual({ dev: lstatSync(path).dev, ino: lstatSync(path).ino });
      unlinkOwnSocketFile(path, undefined);
      expect(lstatSync(path).isSocket()).toBe(true);
      unlinkOwnSocketFile(path, identity);
      expect(() => lstatSync(path)).toThrow(/ENOENT/);
      unlinkOwnSocketFile(path, identity); // already gone: nothing to do, no error

      // Someone else's at the name since (ours moved away, so that theirs has another inode number): a socket, a file.
      staleSocket(path);
      const ours = socketFileIdentity(path);
      renameSync(path, join(dir, 'moved.sock'));
      staleSocket(path);
      unlinkOwnSocketFile(path, ours);
      expect(lstatSync(path).isSocket()).toBe(true);
      renameSync(path, join(dir, 'moved-too.sock'));
      writeFileSync(path, 'kept');
      unlinkOwnSocketFile(path, ours);
      unlinkOwnSocketFile(path, socketFileIdentity(path));
      expect(readFileSync(path, 'utf8')).toBe('kept');
      // The same inode number on another filesystem (a runtime directory's tmpfs mounted anew) is not ours either.
      unlinkSync(path);
      staleSocket(path);
      const st = lstatSync(path);
      unlinkOwnSocketFile(path, { dev: st.dev + 1, ino: st.ino });
      expect(lstatSync(path).isSocket()).toBe(true);
    }));
});

describe("a native socket's boundFile: the file its environment's teardown removes", () => {
  test('noted only for a socket file at an absolute path while the socket is open; anything else is a TypeError', () =>
    withScope((s) => {
      const dir = s.dir();
      const path = join(dir, 'noted.sock');
      const socket = new native.Socket(native.listen(constants.SOCK_DGRAM, path, false, 0o600, 0), constants.SOCK_DGRAM);
      s.defer(() => socket.close());
      writeFileSync(join(dir, 'file'), '');
      expect([socket.boundFile(join(dir, 'missing.sock')), socket.boundFile(join(dir, 'file')), socket.boundFile(path)]).toEqual([false, false, true]);
      for (const bad of [relative(process.cwd(), path), '', `${path}\0x`, 7]) {
        expect(thrown(() => (socket.boundFile as (p: unknown) => boolean)(bad))).toMatchObject({ name: 'TypeError' });
      }
      socket.close();
      expect(socket.boundFile(path)).toBe(false);
      // Closed by close(), not by a teardown: the file is close()'s caller's to remove (UnixServer, DatagramSocket do).
      expect(lstatSync(path).isSocket()).toBe(true);
    }));
});
