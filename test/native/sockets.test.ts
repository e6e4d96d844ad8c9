/**
 * Listening and connecting: filesystem paths (mode, EADDRINUSE, cleanup),
 * abstract names, the sun_path limit, peer credentials.
 */
import { lstatSync, readFileSync, readlinkSync, existsSync, statSync, symlinkSync, writeFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

import { SystemError } from '../../src/errors';
import { fdFlags, openFdTable, sameFile } from '../../src/fd';
import { constants, native } from './binding';
import { UnixServer, UnixSocket, type SocketKind } from '../../src/socket';
import { abstractName, expectFdTable, expectRangeError, expectSystemError, rejection, thrown, withScope } from './helpers';

/** A path of exactly `bytes` bytes inside `dir`. */
function pathOfLength(dir: string, bytes: number): string {
  const prefix = `${dir}/`;
  const path = prefix + 's'.repeat(bytes - Buffer.byteLength(prefix));
  expect(Buffer.byteLength(path)).toBe(bytes);
  return path;
}

describe.each<SocketKind>(['stream', 'seqpacket'])('%s on a filesystem path', (kind) => {
  test('listen with mode 0o600, connect, accept, pass an fd', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const server = s.add(UnixServer.listen(path, { kind, mode: 0o600 }));
      const st = statSync(path);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o600);
      expect(fdFlags(server.fd)).toEqual({ cloexec: true, nonblock: true });

      const client = s.add(await UnixSocket.connect(path, { kind }));
      const peer = s.add(await server.accept());
      expect(client.kind).toBe(kind);
      expect(peer.kind).toBe(kind);
      expect(fdFlags(client.fd)).toEqual({ cloexec: true, nonblock: true });
      expect(fdFlags(peer.fd)).toEqual({ cloexec: true, nonblock: true });

      const { fd } = s.file();
      await client.send(Buffer.from('over a path'), [fd.fd]);
      const m = await peer.receive();
      const [got] = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('over a path');
      expect(sameFile(got!.fd, fd.fd)).toBe(true);
    }));
});

describe('modes', () => {
  test.each([0o600, 0o660, 0o777])('mode %o is what stat shows', (mode) =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      s.add(UnixServer.listen(path, { mode }));
      expect(statSync(path).mode & 0o7777).toBe(mode);
    }));

  test('an invalid mode is a RangeError before anything is created', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const before = openFdTable();
      expectRangeError(thrown(() => UnixServer.listen(path, { mode: 0o10000 })), /mode/);
      expect(existsSync(path)).toBe(false);
      expectFdTable(before);
    }));
});

describe('peer identity', () => {
  test('peerCredentials() on both ends: this process', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const server = s.add(UnixServer.listen(path));
      const client = s.add(await UnixSocket.connect(path));
      const peer = s.add(await server.accept());
      const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
      expect(client.peerCredentials()).toEqual(me);
      expect(peer.peerCredentials()).toEqual(me);
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x));
      expect(a!.peerCredentials()).toEqual(me);
      expect(b!.peerCredentials()).toEqual(me);
    }));

  test('peerPidfd() returns an owned, close-on-exec pidfd for the peer process', () =>
    withScope(async (s) => {
      const name = abstractName('pidfd');
      const server = s.add(UnixServer.listen({ abstract: name }));
      const client = s.add(await UnixSocket.connect({ abstract: name }));
      const peer = s.add(await server.accept());
      for (const sock of [client, peer]) {
        const pidfd = s.add(sock.peerPidfd());
        expect(fdFlags(pidfd.fd).cloexec).toBe(true);
        expect(openFdTable().get(pidfd.fd)).toBe('anon_inode:[pidfd]');
        expect(readFileSync(`/proc/self/fdinfo/${pidfd.fd}`, 'utf8')).toMatch(new RegExp(`^Pid:\\s+${process.pid}$`, 'm'));
        pidfd.close();
      }
    }));

  test('on a closed socket: a typed EBADF, not a crash', () =>
    withScope(async (s) => {
      const [a] = UnixSocket.pair('stream').map((x) => s.add(x));
      a!.close();
      expectSystemError(thrown(() => a!.peerCredentials()), 'EBADF');
      expectSystemError(thrown(() => a!.peerPidfd()), 'EBADF');
    }));
});

