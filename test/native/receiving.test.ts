/**
 * CONFORMANCE "Receiving", and the binding's behaviour on top of it:
 * close-on-exec on receipt, truncation (MSG_CTRUNC / MSG_TRUNC) with no fd
 * left behind, other control messages, read(2), EOF, ECONNRESET, EPIPE.
 *
 * The fds a socket receives and nobody takes (a truncated message's) come
 * from a peer, and the last close of one can block for as long as the peer
 * chose (a TCP socket with SO_LINGER and unsent data): the socket hands
 * them to the background closer, and these tests wait for it
 * (backgroundCloseTickets) before they look at the fd table.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readSync } from 'node:fs';

import { EofError, SystemError, TruncatedError } from '../../src/errors';
import { closeFd, fdFlags, openFdTable, sameFile } from '../../src/fd';
import { native } from './binding';
import { UnixSocket, type OwnSocketOption, type SocketKind, type UnixSocketOptions } from '../../src/socket';
import { rawSocketPair } from '../../src/testing';
import {
  collect,
  distFile,
  expectFdTable,
  expectSystemError,
  fixture,
  lastJson,
  readPipe,
  rejection,
  thrown,
  withScope,
  type Scope,
} from './helpers';

function pair(s: Scope, kind: SocketKind, options?: UnixSocketOptions & OwnSocketOption): [UnixSocket, UnixSocket] {
  return UnixSocket.pair(kind, options).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
}

/** Resolves once every batch named is closed (the background closer works on its own threads). */
function afterCloses(tickets: readonly number[]): Promise<void> {
  return new Promise((resolve) => native.afterBackgroundCloses(tickets, resolve));
}

/** fd number -> target, as listed by `ls -l /proc/self/fd` run in a child (exec'd, not forked Node). */
function fdsOfExecedChild(): Map<number, string> {
  const out = execFileSync('ls', ['-l', '/proc/self/fd'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const table = new Map<number, string>();
  for (const line of out.split('\n')) {
    const m = / (\d+) -> (.*)$/.exec(line);
    if (m) table.set(Number(m[1]), m[2]!);
  }
  return table;
}

describe('close-on-exec on receipt', () => {
  test.each<SocketKind>(['stream', 'dgram', 'seqpacket'])(
    '%s: the received fd is close-on-exec although the sender\'s copy is not',
    (kind) =>
      withScope(async (s) => {
        const [a, b] = pair(s, kind);
        const { fd } = s.file();
        native.setCloexec(fd.fd, false);
        expect(fdFlags(fd.fd).cloexec).toBe(false);
        await a.send(Buffer.from('x'), [fd.fd]);
        const [got] = s.ownAll((await b.receive()).fds);
        expect(fdFlags(got!.fd).cloexec).toBe(true);
        expect(fdFlags(fd.fd).cloexec).toBe(false);
      }),
  );

  test('proven by exec: a spawned program inherits the non-cloexec control fd but not the received fd', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket');
      const { path, fd: control } = s.file('cloexec-probe');
      // The sender's copy is deliberately inheritable: it is the control.
      native.setCloexec(control.fd, false);
      await a.send(Buffer.from('x'), [control.fd]);
      const [got] = s.ownAll((await b.receive()).fds);
      expect(sameFile(got!.fd, control.fd)).toBe(true);

      const child = fdsOfExecedChild();
      // The control shows the exec'd program does inherit what is not close-on-exec...
      expect(child.get(control.fd)).toBe(path);
      // ...and the received fd of the very same file did not cross the exec.
      expect(child.get(got!.fd)).not.toBe(path);
      expect([...child.values()].filter((t) => t === path)).toHaveLength(1);

      // Same program once the control is close-on-exec again: the file is gone entirely.
      native.setCloexec(control.fd, true);
      expect([...fdsOfExecedChild().values()]).not.toContain(path);
    }));
});

