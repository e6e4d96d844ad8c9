/**
 * A number fdbridge holds for itself (its registry: a connection's socket,
 * a helper daemon's listening socket, an `own` socket pair's end, a pin)
 * has one owner, which closes it. Naming it to make a second owner
 * (`new UnixSocket(fd)`, `UnixServer.fromListeningFd(fd)`) is refused as
 * every number of fdbridge's own is where a caller names an fd: a
 * SystemError EBADF, the fd left as it was and its owner still working.
 * Taken, the second owner would close the number again when it closes,
 * after the first did, when another file (another connection's, the
 * program's) may hold it.
 */
import fc from 'fast-check';

import { fdIdentity, openFdTable } from '../../src/fd';
import { rawSocketPair } from '../../src/testing';
import { UnixServer, UnixSocket } from '../../src/socket';
import { expectOwnFdRefused, ownFd, type OwnKind } from '../util/own-fds';
import { fdTableSettles } from '../util/processes';

test("generated: new UnixSocket and UnixServer.fromListeningFd of one of fdbridge's own fds: SystemError EBADF, the fd as it was and its owner working", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<OwnKind>('child connection socket', 'helper daemon listening socket', 'own socket pair end', 'pin'),
      fc.constantFrom('new UnixSocket', 'new UnixSocket (kind given)', 'fromListeningFd'),
      async (kind, operation) => {
        const own = await ownFd(kind);
        try {
          const file = fdIdentity(own.fd);
          const err = await (async () => {
            if (operation === 'new UnixSocket') return new UnixSocket(own.fd);
            if (operation === 'new UnixSocket (kind given)') return new UnixSocket(own.fd, 'seqpacket');
            return UnixServer.fromListeningFd(own.fd, 'taken', { kind: 'seqpacket' });
          })().catch((e: unknown) => e);
          expectOwnFdRefused(err, own.fd, file);
          await own.works();
        } finally {
          await own.end();
        }
      },
    ),
    { numRuns: 16 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('a socket of the caller\'s own (not registered) is still taken: new UnixSocket of a raw pair end works and closes it', async () => {
  const [a, b] = rawSocketPair('seqpacket');
  const sa = new UnixSocket(a, 'seqpacket');
  const sb = new UnixSocket(b);
  await sa.send(Buffer.from('mine'));
  expect((await sb.receive()).data.toString()).toBe('mine');
  sa.close();
  sb.close();
});
