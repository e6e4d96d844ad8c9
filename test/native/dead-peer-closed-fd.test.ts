/**
 * A request naming a closed fd on a connection whose command has died, made
 * before the event loop has read the hangup: it rejects with PeerExitedError,
 * as the same request with an open fd does (EPIPE) and as every request made
 * once the hangup is read does. The kernel checks a sendmsg's fds before
 * its peer, so the send alone would say EBADF: which error a request got
 * then depended on whether the loop had turned since the death (the
 * model-based test's long run found it on child).
 *
 * The command's process is SIGKILLed and the test spins until poll(2) shows
 * the hangup on the connection's socket, and makes the request in the same
 * tick, so the loop cannot have read it. A closed fd on a live connection
 * still rejects with EBADF. (pidfd has no dupFileDescriptorSync: its
 * UnsupportedError comes first.)
 */
import { connect, PeerExitedError, PROBE_COMMAND, SystemError, type Connection, type TransportName } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { native } from './binding';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf } from '../util/processes';

/** The connection's socket: the one socket fd `connect` opened in this process. */
async function connectWithSocket(transport: TransportName): Promise<{ conn: Connection; socket: number }> {
  const before = openFdTable(process.pid);
  const conn = await connect(transport, { command: PROBE_COMMAND });
  const sockets = [...openFdTable(process.pid)].filter(([fd, target]) => target.startsWith('socket:') && before.get(fd) !== target).map(([fd]) => fd);
  expect(sockets.length).toBe(1);
  return { conn, socket: sockets[0] as number };
}

/**
 * SIGKILLs the connection's command process and spins until the kernel has
 * released its end of the socket (poll(2) reports the hangup on ours),
 * without turning the event loop, which therefore has not read it.
 */
function killNow(conn: Connection, socket: number): void {
  (conn as ChildConnection).child.kill('SIGKILL');
  while (!(native.pollReadable([socket])[0] as boolean));
}

/** A number that names no open fd now. */
function closedFd(): number {
  const fd = makeMemfd('dead-peer-closed-fd');
  closeFd(fd);
  return fd;
}

type Request = (conn: Connection, fd: number) => Promise<unknown>;
const allRequests: Array<[string, Request]> = [
  ['dupFileDescriptor', (conn, fd) => conn.dupFileDescriptor(fd)],
  ['dupFileDescriptors', (conn, fd) => conn.dupFileDescriptors([fd])],
  ['dupFileDescriptorSync', async (conn, fd) => conn.dupFileDescriptorSync(fd)],
];

describe.each(['child', 'pidfd'] as TransportName[])('%s transport', (transport) => {
  const requests = transport === 'pidfd' ? allRequests.slice(0, 2) : allRequests;
  test.each(requests)('%s(closed fd) on a connection whose command just died rejects with PeerExitedError', async (_name, request) => {
    const { conn, socket } = await connectWithSocket(transport);
    try {
      const fd = closedFd();
      killNow(conn, socket);
      const settled = request(conn, fd).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      const err = await settled;
      expect(err instanceof PeerExitedError ? 'PeerExitedError' : err).toBe('PeerExitedError');
    } finally {
      await conn.close();
      await exitOf((conn as ChildConnection).child);
    }
  });

  test.each(requests)('%s(closed fd) made as the command process\'s exit is seen rejects with PeerExitedError', async (_name, request) => {
    const conn = await connect(transport, { command: PROBE_COMMAND });
    try {
      const fd = closedFd();
      const child = (conn as ChildConnection).child;
      // Made from the exit event itself: whether the loop has read the hangup by then is the kernel's timing.
      const settled = new Promise<unknown>((resolve) =>
        child.once('exit', () =>
          resolve(
            request(conn, fd).then(
              () => 'resolved',
              (err: unknown) => err,
            ),
          ),
        ),
      );
      child.kill('SIGKILL');
      const err = await settled;
      expect(err instanceof PeerExitedError ? 'PeerExitedError' : err).toBe('PeerExitedError');
    } finally {
      await conn.close();
    }
  });

  test.each(requests)('%s(closed fd) on a live connection still rejects with EBADF', async (_name, request) => {
    const conn = await connect(transport, { command: PROBE_COMMAND });
    try {
      const err = await request(conn, closedFd()).then(
        () => 'resolved',
        (e: unknown) => e,
      );
      expect(err instanceof SystemError ? err.code : err).toBe('EBADF');
    } finally {
      await conn.close();
      expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
    }
  });
});