describe('truncated control data (MSG_CTRUNC)', () => {
  test('a receiver with room for 1 fd gets 3: TruncatedError(control), every fd that arrived closed', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket', { maxFds: 1 });
      const files = [s.file('a').fd, s.file('b').fd, s.file('c').fd];
      const before = openFdTable();
      await a.send(Buffer.from('three'), files.map((f) => f.fd));
      const err = await rejection(b.receive());
      expect(err).toBeInstanceOf(TruncatedError);
      const t = err as TruncatedError;
      expect(t.code).toBe('ERR_FDBRIDGE_TRUNCATED');
      expect(t.what).toBe('control');
      // The socket receives with room for 253, so all three were installed
      // by the kernel; the binding closed all three (on the background closer).
      expect(t.fdsClosed).toBe(3);
      expect(t.message).toMatch(/3 fd\(s\)/);
      await afterCloses(b.backgroundCloseTickets());
      expectFdTable(before);
      // The socket is still usable: the next message, with one fd, arrives whole.
      await a.send(Buffer.from('one'), [files[0]!.fd]);
      const m = await b.receive();
      const [got] = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('one');
      expect(sameFile(got!.fd, files[0]!.fd)).toBe(true);
    }));

  test('253 fds for maxFds 1: every one arrives (the socket always has room for 253, so the kernel drops none inside recvmsg) and is closed', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket', { maxFds: 1 });
      const pipe = s.pipe();
      await a.send(Buffer.from('many'), new Array<number>(253).fill(pipe.write.fd));
      pipe.write.close(); // the copies in flight are the pipe's only writers now
      const before = openFdTable();
      const err = await rejection(b.receive());
      expect(err).toBeInstanceOf(TruncatedError);
      expect((err as TruncatedError).what).toBe('control');
      expect((err as TruncatedError).fdsClosed).toBe(253);
      await afterCloses(b.backgroundCloseTickets());
      expectFdTable(before);
      expect(readPipe(pipe.read.fd)).toBe('eof'); // all 253 copies closed
    }));

  test('recvNow with maxFds 1 reports the same truncation synchronously, the fds on the background closer', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket');
      const files = [s.file('a').fd, s.file('b').fd, s.file('c').fd];
      const before = openFdTable();
      native.sendNow(a.fd, Buffer.from('xyz'), files.map((f) => f.fd));
      const err = thrown(() => native.recvNow(b.fd, 1024, 1));
      expect(err).toBeInstanceOf(TruncatedError);
      expect((err as TruncatedError).what).toBe('control');
      expect((err as TruncatedError).fdsClosed).toBe(3);
      expect((err as TruncatedError).bytes).toBe(3);
      // Not closed on this thread (a peer's fd can block its close): all three arrived and were handed on.
      await afterCloses(native.openBackgroundCloses());
      expectFdTable(before);
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
    }));

  test('a lowered RLIMIT_NOFILE in a child process: the fds that fit arrive and are closed', () =>
    withScope(async (s) => {
      const script = fixture('rlimit-receiver.js');
      distFile('src/socket.js');
      const [a, b] = pair(s, 'seqpacket');
      const slots = 3;
      const child = s.child(spawn(process.execPath, [script, String(slots)], { stdio: ['ignore', 'pipe', 'pipe', b.fd] }));
      // The child has its own copy, as fd 3, and goes on using the socket:
      // only ours is closed (a plain close() would shut the socket down for
      // the child too).
      b.close({ shutdown: false });
      const done = collect(child);
      expect((await a.receive()).data.toString()).toBe('ready');
      const { fd } = s.file();
      await a.send(Buffer.from('ten'), new Array<number>(10).fill(fd.fd));
      expect((await a.receive()).data.toString()).toBe('again');
      await a.send(Buffer.from('one'), [fd.fd]);
      const r = await done;
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const report = lastJson<{
        free: number;
        error?: { name: string; code: string; what: string; fdsClosed: number; bytes: number };
        tableRestored: boolean;
        next: { data: string; fds: number };
        tableRestoredAtEnd: boolean;
      }>(r);
      expect(report.free).toBe(slots);
      expect(report.error).toEqual({
        name: 'TruncatedError',
        code: 'ERR_FDBRIDGE_TRUNCATED',
        what: 'control',
        // exactly the fds that fit under the limit arrived, and were closed
        // (the rest the kernel dropped inside recvmsg: MSG_CTRUNC)
        fdsClosed: report.free,
        bytes: 3,
        message: expect.stringContaining('MSG_CTRUNC'),
      });
      expect(report.tableRestored).toBe(true);
      expect(report.next).toEqual({ data: 'one', fds: 1 });
      expect(report.tableRestoredAtEnd).toBe(true);
    }));
});

