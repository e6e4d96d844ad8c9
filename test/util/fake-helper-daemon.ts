/**
 * A fake helper daemon in this process, for the tests of how a client
 * deals with a daemon that stops answering or hangs up: it listens at an
 * abstract name of its own, takes every connection, closes every fd sent
 * to it, and answers as `answers` says (never more: no command runs).
 */
import { closeFds } from '../../src/fd';
import { encodeJson, FrameType } from '../../src/protocol';
import { UnixServer, type UnixSocket } from '../../src/socket';

export interface FakeDaemonAnswers {
  /** To HELLO: READY (naming this process's pid), or nothing. */
  hello: 'ready' | 'silent';
  /** To any other frame (a call, a status request): nothing, or that connection closed (this process lives on). */
  other: 'silent' | 'hang up';
}

export interface FakeHelperDaemon {
  /** The abstract name it listens at, `@fdbridge-<name>-<pid>`. */
  readonly socketPath: string;
  /** Closes every connection it took, and stops listening. */
  close(): void;
}

/** Starts a fake daemon at `@fdbridge-<name>-<pid>` that answers as `answers` says. */
export function fakeHelperDaemon(name: string, answers: FakeDaemonAnswers): FakeHelperDaemon {
  const address = `fdbridge-${name}-${process.pid}`;
  const server = UnixServer.listen({ abstract: address }, { kind: 'seqpacket' });
  const accepted: UnixSocket[] = [];
  server.onConnection((_err, socket) => {
    if (!socket) return;
    accepted.push(socket);
    socket.setMessageHandler((err, data, fds) => {
      closeFds(fds ?? []);
      if (err || !data) return;
      if (data[0] === FrameType.HELLO) {
        if (answers.hello === 'ready') void socket.send(encodeJson(FrameType.READY, 0, { pid: process.pid, threadId: 0 })).catch(() => undefined);
      } else if (answers.other === 'hang up') {
        socket.close();
      }
    });
  });
  return {
    socketPath: `@${address}`,
    close() {
      for (const s of accepted) s.close();
      server.close();
    },
  };
}
