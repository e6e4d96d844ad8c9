/**
 * A connection accepted and then not served (it could not become a
 * UnixSocket, or the server that took it failed to start) is closed with
 * whatever its client queued on it before it was accepted: a message
 * carrying a lingering TCP socket (SO_LINGER, unsent data) whose only
 * reference is now that queue's. The close of that connection must not
 * drop the TCP socket on the event loop, which would stand still for the
 * linger time the client chose (an hour here): the connection is shut
 * down and emptied, the fds it held handed to the background closer, as
 * UnixSocket.close() and UnixServer.close() do.
 *
 * The watcher (test/util/linger-attacker.ts) looks at the main thread's
 * kernel state: if it finds it in that close, it records it and has python
 * reset the peer, which ends the close at once. Expected: null.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, dupFd, HelperDaemon, UnixServer } from '../../src';
import { rawConnect, rawListen, sendNow } from '../../src/testing';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-accepted-linger-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A client at `name` whose one message carries `fd` (then closed here: the queue holds the only reference). */
function queueLingering(name: string, abstract: boolean, fd: number): void {
  const client = rawConnect('seqpacket', name, abstract);
  try {
    sendNow(client, Buffer.from('x'), [fd]);
    closeFd(fd);
  } finally {
    closeFd(client);
  }
}

/**
 * A UnixServer whose accepted connections cannot become UnixSockets (its
 * options, which listen() does not look at, are refused by each one):
 * accept() fails with that error, and the connection it took is closed.
 */
(hasPython() ? test : test.skip)(
  "a connection UnixServer accepted and could not wrap is closed without the event loop waiting in the close of a lingering TCP socket it queued",
  async () => {
    const linger = await lingeringSocket();
    const name = `fdbridge-attack-accepted-linger-${process.pid}`;
    try {
      const server = UnixServer.listen({ abstract: name }, { kind: 'seqpacket', bufferSize: 0 });
      try {
        queueLingering(name, true, linger.fd);
        await expect(server.accept()).rejects.toMatchObject({ name: 'RangeError', message: 'bufferSize must be between 1 and 64 MiB' });
      } finally {
        server.close();
      }
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close < __tcp_close < tcp_close':
      // the connection was closed as it was, on the event loop, which stood still until the watcher had the peer reset.
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end();
    }
  },
  60000,
);

/**
 * A helper daemon given a listening socket (systemd socket activation)
 * takes the connections queued on it at once; a start that then fails (a
 * command name it refuses) closes them, and the listening socket's copy it
 * was given.
 */
(hasPython() ? test : test.skip)(
  "a helper daemon whose start fails after taking over a listening socket closes the connections queued there without the event loop waiting in the close of a lingering TCP socket one of them queued",
  async () => {
    const linger = await lingeringSocket();
    const socketPath = join(dir, 'activated.sock');
    const systemd = rawListen('seqpacket', socketPath, { mode: 0o600, backlog: 16 });
    try {
      queueLingering(socketPath, false, linger.fd);
      expect(() =>
        HelperDaemon.start({ socketPath, listenFd: dupFd(systemd), commands: { 'not a name': { module: '/nonexistent.js' } } }),
      ).toThrow(TypeError);
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close < ...'.
      expect(await linger.verdict()).toBeNull();
    } finally {
      closeFd(systemd);
      await linger.end();
    }
  },
  60000,
);
