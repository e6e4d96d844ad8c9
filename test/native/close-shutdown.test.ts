/**
 * close() shuts a socket down and empties its queue before closing it (so
 * that no fd a peer sent is released on the event loop): what the peer
 * sees right after; and the sockets that are only closed, because another
 * holder goes on using them (shutdown(2) acts on the socket, every
 * holder's copy): a listening socket passed in with
 * UnixServer.fromListeningFd (systemd keeps a copy), and any socket closed
 * with close({ shutdown: false }) after its fd was handed on.
 */
import { spawn } from 'node:child_process';
import { lstatSync } from 'node:fs';
import { join } from 'node:path';

import { closeFd, DatagramSocket, dupFd, EofError, UnixServer, UnixSocket, type SocketKind } from '../../src';
import { rawConnect, rawListen, rawSocketPair, receiveNow, sendNow } from '../../src/testing';
import {
  abstractName,
  collect,
  distFile,
  expectSystemError,
  fixture,
  openBackgroundClosesDone,
  readPipe,
  rejection,
  thrown,
  withScope,
} from './helpers';
import { native } from './binding';

/** Resolves once every batch named is closed (the background closer works on its own threads). */
function afterCloses(tickets: readonly number[]): Promise<void> {
  return new Promise((resolve) => native.afterBackgroundCloses(tickets, resolve));
}

describe.each<SocketKind>(['stream', 'seqpacket'])('%s', (kind) => {
  test('close() with messages unread (fds among them): the peer reads end of file at once, not ECONNRESET, and its send fails with EPIPE; the fds are closed', () =>
    withScope(async (s) => {
      const [peer, mine] = rawSocketPair(kind);
      s.own(peer);
      const socket = new UnixSocket(mine, kind);
      const pipe = s.pipe();
      sendNow(peer, Buffer.from('first'), [pipe.write.fd]);
      sendNow(peer, Buffer.from('second'));
      pipe.write.close();
      socket.close();
      expect(thrown(() => receiveNow(peer, 16, 1))).toBeInstanceOf(EofError);
      expectSystemError(thrown(() => sendNow(peer, Buffer.from('late'))), 'EPIPE', 'sendmsg');
      await openBackgroundClosesDone();
      expect(readPipe(pipe.read.fd)).toBe('eof'); // the queued write end was closed (on the background closer)
    }));

  test('UnixServer.fromListeningFd: close() closes only its copy; the other holder (systemd) goes on listening', () =>
    withScope(async () => {
      const name = abstractName('shared-listener');
      const listening = rawListen(kind, name, { abstract: true });
      const systemd = dupFd(listening);
      try {
        const server = UnixServer.fromListeningFd(listening, `@${name}`, { kind });
        const early = rawConnect(kind, name, true); // waits in the backlog: not taken by the close
        server.close();
        const late = rawConnect(kind, name, true);
        closeFd(early);
        closeFd(late);
      } finally {
        closeFd(systemd);
      }
    }));

  test('UnixServer.close(): a connection never accepted reads end of file at once and its send fails with EPIPE; a new one is refused', () =>
    withScope(async (s) => {
      const name = abstractName('unaccepted');
      const server = UnixServer.listen({ abstract: name }, { kind });
      const client = s.own(rawConnect(kind, name, true)).fd;
      sendNow(client, Buffer.from('hello'));
      server.close();
      expect(thrown(() => receiveNow(client, 16, 1))).toBeInstanceOf(EofError);
      expectSystemError(thrown(() => sendNow(client, Buffer.from('late'))), 'EPIPE', 'sendmsg');
      expectSystemError(thrown(() => rawConnect(kind, name, true)), 'ECONNREFUSED');
    }));
});