describe('abstract names', () => {
  test('listen, connect, accept; no file anywhere; a second listen gives EADDRINUSE', () =>
    withScope(async (s) => {
      const name = abstractName('abstract');
      const server = s.add(UnixServer.listen({ abstract: name }));
      expect(existsSync(name)).toBe(false);
      expectSystemError(thrown(() => UnixServer.listen({ abstract: name })), 'EADDRINUSE', 'bind');
      const client = s.add(await UnixSocket.connect({ abstract: name }));
      const peer = s.add(await server.accept());
      await peer.send(Buffer.from('abstract'));
      expect((await client.receive()).data.toString()).toBe('abstract');
      // Once closed, the name is free again (there is no file to remove).
      server.close();
      s.add(UnixServer.listen({ abstract: name })).close();
    }));

  test('the name is exactly the bytes given: a prefix does not connect', () =>
    withScope(async (s) => {
      const name = abstractName('exact');
      s.add(UnixServer.listen({ abstract: name }));
      expectSystemError(await rejection(UnixSocket.connect({ abstract: name.slice(0, -1) })), 'ECONNREFUSED', 'connect');
    }));
});

describe('address errors', () => {
  test('a path that exists (a regular file) gives EADDRINUSE and is left untouched', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'taken');
      writeFileSync(path, 'precious');
      const before = openFdTable();
      expectSystemError(thrown(() => UnixServer.listen(path, { mode: 0o600 })), 'EADDRINUSE', 'bind');
      expect(readFileSync(path, 'utf8')).toBe('precious');
      expect(statSync(path).isFile()).toBe(true);
      expectFdTable(before);
    }));

  test('a symlink at the path gives EADDRINUSE; neither the link nor its target is touched', () =>
    withScope(async (s) => {
      const dir = s.dir();
      const target = join(dir, 'target');
      writeFileSync(target, 'precious');
      const targetMode = statSync(target).mode;
      const link = join(dir, 'link');
      symlinkSync(target, link);
      expectSystemError(thrown(() => UnixServer.listen(link, { mode: 0o600 })), 'EADDRINUSE', 'bind');
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link)).toBe(target);
      expect(readFileSync(target, 'utf8')).toBe('precious');
      expect(statSync(target).mode).toBe(targetMode);

      // A dangling symlink: bind must not create the file it points to.
      const missing = join(dir, 'missing');
      const dangling = join(dir, 'dangling');
      symlinkSync(missing, dangling);
      expectSystemError(thrown(() => UnixServer.listen(dangling)), 'EADDRINUSE', 'bind');
      expect(existsSync(missing)).toBe(false);
      expect(lstatSync(dangling).isSymbolicLink()).toBe(true);
    }));

  test('a socket file left by a closed listener: connect ECONNREFUSED, listen EADDRINUSE', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'stale');
      // Raw listen + close: nothing removes the file (as after a crash).
      native.close(native.listen(constants.SOCK_SEQPACKET, path, false, -1, 8));
      expect(statSync(path).isSocket()).toBe(true);
      expectSystemError(await rejection(UnixSocket.connect(path)), 'ECONNREFUSED', 'connect');
      expectSystemError(thrown(() => UnixServer.listen(path)), 'EADDRINUSE', 'bind');
      unlinkSync(path);
      s.add(UnixServer.listen(path)).close();
      expect(existsSync(path)).toBe(false);
    }));

  test('sun_path holds 107 bytes: a 107-byte path works, 108 is a RangeError naming the limit', () =>
    withScope(async (s) => {
      const dir = s.dir();
      expect(constants.MAX_SOCKET_PATH_BYTES).toBe(107);
      const ok = pathOfLength(dir, 107);
      const server = s.add(UnixServer.listen(ok));
      const client = s.add(await UnixSocket.connect(ok));
      s.add(await server.accept());
      expect(client.peerCredentials().pid).toBe(process.pid);

      const long = pathOfLength(dir, 108);
      const before = openFdTable();
      const err = thrown(() => UnixServer.listen(long));
      expectRangeError(err, /108 bytes/);
      expect((err as Error).message).toMatch(/at most 107/);
      expectRangeError(await rejection(UnixSocket.connect(long)), /at most 107/);
      expect(existsSync(long)).toBe(false);
      expectFdTable(before);
      // The same limit for abstract names (sun_path minus the leading NUL).
      expectRangeError(thrown(() => UnixServer.listen({ abstract: 'a'.repeat(108) })), /at most 107/);
      s.add(UnixServer.listen({ abstract: `${abstractName('len')}`.padEnd(107, 'x') })).close();
    }));

  test('connect to a missing path: ENOENT', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'nobody-here');
      const before = openFdTable();
      const err = await rejection(UnixSocket.connect(path));
      expectSystemError(err, 'ENOENT', 'connect');
      expect((err as SystemError).errno).toBe(-2);
      expectFdTable(before);
    }));

  test('connect with the wrong socket type: a typed error, no fd left', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      s.add(UnixServer.listen(path, { kind: 'seqpacket' }));
      const before = openFdTable();
      const err = await rejection(UnixSocket.connect(path, { kind: 'stream' }));
      expect(err).toBeInstanceOf(SystemError);
      expect(['EPROTOTYPE', 'ECONNREFUSED']).toContain((err as SystemError).code);
      expectFdTable(before);
    }));

  test('bad options on connect are a RangeError and leave no fd behind', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const server = s.add(UnixServer.listen(path));
      const before = openFdTable();
      expectRangeError(await rejection(UnixSocket.connect(path, { maxFds: 254 })), /maxFds/);
      expectRangeError(await rejection(UnixSocket.connect(path, { bufferSize: 0 })), /bufferSize/);
      expectFdTable(before);
      // The server saw (at most) connections that were closed at once; it still works.
      const good = s.add(await UnixSocket.connect(path));
      await good.send(Buffer.from('fine'));
      for (;;) {
        const peer = s.add(await server.accept());
        const m = await peer.receive().catch(() => undefined);
        if (m) {
          expect(m.data.toString()).toBe('fine');
          break;
        }
      }
    }));
});