describe('truncated data (MSG_TRUNC)', () => {
  test.each<SocketKind>(['seqpacket', 'dgram'])(
    '%s: a message larger than bufferSize is refused and its fds closed (on the background closer)',
    (kind) =>
      withScope(async (s) => {
        const [a, b] = pair(s, kind, { bufferSize: 16 });
        const pipe = s.pipe();
        const { fd } = s.file();
        await a.send(Buffer.alloc(100, 'x'), [pipe.write.fd, fd.fd]);
        pipe.write.close(); // the in-flight copy is now the only writer
        const before = openFdTable();
        const err = await rejection(b.receive());
        expect(err).toBeInstanceOf(TruncatedError);
        const t = err as TruncatedError;
        expect(t.what).toBe('data');
        expect(t.fdsClosed).toBe(2);
        expect(t.bytes).toBe(100);
        expect(t.message).toMatch(/MSG_TRUNC/);
        await afterCloses(b.backgroundCloseTickets());
        expectFdTable(before);
        // The write end that arrived was closed: the pipe now reads end-of-file.
        expect(readPipe(pipe.read.fd)).toBe('eof');
        // A message that fits still arrives.
        await a.send(Buffer.alloc(16, 'y'), [fd.fd]);
        const m = await b.receive();
        s.ownAll(m.fds);
        expect(m.data.toString()).toBe('y'.repeat(16));
        expect(m.fds).toHaveLength(1);
      }),
  );

  test('stream: data beyond bufferSize is simply read next, the fds come with the first part', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'stream', { bufferSize: 4 });
      const { fd } = s.file();
      await a.send(Buffer.from('abcdefgh'), [fd.fd]);
      const first = await b.receive();
      s.ownAll(first.fds);
      expect(first.data.toString()).toBe('abcd');
      expect(first.fds).toHaveLength(1);
      const second = await b.receive();
      expect(second.data.toString()).toBe('efgh');
      expect(second.fds).toEqual([]);
    }));
});

describe('a message refused on arrival: its fds go to the background closer, whatever the socket closes itself with', () => {
  // Every shape in which fds arrive and go to nobody: the most fds a
  // message carries (253) for maxFds 1, a few more than maxFds, or data
  // that did not fit (MSG_TRUNC). Each is tried on a socket that closes
  // itself at once (the default) and on one that closes itself on the
  // background closer (useBackgroundCloser), on a socket of the caller's
  // and on one of fdbridge's own (whose received fds are registered as
  // they arrive). The fds are a peer's either way, and the last close of
  // one can block: never closed on the event loop.
  const shapes = {
    '253 fds for maxFds 1': { options: { maxFds: 1 }, data: 'many', fds: 253, what: 'control' },
    'more fds than maxFds': { options: { maxFds: 1 }, data: 'three', fds: 3, what: 'control' },
    'data past bufferSize': { options: { bufferSize: 16 }, data: 'x'.repeat(100), fds: 2, what: 'data' },
  } as const;
  const cases = Object.keys(shapes).flatMap((shape) =>
    (['by default', 'with useBackgroundCloser'] as const).flatMap((closer) => [false, true].map((own) => [shape as keyof typeof shapes, closer, own] as const)),
  );

  test.each(cases)('%s, socket closing %s, own socket %s', (shape, closer, own) =>
    withScope(async (s) => {
      const { options, data, fds, what } = shapes[shape];
      // No other background close runs in this process from here on: the counts below are this test's.
      await afterCloses(native.openBackgroundCloses());
      const [a, b] = pair(s, 'seqpacket', { ...options, own });
      const OWNER = 42;
      if (closer === 'with useBackgroundCloser') b.useBackgroundCloser(true, OWNER);
      const pipe = s.pipe();
      await a.send(Buffer.from(data), new Array<number>(fds).fill(pipe.write.fd));
      pipe.write.close(); // the copies in flight are the pipe's only writers now
      const before = openFdTable();
      const owned = native.ownedFdCount();
      const closesBefore = native.backgroundClosesDone();

      const err = await rejection(b.receive());
      expect(err).toBeInstanceOf(TruncatedError);
      const t = err as TruncatedError;
      expect(t.what).toBe(what);
      // Every fd sent arrived: none was dropped inside recvmsg.
      expect(t.fdsClosed).toBe(fds);
      // Handed to the closer as the socket's owner: one batch, remembered by the socket.
      const tickets = b.backgroundCloseTickets();
      expect(tickets.length).toBeLessThanOrEqual(1);
      await afterCloses(tickets);
      expect(native.backgroundClosesDone() - closesBefore).toBe(fds);
      expect(b.backgroundCloseTickets()).toEqual([]);
      expectFdTable(before);
      // Every copy that arrived is closed: the pipe reads end of file.
      expect(readPipe(pipe.read.fd)).toBe('eof');
      // Registered as they arrived on an own socket, and out of the registry once closed.
      expect(native.ownedFdCount()).toBe(owned);
      // The socket goes on: a message that fits arrives whole.
      await a.send(Buffer.from('ok'), [pipe.read.fd]);
      const m = await b.receive();
      s.ownAll(m.fds);
      expect(m.data.toString()).toBe('ok');
      expect(m.fds).toHaveLength(1);
    }),
  );
});

