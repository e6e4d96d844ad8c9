/**
 * Sockets that must never receive fds refuse them (SO_PASSRIGHTS=0, Linux
 * 6.16+): the client's side of child, helper and pidfd connections (the
 * command's side answers with fd numbers, never fds) and the command's side
 * of a pidfd connection (it pulls fds with pidfd_getfd). On this kernel a
 * hostile peer's SCM_RIGHTS send fails with EPERM in the sender; where the
 * kernel lacks the option, whatever arrives is closed, counted in the stats
 * and fails that connection (the fallback is exercised by the ENOPROTOOPT
 * tests in client-side.test.ts and command-side.test.ts).
 */
import { join } from 'node:path';

import { closeFd, connect, HelperDaemon, makeMemfd, openFdTable, ProtocolError, PROBE_COMMAND, type Connection } from '../../src';
import { packageRoot } from '../../src/paths';
import { FrameType } from '../../src/protocol';
import { sendNow } from '../../src/testing';
import { CHILD_SOCKET_FD } from '../../src/transports/child';
import type { SocketConnection } from '../../src/transports/socket-connection';
import { kernelHasPassRights, rawFrame } from '../../scenarios/support/hostile';

const HOSTILE_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'hostile-command.js'), export: 'HostileCommand' };
const refuses = kernelHasPassRights();

describe.each(['child', 'pidfd'] as const)('%s: the client side refuses fds from the command side', (transport) => {
  test(`a command that sends fds over its own socket ${refuses ? 'gets EPERM; the connection is unharmed' : 'fails the connection, the fds closed and counted'}`, async () => {
    const conn = (await connect(transport, { command: HOSTILE_COMMAND })) as Connection & SocketConnection;
    try {
      expect(conn.stats.refusesFds).toBe(refuses);
      const outcome = await conn.call<string>('sendFds', CHILD_SOCKET_FD, 253);
      if (refuses) {
        expect(outcome).toBe('EPERM');
        expect(await conn.call('sendFds', CHILD_SOCKET_FD, 1)).toBe('EPERM');
        expect(conn.stats).toEqual({ unexpectedFds: 0, protocolErrors: 0, refusesFds: true });
      } else {
        // Not reachable on this kernel (6.18); kept for older ones.
        expect(outcome).toBe('sent');
        await expect(conn.call('sendFds', CHILD_SOCKET_FD, 1)).rejects.toBeInstanceOf(ProtocolError);
        expect(conn.stats.unexpectedFds).toBe(253);
      }
    } finally {
      await conn.close();
    }
  });
});

test('pidfd: the command side refuses fds too (a hostile client injecting a DUP with fds gets EPERM)', async () => {
  if (!refuses) return; // the fallback is covered in command-side.test.ts
  const before = openFdTable();
  const conn = await connect('pidfd', { command: PROBE_COMMAND });
  const memfd = makeMemfd('injected');
  try {
    // The connection's socket is the one socket this process gained.
    const sockets = [...openFdTable()].filter(([fd, target]) => !before.has(fd) && target.startsWith('socket:'));
    expect(sockets).toHaveLength(1);
    const [clientSocket] = sockets[0] as [number, string];
    expect(() => sendNow(clientSocket, rawFrame(FrameType.DUP, 77), [memfd])).toThrow(expect.objectContaining({ code: 'EPERM' }));
    // Nothing got through, the connection is intact.
    const remote = await conn.dupFileDescriptor(memfd);
    expect(await conn.call('identities', [remote])).toHaveLength(1);
  } finally {
    await conn.close();
    closeFd(memfd);
  }
});

test('helper: the client side refuses fds (the SO_PASSRIGHTS check on a connected, not socketpair, socket)', async () => {
  // A real helper never sends fds; a fake one is in client-side.test.ts.
  // Here: the option is on for a connection to the real daemon.
  const daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@fdbridge-test-${process.pid}-passrights` });
  try {
    const conn = (await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath })) as Connection & SocketConnection;
    expect(conn.stats.refusesFds).toBe(refuses);
    expect(await conn.call('echo', 1)).toBe(1);
    await conn.close();
  } finally {
    await daemon.close();
  }
});
