/**
 * A number fdbridge holds for itself (its registry: a connection's socket,
 * a helper daemon's listening socket, an `own` socket pair's end, a pin, a
 * copy given to a command and not adopted) has one owner, which closes it. Naming it to make a second owner
 * (`new UnixSocket(fd)`, `UnixServer.fromListeningFd(fd)`) is refused as
 * every number of fdbridge's own is where a caller names an fd: a
 * SystemError EBADF, the fd left as it was and its owner still working.
 * Taken, the second owner would close the number again when it closes,
 * after the first did, when another file (another connection's, the
 * program's) may hold it.
 */
import { rawSocketPair } from '../../src/testing';
import { UnixServer, UnixSocket } from '../../src/socket';
import { checkOwnFdsRefused, OWN_KINDS } from '../util/own-fds';

test.each([
  ['new UnixSocket', 'its kind found', (fd: number): unknown => new UnixSocket(fd)],
  ['new UnixSocket', 'its kind given', (fd: number): unknown => new UnixSocket(fd, 'seqpacket')],
  ['fromListeningFd', 'its kind given', (fd: number): unknown => UnixServer.fromListeningFd(fd, 'taken', { kind: 'seqpacket' })],
] as const)("generated: %s (%s) of one of fdbridge's own fds: SystemError EBADF, the fd as it was and its owner working", (operation, _kind, act) =>
  checkOwnFdsRefused(OWN_KINDS, operation, act, 6),
);

test('a socket of the caller\'s own (not registered) is still taken: new UnixSocket of a raw pair end works and closes it', async () => {
  const [a, b] = rawSocketPair('seqpacket');
  const sa = new UnixSocket(a, 'seqpacket');
  const sb = new UnixSocket(b);
  await sa.send(Buffer.from('mine'));
  expect((await sb.receive()).data.toString()).toBe('mine');
  sa.close();
  sb.close();
});
