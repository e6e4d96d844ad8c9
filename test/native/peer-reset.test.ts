/**
 * A peer that closes with our data unread: Linux sets ECONNRESET on our
 * socket (unix_release_sock), and recvmsg reports that pending error before
 * the messages the peer had sent us, which stay queued. Those messages were
 * sent: they must be delivered (with their fds) before the reset is
 * reported, or a reply the peer sent just before dying is lost. And a
 * connection whose command process dies with requests unread must still
 * resolve the requests it answered before.
 */
import { readFileSync } from 'node:fs';

import { connect, makeMemfd, PeerExitedError, PROBE_COMMAND } from '../../src';
import { closeFd, sameFile } from '../../src/fd';
import { UnixSocket, type Message, type SocketKind } from '../../src/socket';
import { rawSocketPair, sendNow } from '../../src/testing';
import { expectSystemError, withScope } from './helpers';

/**
 * Blocks this thread until `pid` has exited. Nothing is reaped meanwhile (that
 * takes an event-loop turn), so the dead child stays a zombie ('Z'). A child
 * that never dies hangs here; jest then reports the test's timeout.
 */
function blockUntilExited(pid: number): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (!/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) Atomics.wait(nap, 0, 0, 1);
}

describe('messages queued before the peer closed with our data unread', () => {
  test.each<SocketKind>(['seqpacket', 'stream'])('%s: delivered (fds included) before ECONNRESET', (kind) =>
    withScope(async (s) => {
      // The peer is a raw socket closed with close(2), as a process that
      // dies closes it (a UnixSocket's close() reads its queue first, so its
      // peer sees end of file).
      const [a, y] = rawSocketPair(kind);
      const b = s.add(new UnixSocket(y, kind));
      const { fd } = s.file();
      sendNow(a, Buffer.from('reply-1'), [fd.fd]);
      sendNow(a, Buffer.from('reply-2'));
      await b.send(Buffer.from('never read')); // a dies with this unread
      closeFd(a);
      const got: Message[] = [];
      let error: unknown;
      await new Promise<void>((resolve) => {
        b.setMessageHandler((err, data, fds) => {
          if (err) {
            error = err;
            resolve();
            return;
          }
          got.push({ data: Buffer.from(data as Buffer), fds: s.ownAll(fds as number[]).map((o) => o.fd) });
        });
      });
      expect(Buffer.concat(got.map((m) => m.data)).toString()).toBe('reply-1reply-2');
      const fds = got.flatMap((m) => m.fds);
      expect(fds).toHaveLength(1);
      expect(sameFile(fds[0]!, fd.fd)).toBe(true);
      // Then the reset, as before: the peer went with our data unread.
      expectSystemError(error, 'ECONNRESET', 'recvmsg');
    }),
  );
});

test('child: a call answered before the command process died with requests unread resolves; the unread ones reject', async () => {
  const source = makeMemfd('reset');
  try {
    for (let round = 0; round < 3; round++) {
      const conn = await connect('child', { command: PROBE_COMMAND, child: { env: { FDBRIDGE_FAILPOINT: 'after-receive:1' } } });
      try {
        const echo = conn.call('echo', 'answered');
        // The first duplication kills it; the two behind it stay unread in its socket.
        const dups = [conn.dupFileDescriptor(source), conn.dupFileDescriptors([source, source]), conn.dupFileDescriptors([source])];
        // Let the folded duplications leave (a microtask), then hold this
        // thread (no event-loop turn, so nothing is read) until the child has
        // answered and died: the answer then waits in our socket behind the reset.
        await Promise.resolve();
        blockUntilExited(conn.location.pid);
        const [e, ...d] = await Promise.allSettled([echo, ...dups]);
        expect(e).toEqual({ status: 'fulfilled', value: 'answered' });
        for (const x of d) expect(x.status === 'rejected' && x.reason instanceof PeerExitedError).toBe(true);
      } finally {
        await conn.close();
      }
    }
  } finally {
    closeFd(source);
  }
});