describe('other control messages', () => {
  test('SCM_CREDENTIALS (SO_PASSCRED) arrives too: skipped, the fds still delivered', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket');
      const { fd } = s.file();
      native.setPassCred(b.fd, true);
      native.sendNow(a.fd, Buffer.from('cred'), [fd.fd]);
      const m = native.recvNow(b.fd, 1024, 253);
      expect(m).not.toBeNull();
      const [got] = s.ownAll(m!.fds);
      expect(m!.otherControlMessages).toBeGreaterThanOrEqual(1);
      expect(m!.data.toString()).toBe('cred');
      expect(m!.fds).toHaveLength(1);
      expect(sameFile(got!.fd, fd.fd)).toBe(true);
      // And with the smallest buffer that still takes the fd: credentials do not push it out.
      native.sendNow(a.fd, Buffer.from('tight'), [fd.fd]);
      const tight = native.recvNow(b.fd, 1024, 1);
      s.ownAll(tight!.fds);
      expect(tight!.fds).toHaveLength(1);
      expect(tight!.otherControlMessages).toBeGreaterThanOrEqual(1);
    }));

  test('through the event-loop receive as well', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'stream', { maxFds: 1 });
      const { fd } = s.file();
      native.setPassCred(b.fd, true);
      await a.send(Buffer.from('cred'), [fd.fd]);
      const m = await b.receive();
      const [got] = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('cred');
      expect(sameFile(got!.fd, fd.fd)).toBe(true);
    }));
});

describe('SO_PASSRIGHTS (Linux 6.16+)', () => {
  test('a receiver that refuses rights makes fd-carrying sends fail with EPERM, nothing queued', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket');
      const { fd } = s.file();
      let refused = true;
      try {
        native.setPassRights(b.fd, false);
      } catch (err) {
        // Older kernels do not know the option: a typed error says so.
        expectSystemError(err, 'ENOPROTOOPT', 'setsockopt(SO_PASSRIGHTS)');
        refused = false;
      }
      if (!refused) return;
      expectSystemError(await rejection(a.send(Buffer.from('x'), [fd.fd])), 'EPERM', 'sendmsg');
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
      await a.send(Buffer.from('data only'));
      expect((await b.receive()).data.toString()).toBe('data only');
    }));
});

describe('read(2) on the socket', () => {
  test.each<SocketKind>(['stream', 'seqpacket'])('%s: read(2) discards the fds of the message it reads', (kind) =>
    withScope(async (s) => {
      const [a, b] = pair(s, kind);
      const pipe = s.pipe();
      await a.send(Buffer.from('hello'), [pipe.write.fd]);
      pipe.write.close();
      expect(readPipe(pipe.read.fd)).toBe('empty'); // the in-flight copy keeps the pipe open
      const before = openFdTable();
      const buf = Buffer.alloc(64);
      const n = readSync(b.fd, buf, 0, buf.length, null);
      expect(buf.subarray(0, n).toString()).toBe('hello');
      expectFdTable(before); // nothing installed...
      expect(readPipe(pipe.read.fd)).toBe('eof'); // ...and the kernel released the write end
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
    }));
});