describe('a socket whose fd was handed on: close({ shutdown: false }) closes only this copy', () => {
  test('a connection handed to a child process goes on working there, the message queued before the close included (a plain close() reads it and shuts the socket down: the peer gets EPIPE)', () =>
    withScope(async (s) => {
      distFile('src/socket.js');
      const [peer, handed] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      await peer.send(Buffer.from('queued')); // waits in handed's queue: the child's to read
      // spawn returns once the child has exec'd, holding its copy as fd 3.
      const child = s.child(spawn(process.execPath, [fixture('handed-socket-echo.js')], { stdio: ['ignore', 'pipe', 'pipe', handed.fd] }));
      const done = collect(child);
      handed.close({ shutdown: false });
      await peer.send(Buffer.from('after'));
      expect((await peer.receive()).data.toString()).toBe('echo:queued');
      expect((await peer.receive()).data.toString()).toBe('echo:after');
      await peer.send(Buffer.from('end'));
      expect((await peer.receive()).data.toString()).toBe('echo:end');
      const r = await done;
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      // The child's close was the last one: now the peer reads end of file.
      expect(await rejection(peer.receive())).toBeInstanceOf(EofError);
      await afterCloses(handed.backgroundCloseTickets());
    }));

  test.each<SocketKind>(['stream', 'seqpacket'])(
    '%s: a listening socket handed to another holder goes on listening there, with the connection not accepted yet and its socket file',
    (kind) =>
      withScope(async (s) => {
        const path = join(s.dir(), 'handed.sock');
        const server = UnixServer.listen(path, { kind });
        const other = dupFd(server.fd); // the other holder's copy (as once sent to another process)
        const early = s.own(rawConnect(kind, path)).fd;
        sendNow(early, Buffer.from('early'));
        server.close({ shutdown: false });
        expect(lstatSync(path).isSocket()).toBe(true); // still reached by its name
        const late = s.own(rawConnect(kind, path)).fd; // not refused
        const theirs = s.add(UnixServer.fromListeningFd(other, path, { kind }));
        const first = s.add(await theirs.accept());
        expect((await first.receive()).data.toString()).toBe('early'); // not read by our close
        const second = s.add(await theirs.accept());
        sendNow(late, Buffer.from('late'));
        expect((await second.receive()).data.toString()).toBe('late');
        await afterCloses(server.backgroundCloseTickets()); // our copy's close
      }),
  );

  test('a datagram socket bound to a name, handed to another holder, goes on receiving there, the datagram queued before the close included, and keeps its file', () =>
    withScope(async (s) => {
      const path = join(s.dir(), 'private', 'handed.sock');
      const rx = DatagramSocket.bind(path);
      const other = s.own(dupFd(rx.fd)).fd; // the other holder's copy
      const tx = s.add(DatagramSocket.open());
      await tx.sendTo(path, Buffer.from('before'));
      rx.close({ shutdown: false });
      expect(lstatSync(path).isSocket()).toBe(true);
      await tx.sendTo(path, Buffer.from('after')); // neither refused nor EPIPE
      expect(receiveNow(other, 16, 1)?.data.toString()).toBe('before');
      expect(receiveNow(other, 16, 1)?.data.toString()).toBe('after');
      await afterCloses(rx.backgroundCloseTickets()); // our copy's close
    }));

  test.each<SocketKind>(['stream', 'seqpacket'])(
    '%s: the last copy after all (the other holder closed first): nothing is read, the close drops the queue on the background closer, its fds closed there',
    (kind) =>
      withScope(async (s) => {
        const [peer, mine] = rawSocketPair(kind);
        s.own(peer);
        const socket = new UnixSocket(mine, kind);
        const pipe = s.pipe();
        sendNow(peer, Buffer.from('unread'), [pipe.write.fd]);
        pipe.write.close(); // the copy in the queue is the only writer now
        socket.close({ shutdown: false });
        await afterCloses(socket.backgroundCloseTickets());
        expect(readPipe(pipe.read.fd)).toBe('eof');
        // Nothing read before the close: the peer's message was dropped unread.
        expectSystemError(thrown(() => receiveNow(peer, 16, 1)), 'ECONNRESET', 'recvmsg');
      }),
  );
});
