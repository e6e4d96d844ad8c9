/**
 * close() shuts a socket down and empties its queue before closing it (so
 * that no fd a peer sent is released on the event loop): what the peer
 * sees right after, and the one socket that is only closed, a listening
 * socket passed in with UnixServer.fromListeningFd (systemd keeps a copy,
 * which must go on listening).
 */
import { closeFd, dupFd, EofError, UnixServer, UnixSocket, type SocketKind } from '../../src';
import { rawConnect, rawListen, rawSocketPair, receiveNow, sendNow } from '../../src/testing';
import { abstractName, expectSystemError, openBackgroundClosesDone, readPipe, thrown, withScope } from './helpers';

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
