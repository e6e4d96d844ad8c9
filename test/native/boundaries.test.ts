/**
 * CONFORMANCE "Message boundaries": which bytes a receive returns with which
 * fds, on each socket type.
 */
import { openFdTable, sameFile } from '../../src/fd';
import { native } from './binding';
import { UnixSocket, type SocketKind } from '../../src/socket';
import { expectFdTable, expectRangeError, readPipe, rejection, thrown, withScope } from './helpers';

describe.each<SocketKind>(['seqpacket', 'dgram'])('%s: one message per receive', (kind) => {
  test('a zero-byte message carries fds: data length 0, the fds arrive', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      const f2 = s.file('two').fd;
      await a.send(Buffer.alloc(0), [f1.fd, f2.fd]);
      const m = await b.receive();
      const got = s.ownAll(m.fds);
      expect(m.data.length).toBe(0);
      expect(got).toHaveLength(2);
      expect(sameFile(got[0]!.fd, f1.fd)).toBe(true);
      expect(sameFile(got[1]!.fd, f2.fd)).toBe(true);
    }));

  test('a zero-byte message without fds is a message, not end-of-file', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      await a.send(Buffer.alloc(0));
      await a.send(Buffer.from('after'));
      const empty = await b.receive();
      expect(empty.data.length).toBe(0);
      expect(empty.fds).toEqual([]);
      expect((await b.receive()).data.toString()).toBe('after');
    }));

  test('messages are never merged: each receive returns one send with its own fds', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      const f2 = s.file('two').fd;
      await a.send(Buffer.from('first'), [f1.fd]);
      await a.send(Buffer.from('second'));
      await a.send(Buffer.from('third'), [f2.fd, f2.fd]);
      const m1 = await b.receive();
      const m2 = await b.receive();
      const m3 = await b.receive();
      s.ownAll([...m1.fds, ...m2.fds, ...m3.fds]);
      expect([m1.data.toString(), m2.data.toString(), m3.data.toString()]).toEqual(['first', 'second', 'third']);
      expect(m1.fds).toHaveLength(1);
      expect(sameFile(m1.fds[0]!, f1.fd)).toBe(true);
      expect(m2.fds).toEqual([]);
      expect(m3.fds).toHaveLength(2);
      expect(m3.fds.every((fd) => sameFile(fd, f2.fd))).toBe(true);
    }));
});

describe('stream', () => {
  test('two fd-carrying sends are never merged into one read', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      const f2 = s.file('two').fd;
      // Both sends are in the kernel before the first read.
      await a.send(Buffer.from('first'), [f1.fd]);
      await a.send(Buffer.from('second'), [f2.fd]);
      const m1 = await b.receive();
      const got1 = s.ownAll(m1.fds);
      expect(m1.data.toString()).toBe('first');
      expect(got1).toHaveLength(1);
      expect(sameFile(got1[0]!.fd, f1.fd)).toBe(true);
      const m2 = await b.receive();
      const got2 = s.ownAll(m2.fds);
      expect(m2.data.toString()).toBe('second');
      expect(got2).toHaveLength(1);
      expect(sameFile(got2[0]!.fd, f2.fd)).toBe(true);
    }));

  test('the same holds for recvNow with a buffer big enough for both', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      const f2 = s.file('two').fd;
      native.sendNow(a.fd, Buffer.from('first'), [f1.fd]);
      native.sendNow(a.fd, Buffer.from('second'), [f2.fd, f2.fd]);
      const m1 = native.recvNow(b.fd, 1024, 253)!;
      s.ownAll(m1.fds);
      const m2 = native.recvNow(b.fd, 1024, 253)!;
      s.ownAll(m2.fds);
      expect(m1.data.toString()).toBe('first');
      expect(m1.fds).toHaveLength(1);
      expect(m2.data.toString()).toBe('second');
      expect(m2.fds).toHaveLength(2);
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
    }));

  test('an fd-carrying send ends the read: later fd-less bytes come in the next receive', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      await a.send(Buffer.from('with-fd'), [f1.fd]);
      await a.send(Buffer.from('-plain'));
      const m1 = await b.receive();
      s.ownAll(m1.fds);
      // The read stops after the fd-carrying send: its fds belong to its bytes only.
      expect(m1.data.toString()).toBe('with-fd');
      expect(m1.fds).toHaveLength(1);
      const m2 = await b.receive();
      expect(m2.data.toString()).toBe('-plain');
      expect(m2.fds).toEqual([]);
    }));

  test('fds travel with the first byte of their send: earlier fd-less bytes may share the read', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const f1 = s.file('one').fd;
      await a.send(Buffer.from('plain-'));
      await a.send(Buffer.from('with-fd'), [f1.fd]);
      await a.send(Buffer.from('-tail'));
      const m1 = await b.receive();
      const got = s.ownAll(m1.fds);
      expect(m1.data.toString()).toBe('plain-with-fd');
      expect(got).toHaveLength(1);
      expect(sameFile(got[0]!.fd, f1.fd)).toBe(true);
      const m2 = await b.receive();
      expect(m2.data.toString()).toBe('-tail');
      expect(m2.fds).toEqual([]);
    }));

  test('a 0-byte send with fds is refused (Linux would drop the fds), nothing queued', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const { fd } = s.file();
      const before = openFdTable();
      expectRangeError(await rejection(a.send(Buffer.alloc(0), [fd.fd])), /0 bytes.*fds|drop/);
      expectRangeError(thrown(() => a.write(Buffer.alloc(0), [fd.fd])), /drop/);
      expect(a.queuedSends).toBe(0);
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
      expectFdTable(before);
      // A 0-byte send without fds is allowed and sends nothing at all.
      await a.send(Buffer.alloc(0));
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
    }));

  test('the kernel itself drops the fds of a 0-byte STREAM send (why the binding refuses it)', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair('stream').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      const pipe = s.pipe();
      // sendNow is one raw sendmsg: it does not refuse, and the kernel returns 0.
      expect(native.sendNow(a.fd, Buffer.alloc(0), [pipe.write.fd])).toBe(0);
      pipe.write.close();
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
      // Nothing holds the write end any more: the pipe reads end-of-file.
      expect(readPipe(pipe.read.fd)).toBe('eof');
    }));
});