describe('ownership when a socket cannot be constructed', () => {
  test('new UnixSocket on a regular file (uv_poll_init refuses it): the fd is still the caller\'s', () =>
    withScope(async (s) => {
      const { path, fd } = s.file();
      const before = openFdTable();
      const err = thrown(() => new UnixSocket(fd.fd, 'stream'));
      expectSystemError(err, 'EPERM', 'uv_poll_init');
      expectFdTable(before);
      expect(openFdTable().get(fd.fd)).toBe(path);
    }));

  test('new UnixSocket without a kind on a non-socket: ENOTSOCK, the fd is still the caller\'s', () =>
    withScope(async (s) => {
      const { path, fd } = s.file();
      expectSystemError(thrown(() => new UnixSocket(fd.fd)), 'ENOTSOCK', 'getsockopt(SO_TYPE)');
      expect(openFdTable().get(fd.fd)).toBe(path);
    }));

  test('bad options: RangeError, the fd is still the caller\'s', () =>
    withScope(async (s) => {
      const [a, b] = native.socketpair(constants.SOCK_SEQPACKET).map((fd) => s.own(fd));
      expectRangeError(thrown(() => new UnixSocket(a!.fd, 'seqpacket', { maxFds: 300 })), /maxFds/);
      // Still open and usable: wrap it properly now.
      const sock = s.add(new UnixSocket(a!.release(), 'seqpacket'));
      native.sendNow(b!.fd, Buffer.from('ok'));
      expect((await sock.receive()).data.toString()).toBe('ok');
    }));
});

describe('UnixServer.close()', () => {
  test('removes its socket file; closing twice is harmless', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const server = UnixServer.listen(path);
      expect(existsSync(path)).toBe(true);
      server.close();
      expect(existsSync(path)).toBe(false);
      expect(server.closed).toBe(true);
      expect(server.fd).toBe(-1);
      server.close();
      // Nothing listens any more.
      expectSystemError(await rejection(UnixSocket.connect(path)), 'ENOENT', 'connect');
      expect(await rejection(server.accept())).toHaveProperty('code', 'ERR_FDBRIDGE_CLOSED');
    }));

  test('leaves alone a file that replaced its socket at the path', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'sock');
      const server = s.add(UnixServer.listen(path));
      unlinkSync(path);
      writeFileSync(path, 'someone else');
      server.close();
      expect(readFileSync(path, 'utf8')).toBe('someone else');
    }));

  test('rejects pending accepts with ClosedError', () =>
    withScope(async (s) => {
      const server = s.add(UnixServer.listen({ abstract: abstractName('close-accept') }));
      const pending = server.accept();
      server.close();
      expect(await rejection(pending)).toHaveProperty('code', 'ERR_FDBRIDGE_CLOSED');
    }));

  test('onConnection delivers each connection, owned by the handler', () =>
    withScope(async (s) => {
      const name = abstractName('on-connection');
      const server = s.add(UnixServer.listen({ abstract: name }));
      const got: UnixSocket[] = [];
      let done!: () => void;
      const both = new Promise<void>((r) => (done = r));
      server.onConnection((err, sock) => {
        expect(err).toBeNull();
        got.push(s.add(sock!));
        if (got.length === 2) done();
      });
      const c1 = s.add(await UnixSocket.connect({ abstract: name }));
      const c2 = s.add(await UnixSocket.connect({ abstract: name }));
      await both;
      await c1.send(Buffer.from('1'));
      await c2.send(Buffer.from('2'));
      const data = (await Promise.all(got.map((g) => g.receive()))).map((m) => m.data.toString()).sort();
      expect(data).toEqual(['1', '2']);
    }));
});
