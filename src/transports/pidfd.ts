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
 * pulled or that the pull failed (the far side answers so once nothing of
 * it was kept, and never pulls that request again); a pin whose request
 * failed unanswered (close() gave up on it) stays open until the far side
 * can no longer pull it: a number closed too soon could name another file
 * by then. That is this transport's FdDelivery (PulledByNumber).
 *
 * The program can close a pin's number itself (a bug) and open another
 * file there before the pull. So the GETFD names each pin's file beside
 * its number (device and inode, read as the pin was made) and the far side
 * checks each pull against it: another file is not kept, and the request
 * fails with EBADF. Each pin is closed only while its number still holds
 * it (HeldCopies.closeGiven): the program's file there is let go of, and
 * the leak check names the pin as closed behind fdbridge's back.
 */
import type { ChildProcess } from 'node:child_process';

import { waitForExit } from '../child-process';
import type { ConnectOptions } from '../connection';
import { CLOSES_GIVE_UP_MS, type HeldCopies } from '../fd';
import type { ReadyPayload } from '../protocol';
import type { UnixSocket } from '../socket';
import { ChildConnection, spawnCommandProcess } from './child';
import type { FdDelivery, HelloRequest } from './socket-connection';

/**
 * The HELLO of a pidfd connection: the far side proves it can pull our fds
 * by pulling one at once, our socket's own fd, which is certainly open here.
 */
function pidfdHello(socket: UnixSocket): HelloRequest {
  return { pull: 'pidfd', probeFd: socket.fd };
}

/**
 * The fds of a duplication named by number, for the command's process to
 * pull. The pins of a request that failed close at once when the far side
 * answered that it failed, or has ended already; those of a request failed
 * unanswered linger until that process has exited (it may read requests
 * after our socket is gone, and pulls what it reads). Closed on the
 * background closer (HeldCopies): a pin can be its file's last reference.
 */
class PulledByNumber implements FdDelivery {
  readonly byNumber = true;
  readonly syncUnsupported =
    'dupFileDescriptorSync is not available on the pidfd transport: the far side pulls the fd while this side waits in its event loop; use dupFileDescriptor';
  readonly #child: ChildProcess;
  /** The peer has ended: it can pull no fd any more, so failed requests' pins close at once. */
  #peerEnded = false;
  /** Pins the far side may still pull (see #linger). */
  #lingering: number[] = [];
  /** Settles once the pins lingering so far are handed to their closer. */
  #handedOver: Promise<void> = Promise.resolve();

  constructor(child: ChildProcess) {
    this.#child = child;
  }

  unsettled(pins: number[], held: HeldCopies, answered: boolean): void {
    if (answered || this.#peerEnded) held.closeGiven(pins);
    else this.#linger(pins, held);
  }

  peerEnded(): void {
    this.#peerEnded = true;
  }

  released(): Promise<void> {
    // A process that outlives its SIGKILL (the caller waited for that) holds nobody up for good.
    return Promise.race([this.#handedOver, waitForExit(this.#child, CLOSES_GIVE_UP_MS).then(() => undefined)]);
  }

  /**
   * Pins of requests the far side may still read (it reads what it was sent
   * even after this side gave up on the replies): open until it can no
   * longer pull.
   */
  #linger(pins: number[], held: HeldCopies): void {
    // Stryker disable next-line ConditionalExpression: forced true, every failed request sets #handedOver anew; each waits for the same exit, the first to run closes every pin lingering by then and the later ones none, and released() waits for the last of them
    if (this.#lingering.length === 0) {
      // Once the command's process has exited, nothing pulls from this process any more.
      this.#handedOver = waitForExit(this.#child).then(() => void held.closeGiven(this.#lingering.splice(0)));
    }
    this.#lingering.push(...pins);
  }
}

export class PidfdConnection extends ChildConnection {
  /** Spawns the command's process and has it prove that it can pull this process's fds. */
  static override async open(options: ConnectOptions): Promise<PidfdConnection> {
    const { socket, child, ready } = await spawnCommandProcess(options, 'pidfd', pidfdHello);
    return new PidfdConnection(socket, child, ready, options.onCommandClosed);
  }

  private constructor(socket: UnixSocket, child: ChildProcess, ready: ReadyPayload, onCommandClosed: ConnectOptions['onCommandClosed']) {
    super(socket, child, ready, onCommandClosed, 'pidfd', new PulledByNumber(child));
  }
}