describe('end of the connection', () => {
  test.each<SocketKind>(['stream', 'seqpacket'])('%s: the peer closes: EofError, and it stays so', (kind) =>
    withScope(async (s) => {
      const [a, b] = pair(s, kind);
      const pending = b.receive();
      a.close();
      const err = await rejection(pending);
      expect(err).toBeInstanceOf(EofError);
      expect((err as EofError).code).toBe('ERR_FDBRIDGE_EOF');
      expect(await rejection(b.receive())).toBeInstanceOf(EofError);
      expect(thrown(() => native.recvNow(b.fd, 1024, 253))).toBeInstanceOf(EofError);
    }));

  test('shutdown(write) gives the peer EOF while the other direction still works', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'stream');
      a.shutdown('write');
      expect(await rejection(b.receive())).toBeInstanceOf(EofError);
      await b.send(Buffer.from('still open'));
      expect((await a.receive()).data.toString()).toBe('still open');
    }));

  test('messages sent before the close are delivered before the EOF', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'seqpacket');
      const { fd } = s.file();
      await a.send(Buffer.from('last words'), [fd.fd]);
      await a.send(Buffer.alloc(0), [fd.fd]); // a 0-byte message with an fd is not EOF
      a.close();
      const m1 = await b.receive();
      const m2 = await b.receive();
      s.ownAll([...m1.fds, ...m2.fds]);
      expect(m1.data.toString()).toBe('last words');
      expect(m2.data.length).toBe(0);
      expect(m2.fds).toHaveLength(1);
      expect(await rejection(b.receive())).toBeInstanceOf(EofError);
    }));

  test.each<SocketKind>(['stream', 'seqpacket'])(
    '%s: a peer that dies (close(2)) with our data unread: ECONNRESET',
    (kind) =>
      withScope(async (s) => {
        const [a, y] = rawSocketPair(kind);
        const b = s.add(new UnixSocket(y, kind));
        await b.send(Buffer.from('never read'));
        closeFd(a); // as a process that exits closes it
        const err = await rejection(b.receive());
        expectSystemError(err, 'ECONNRESET', 'recvmsg');
        expect((err as SystemError).errno).toBe(-104);
      }),
  );

  test.each<SocketKind>(['stream', 'seqpacket'])(
    '%s: a peer that close()s its UnixSocket with our data (and fds) unread: end of file, not ECONNRESET (its close read them first), EPIPE, and the fds closed',
    (kind) =>
      withScope(async (s) => {
        const [a, b] = pair(s, kind);
        const pipe = s.pipe();
        await b.send(Buffer.from('never read'), [pipe.write.fd]);
        await b.send(Buffer.from('nor this'));
        pipe.write.close(); // the copy in a's queue is the only writer now
        const before = openFdTable();
        before.delete(a.fd); // closed here, at once
        a.close();
        const err = await rejection(b.receive());
        expect(err).toBeInstanceOf(EofError);
        expectSystemError(await rejection(b.send(Buffer.from('late'))), 'EPIPE', 'sendmsg');
        // The write end a never read went to the background closer with a's queue.
        await afterCloses(a.backgroundCloseTickets());
        expect(readPipe(pipe.read.fd)).toBe('eof');
        expectFdTable(before);
      }),
  );

  test('dgram: no EOF when the peer closes (a read would wait forever)', () =>
    withScope(async (s) => {
      const [a, b] = pair(s, 'dgram');
      a.close();
      expect(native.recvNow(b.fd, 1024, 253)).toBeNull();
    }));

  test.each<SocketKind>(['stream', 'seqpacket'])('%s: sending to a closed peer: EPIPE, nothing queued', (kind) =>
    withScope(async (s) => {
      const [a, b] = pair(s, kind);
      const { fd } = s.file();
      b.close();
      const before = openFdTable();
      const err = await rejection(a.send(Buffer.from('x'), [fd.fd]));
      expectSystemError(err, 'EPIPE', 'sendmsg');
      expect(a.queuedSends).toBe(0);
      expectSystemError(thrown(() => native.sendNow(a.fd, Buffer.from('x'))), 'EPIPE', 'sendmsg');
      expectFdTable(before);
    }));

  test('EPIPE raises no SIGPIPE (MSG_NOSIGNAL), while a plain write(2) does', async () => {
    distFile('src/socket.js');
    const child = spawn(process.execPath, [fixture('epipe-nosigpipe.js')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const r = await collect(child);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = lastJson<{
      codes: Record<string, Record<string, string>>;
      afterBindingSends: number;
      plainWrite: string;
      afterPlainWrite: number;
    }>(r);
    const epipe = { write: 'EPIPE', writeWithFd: 'EPIPE', sendNow: 'EPIPE', send: 'EPIPE' };
    expect(report.codes).toEqual({ stream: epipe, seqpacket: epipe });
    // No SIGPIPE from any of the binding's sends...
    expect(report.afterBindingSends).toBe(0);
    // ...while the control write(2) raised one (so a SIGPIPE would have been counted).
    expect(report.plainWrite).toBe('EPIPE');
    expect(report.afterPlainWrite).toBe(1);
  });
});
