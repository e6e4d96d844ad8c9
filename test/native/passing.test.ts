/**
 * CONFORMANCE "Passing": what crosses, how many, and what the receiver gets,
 * on raw socketpairs through the typed binding.
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { SystemError } from '../../src/errors';
import { fdFlags, fdIdentity, makeEventfd, makeMemfd, makePipe, openFdTable, sameFile, type OwnedFd } from '../../src/fd';
import { constants, native } from './binding';
import { UnixServer, UnixSocket, type SocketKind } from '../../src/socket';
import { abstractName, expectFdTable, expectRangeError, expectSystemError, readPipe, rejection, thrown, withScope } from './helpers';

const KINDS: SocketKind[] = ['stream', 'dgram', 'seqpacket'];

describe.each(KINDS)('%s socketpair', (kind) => {
  test('one fd arrives as a new fd number for the same open file, close-on-exec', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      await a.send(Buffer.from('one'), [fd.fd]);
      const m = await b.receive();
      const [got] = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('one');
      expect(m.fds).toHaveLength(1);
      expect(got!.fd).not.toBe(fd.fd);
      expect(sameFile(fd.fd, got!.fd)).toBe(true);
      expect(fdIdentity(got!.fd)).toEqual(fdIdentity(fd.fd));
      expect(fdFlags(got!.fd).cloexec).toBe(true);
    }));

  test('253 fds (SCM_MAX_FD) arrive in one message, in order', () =>
    withScope(async (s) => {
      expect(constants.MAX_FDS_PER_MESSAGE).toBe(253);
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      // Three distinct files in a repeating pattern, so order is checked too.
      const files = [s.file('f0').fd, s.file('f1').fd, s.file('f2').fd];
      const sent = Array.from({ length: 253 }, (_, i) => files[i % 3]!.fd);
      await a.send(Buffer.from('many'), sent);
      const m = await b.receive();
      const got = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('many');
      expect(got).toHaveLength(253);
      expect(new Set(m.fds).size).toBe(253);
      for (let i = 0; i < 253; i++) {
        expect(sameFile(got[i]!.fd, files[i % 3]!.fd)).toBe(true);
        expect(sameFile(got[i]!.fd, files[(i + 1) % 3]!.fd)).toBe(false);
      }
      for (const f of got) f.close();
    }));

  test('254 fds are refused (RangeError) before anything is queued', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      const fds = new Array<number>(254).fill(fd.fd);
      const before = openFdTable();
      const err = await rejection(a.send(Buffer.from('x'), fds));
      expectRangeError(err, /253/);
      expectRangeError(thrown(() => native.sendNow(a.fd, Buffer.from('x'), fds)), /253/);
      expect(a.queuedSends).toBe(0);
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
      expectFdTable(before);
    }));

  test('a closed fd in the list fails the whole send with EBADF, -1 with TypeError at once; nothing queued', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      const closedFd = openSync('/dev/null', 'r');
      closeSync(closedFd);
      expect(openFdTable().has(closedFd)).toBe(false);
      // The bad fd in the middle: the good ones around it must not go either.
      const err = await rejection(a.send(Buffer.from('x'), [fd.fd, closedFd, fd.fd]));
      expectSystemError(err, 'EBADF', 'sendmsg');
      expect((err as SystemError).errno).toBe(-9);
      // Not an fd at all: a bad argument, refused before any syscall.
      expect(() => a.send(Buffer.from('x'), [fd.fd, -1, fd.fd])).toThrow(new TypeError('fds[1] must be a non-negative integer, not -1'));
      expect(a.queuedSends).toBe(0);
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
      // The socket still works afterwards.
      await a.send(Buffer.from('ok'), [fd.fd]);
      const m = await b.receive();
      s.ownAll(m.fds);
      expect(m.data.toString()).toBe('ok');
      expect(m.fds).toHaveLength(1);
    }));

  test('received fds share the file offset with the original', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { path, fd } = s.file();
      await a.send(Buffer.from('f'), [fd.fd]);
      const [got] = s.ownAll((await b.receive()).fds);
      // No position given: each write goes at the current (shared) offset.
      writeSync(fd.fd, 'abc');
      writeSync(got!.fd, 'def');
      writeSync(fd.fd, 'ghi');
      expect(readFileSync(path, 'utf8')).toBe('abcdefghi');
    }));

  test('received fds share O_NONBLOCK with the original (one open file description)', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { read } = s.pipe();
      native.setNonblock(read.fd, false);
      await a.send(Buffer.from('p'), [read.fd]);
      const [got] = s.ownAll((await b.receive()).fds);
      expect(fdFlags(got!.fd).nonblock).toBe(false);
      native.setNonblock(read.fd, true);
      expect(fdFlags(got!.fd).nonblock).toBe(true);
      native.setNonblock(got!.fd, false);
      expect(fdFlags(read.fd).nonblock).toBe(false);
      // FD_CLOEXEC, by contrast, belongs to each fd number.
      native.setCloexec(read.fd, false);
      expect(fdFlags(got!.fd).cloexec).toBe(true);
    }));

  test('the sender may close its copy right after send; the received fd still works', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { path, fd } = s.file();
      writeSync(fd.fd, 'kept alive in flight');
      const pipe = s.pipe();
      await a.send(Buffer.from('c'), [fd.fd, pipe.write.fd]);
      fd.close();
      pipe.write.close();
      // The only write end is now in flight: the reader sees no EOF yet.
      expect(readPipe(pipe.read.fd)).toBe('empty');
      const [file, writeEnd] = s.ownAll((await b.receive()).fds);
      const buf = Buffer.alloc(64);
      const n = readSync(file!.fd, buf, 0, buf.length, 0);
      expect(buf.subarray(0, n).toString()).toBe('kept alive in flight');
      expect(fdIdentity(file!.fd).ino).toBe(BigInt(statSync(path).ino));
      writeSync(writeEnd!.fd, 'through the received end');
      expect(readPipe(pipe.read.fd)).toBe('through the received end');
      writeEnd!.close();
      expect(readPipe(pipe.read.fd)).toBe('eof');
    }));
});

describe('fd kinds that pass (over SEQPACKET)', () => {
  async function passOne(a: UnixSocket, b: UnixSocket, fd: number): Promise<number> {
    await a.send(Buffer.from('k'), [fd]);
    const m = await b.receive();
    expect(m.fds).toHaveLength(1);
    return m.fds[0]!;
  }

  test('regular file', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      const got = s.own(await passOne(a, b, fd.fd));
      expect(fdIdentity(got.fd).type).toBe('file');
      expect(sameFile(got.fd, fd.fd)).toBe(true);
    }));

  test('pipe', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { read, write } = s.pipe();
      const got = s.own(await passOne(a, b, write.fd));
      expect(fdIdentity(got.fd).type).toBe('pipe');
      writeSync(got.fd, 'via pipe');
      expect(readPipe(read.fd)).toBe('via pipe');
    }));

  test('connected socket: the received end talks to its partner', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const [x, y] = UnixSocket.pair('stream').map((z) => s.add(z)) as [UnixSocket, UnixSocket];
      const got = await passOne(a, b, y.fd);
      expect(fdIdentity(got).type).toBe('socket');
      const viaReceived = s.add(new UnixSocket(got)); // takes ownership; kind read with SO_TYPE
      expect(viaReceived.kind).toBe('stream');
      await viaReceived.send(Buffer.from('hello partner'));
      expect((await x.receive()).data.toString()).toBe('hello partner');
    }));

  test('listening socket: a connection is accepted through the received fd', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const name = abstractName('listen-pass');
      const server = s.add(UnixServer.listen({ abstract: name }));
      const got = await passOne(a, b, server.fd);
      expect(sameFile(got, server.fd)).toBe(true);
      const accepted = new Promise<number>((resolve, reject) => {
        const listener = s.add(
          new native.Socket(got, constants.SOCK_SEQPACKET, undefined, undefined, (err, fd) => {
            listener.stopAccepting();
            if (err) reject(err);
            else resolve(fd!);
          }),
        );
        listener.startAccepting();
      });
      const client = s.add(await UnixSocket.connect({ abstract: name }));
      const peer = s.add(new UnixSocket(await accepted, 'seqpacket'));
      await client.send(Buffer.from('accepted elsewhere'));
      expect((await peer.receive()).data.toString()).toBe('accepted elsewhere');
    }));

  test('anonymous pipe (pipe2): data written through the received end comes out of the read end', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const [r, w] = s.ownAll(makePipe()) as [OwnedFd, OwnedFd];
      native.setNonblock(r.fd, true);
      const got = s.own(await passOne(a, b, w.fd));
      expect(openFdTable().get(got.fd)).toMatch(/^pipe:\[\d+\]$/);
      expect(openFdTable().get(got.fd)).toBe(openFdTable().get(r.fd));
      writeSync(got.fd, 'anonymous');
      expect(readPipe(r.fd)).toBe('anonymous');
    }));

  test('memfd: the received fd reads what was written through the original', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const memfd = s.own(makeMemfd('fdbridge-test'));
      writeSync(memfd.fd, 'in memory');
      const got = s.own(await passOne(a, b, memfd.fd));
      expect(openFdTable().get(got.fd)).toMatch(/^\/memfd:fdbridge-test/);
      const buf = Buffer.alloc(32);
      const n = readSync(got.fd, buf, 0, buf.length, 0);
      expect(buf.subarray(0, n).toString()).toBe('in memory');
    }));

  test('eventfd: a counter added through the received fd is read through the original', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const efd = s.own(makeEventfd());
      const got = s.own(await passOne(a, b, efd.fd));
      expect(openFdTable().get(got.fd)).toBe('anon_inode:[eventfd]');
      const add = Buffer.alloc(8);
      add.writeBigUInt64LE(42n);
      writeSync(got.fd, add);
      const out = Buffer.alloc(8);
      expect(readSync(efd.fd, out, 0, 8, null)).toBe(8);
      expect(out.readBigUInt64LE()).toBe(42n);
    }));

  test('directory', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const dir = s.dir();
      mkdirSync(join(dir, 'inside'));
      const dirFd = s.own(openSync(dir, 'r'));
      const got = s.own(await passOne(a, b, dirFd.fd));
      expect(fdIdentity(got.fd).type).toBe('directory');
      expect(sameFile(got.fd, dirFd.fd)).toBe(true);
      expect(openFdTable().get(got.fd)).toBe(dir);
    }));

  test('anonymous inode: a pidfd', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pidfd = s.own(native.pidfdOpen(process.pid));
      const got = s.own(await passOne(a, b, pidfd.fd));
      expect(openFdTable().get(got.fd)).toBe('anon_inode:[pidfd]');
      expect(sameFile(got.fd, pidfd.fd)).toBe(true);
      // fdinfo of a pidfd names the process it refers to.
      expect(readFileSync(`/proc/self/fdinfo/${got.fd}`, 'utf8')).toMatch(new RegExp(`^Pid:\\s+${process.pid}$`, 'm'));
    }));

  test('O_PATH fd', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { path } = s.file();
      const O_PATH = 0o10000000; // Linux x86_64 / arm64 (not exported by node:fs)
      const opath = s.own(openSync(path, O_PATH));
      const got = s.own(await passOne(a, b, opath.fd));
      expect(openFdTable().get(got.fd)).toBe(path);
      expect(sameFile(got.fd, opath.fd)).toBe(true);
      const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${got.fd}`, 'utf8'));
      expect(parseInt(flags![1]!, 8) & O_PATH).toBe(O_PATH);
    }));
});
