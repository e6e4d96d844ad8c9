/**
 * pidfd: like child, the client spawns the command's process, but no fd
 * travels over the socket. A duplication sends the fds' *numbers* (a GETFD
 * frame) and the command's side pulls each one out of this process with
 * pidfd_getfd(2) (its side: pidfd-intake.ts). The HELLO asks for this and
 * names a probe fd, which the far side pulls at once to prove that the
 * kernel (Linux 5.6+) and the permissions (ptrace access to this process)
 * allow it; otherwise connect() rejects with UnsupportedError.
 *
 * Because the far side pulls by number, the client pins every fd it names
 * (a dup above the floor, see SocketConnection) until the reply says it was
 * pulled, and a pin whose request failed stays open until the far side can
 * no longer pull it: a number closed too soon could name another file by
 * then.
 */
import type { ChildProcess } from 'node:child_process';

import type { ConnectOptions } from '../connection';
import type { ReadyPayload } from '../protocol';
import type { UnixSocket } from '../socket';
import { ChildConnection, spawnCommandProcess } from './child';

export class PidfdConnection extends ChildConnection {
  /** Spawns the command's process and has it prove that it can pull this process's fds. */
  static override async open(options: ConnectOptions): Promise<PidfdConnection> {
    const { socket, child, ready } = await spawnCommandProcess(options, 'pidfd', 'pidfd');
    return new PidfdConnection(socket, child, ready, options.onCommandClosed);
  }

  private constructor(socket: UnixSocket, child: ChildProcess, ready: ReadyPayload, onCommandClosed: ConnectOptions['onCommandClosed']) {
    super(socket, child, ready, onCommandClosed, 'pidfd');
  }

  /** The far side pulls fds until its process has exited (it may read requests after our socket is gone). */
  protected override peerCannotPull(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => child.once('exit', () => resolve()));
  }
}
