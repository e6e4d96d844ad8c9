/**
 * checkFdLeaks({ trackFds: true }) and net's sockets, over the forms of
 * connect and listen: each leak (the listening socket, the client's, the
 * one the server accepted) names its call and this file's line. A TCP
 * handle gets its fd only when libuv binds or connects it, after the
 * host's lookup (a nextTick even for an address), so the fd is not there
 * yet when connect() or listen() returns; a Unix socket's, and a listen
 * without a host, are.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket, connect as netConnect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkFdLeaks } from '../../src';
import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

const THIS_FILE = /track-fds-net\.test\.ts:\d+:\d+/;

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-track-fds-net-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The fd of a socket's or server's handle (Node's, read for the test's expectations only). */
function fdOf(o: Socket | Server): number {
  return (o as unknown as { _handle: { fd: number } })._handle.fd;
}

/** Where a listen form listens, and where a client reaches it. */
type Listening = { port: number; host?: string } | { path: string };

const portOf = (s: Server): number => (s.address() as { port: number }).port;

const LISTENS: Array<{ how: string; listen(s: Server): void; reach(s: Server): Listening }> = [
  { how: 'listen(0)', listen: (s) => s.listen(0), reach: (s) => ({ port: portOf(s) }) },
  { how: "listen(0, '127.0.0.1')", listen: (s) => s.listen(0, '127.0.0.1'), reach: (s) => ({ port: portOf(s), host: '127.0.0.1' }) },
  { how: "listen(0, '::1')", listen: (s) => s.listen(0, '::1'), reach: (s) => ({ port: portOf(s), host: '::1' }) },
  { how: "listen(0, 'localhost')", listen: (s) => s.listen(0, 'localhost'), reach: (s) => ({ port: portOf(s), host: 'localhost' }) },
  { how: "listen({ port: 0, host: '127.0.0.1' })", listen: (s) => s.listen({ port: 0, host: '127.0.0.1' }), reach: (s) => ({ port: portOf(s), host: '127.0.0.1' }) },
  { how: 'listen(path)', listen: (s) => s.listen(join(dir, 'listen.sock')), reach: () => ({ path: join(dir, 'listen.sock') }) },
];

/** Connect forms, each given where a server listening on every address (listen(0): '::', which takes IPv4 too) or on a path is. */
const CONNECTS: Array<{ how: string; connect(to: { port: number; path: string }): Socket }> = [
  { how: 'net.connect(port)', connect: (to) => netConnect(to.port) },
  { how: "net.connect(port, '127.0.0.1')", connect: (to) => netConnect(to.port, '127.0.0.1') },
  { how: "net.connect(port, '::1')", connect: (to) => netConnect(to.port, '::1') },
  { how: "net.connect(port, 'localhost')", connect: (to) => netConnect(to.port, 'localhost') },
  { how: "net.connect({ port, host: '127.0.0.1' })", connect: (to) => netConnect({ port: to.port, host: '127.0.0.1' }) },
  { how: "net.connect({ port, host: '127.0.0.1', localAddress })", connect: (to) => netConnect({ port: to.port, host: '127.0.0.1', localAddress: '127.0.0.1' }) },
  { how: "net.connect({ port, host: 'localhost', autoSelectFamily: false })", connect: (to) => netConnect({ port: to.port, host: 'localhost', autoSelectFamily: false }) },
  { how: "new Socket().connect(port, '127.0.0.1')", connect: (to) => new Socket().connect(to.port, '127.0.0.1') },
  { how: 'net.connect(path)', connect: (to) => netConnect(to.path) },
];

/**
 * Runs `open` (which listens and connects, and gives what it made) in a
 * tracked check, and returns each leak's call by fd, followed by `here`
 * when its innermost JS frame is a line of this file; then closes it all,
 * and checks the fd table is as before.
 */
async function leakedCalls(open: (keep: Array<Socket | Server>) => Promise<Record<string, Socket | Server>>): Promise<{ calls: Record<number, string>; made: Record<string, number> }> {
  const before = openFdTable();
  const keep: Array<Socket | Server> = [];
  let made: Record<string, number> = {};
  try {
    const report = await checkFdLeaks(
      async () => {
        made = Object.fromEntries(Object.entries(await open(keep)).map(([k, v]) => [k, fdOf(v)]));
      },
      { trackFds: true, settleMs: 50 },
    );
    const origin = (l: (typeof report.leaks)[number]): string => `${l.openedAt?.call} ${THIS_FILE.test(l.openedAt?.js?.[0] ?? '') ? 'here' : `at ${l.openedAt?.js?.[0]}`}`;
    return { calls: Object.fromEntries(report.leaks.map((l) => [l.fd, origin(l)])), made };
  } finally {
    // The sockets first: a server's close waits for its connections to end.
    for (const k of keep) if (k instanceof Socket) k.destroy();
    for (const k of keep) if (!(k instanceof Socket)) await new Promise((r) => k.close(r));
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }
}

/** A server, kept, that keeps the connections it accepts, and resolves once listening (listen as `listen` says). */
async function listening(keep: Array<Socket | Server>, listen: (s: Server) => void): Promise<{ server: Server; accepted: Promise<Socket> }> {
  let accept: (s: Socket) => void = () => undefined;
  const accepted = new Promise<Socket>((r) => (accept = r));
  const server = createServer((s) => {
    keep.push(s);
    accept(s);
  });
  keep.push(server);
  listen(server);
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return { server, accepted };
}

async function connected(keep: Array<Socket | Server>, socket: Socket): Promise<Socket> {
  keep.push(socket);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** The leaks are the three sockets, the listening one and the client's checked before the accepted one. */
function expectCalls(calls: Record<number, string>, made: Record<string, number>): void {
  expect(Object.keys(calls).map(Number).sort()).toEqual(Object.values(made).sort());
  expect({ server: calls[made['server']!], client: calls[made['client']!] }).toEqual({ server: 'net.Server.listen here', client: 'net.Socket.connect here' });
  expect(calls[made['accepted']!]).toBe('net.Server.listen (accepted connection) here');
}

describe.each(LISTENS)('a tracked check and a server that leaks: $how', ({ listen, reach }) => {
  test('names net.Server.listen for its socket, and for the connection it accepted', async () => {
    const { calls, made } = await leakedCalls(async (keep) => {
      const { server, accepted } = await listening(keep, listen);
      const client = await connected(keep, netConnect(reach(server)));
      return { server, client, accepted: await accepted };
    });
    expectCalls(calls, made);
  });
});

describe.each(CONNECTS)('a tracked check and a client that leaks: $how', ({ how, connect }) => {
  test('names net.Socket.connect for its socket', async () => {
    const path = join(dir, 'connect.sock');
    const { calls, made } = await leakedCalls(async (keep) => {
      const { server, accepted } = await listening(keep, (s) => (how.endsWith('(path)') ? s.listen(path) : s.listen(0)));
      // Each form reads the one it takes.
      const to = how.endsWith('(path)') ? { path, port: -1 } : { path: '', port: portOf(server) };
      const client = await connected(keep, connect(to));
      return { server, client, accepted: await accepted };
    });
    expectCalls(calls, made);
  });
});
