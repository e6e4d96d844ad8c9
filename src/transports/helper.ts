/**
 * helper: connect to a daemon someone started with
 * `npx fdbridge helper --socket <path>`. The same frames as the child
 * transport, over a connected SEQPACKET socket.
 */
import type { ConnectOptions } from '../connection';
import { normalizeCommandSpec } from '../command';
import { SystemError, type PeerExit } from '../errors';
import { FRAME_SOCKET_OPTIONS } from '../protocol';
import { UnixSocket } from '../socket';
import { defaultHelperSocketPath, helperAddress } from './helper-daemon';
import { handshake, SocketConnection } from './socket-connection';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function openHelper(options: ConnectOptions): Promise<SocketConnection> {
  const command = normalizeCommandSpec(options.command);
  const path = options.socketPath ?? defaultHelperSocketPath();
  let socket: UnixSocket;
  try {
    socket = await UnixSocket.connect(helperAddress(path), {
      kind: 'seqpacket',
      ...FRAME_SOCKET_OPTIONS,
      sendQueueLimit: options.sendQueueLimit,
    });
  } catch (err) {
    if (err instanceof SystemError && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) {
      throw new SystemError(
        err.errno,
        'connect',
        `connect failed: no helper daemon is listening at ${path} (${err.code}); start one with \`npx fdbridge helper --socket ${path}\``,
        { cause: err },
      );
    }
    throw err;
  }
  try {
    const peer = socket.peerCredentials();
    const ready = await handshake(socket, command, options.timeoutMs ?? 10_000, () => `the helper daemon at ${path}`);
    const probe = async (): Promise<PeerExit> => {
      // Not our child: no exit status to read. Tell "exited" from "closed
      // the connection" by whether the pid is still there shortly after.
      for (let i = 0; i < 10 && isAlive(peer.pid); i++) await new Promise((r) => setTimeout(r, 20));
      return {
        transport: 'helper',
        pid: peer.pid,
        exitCode: null,
        signal: null,
        detail: isAlive(peer.pid) ? 'closed the connection' : 'exited',
      };
    };
    return new SocketConnection(socket, 'helper', ready, probe, options.onCommandClosed);
  } catch (err) {
    socket.close();
    throw err;
  }
}
