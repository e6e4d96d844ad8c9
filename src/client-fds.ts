/**
 * The fds a command holds as its client's: what CommandContext.closeClientFds
 * may close. An fd is the command's client's once the command adopted it
 * from its connection (adoptFd), or once it arrived on a socket of
 * fdbridge's that the command made (a DatagramSocket bound or opened while
 * the command's constructor or one of its methods ran, before the first
 * await: received fds are recorded as they are delivered), each with its
 * file (device and inode) and its number's install generation
 * (native.installGenerations) read then. closeClientFds takes them out;
 * any other number (one the command chose, another connection's or another
 * uid's fd, the program's or the process's own, one closed through
 * closeClientFds already) is refused here, and the addon refuses, as it
 * hands the list to the closer, a held number that no longer holds the
 * file it was held with, or whose install generation is another now: the
 * command closed its fd itself, and an fd fdbridge put there since (another
 * command's adopted or received fd, a copy given to it, a socket), of
 * whatever file, is not this command's.
 */
import { constants as osConstants } from 'node:os';

import { SystemError } from './errors';
import { fileAt, holdsFile } from './fd';
import { native, type FileKey } from './native';

export class ClientFds {
  /** Each fd held: its file as it was held (undefined: its number was free then, which holds nothing) and its number's install generation then. */
  readonly #held = new Map<number, { file: FileKey | undefined; install: number }>();

  /** `fds` are the command's client's now (adopted, or received by the command), each with its file and install generation now. */
  hold(fds: readonly number[]): void {
    const installs = native.installGenerations(fds);
    fds.forEach((fd, i) => this.#held.set(fd, { file: fileAt(fd), install: installs[i] as number }));
  }

  /**
   * Throws a SystemError EBADF naming the first of `fds` that is not held,
   * or whose number no longer holds the file it was held with; nothing is
   * taken then. Returns each one's install generation as it was held, for
   * the close to check (native.closeClientFds' `installs`).
   */
  check(fds: readonly number[]): number[] {
    return fds.map((fd) => {
      const held = this.#held.get(fd);
      if (held === undefined) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: the command did not adopt it from its connection nor receive it on a socket ` +
            'of its own, or closed it through closeClientFds already; nothing was closed',
        );
      }
      if (held.file === undefined || !holdsFile(fd, held.file)) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: its number no longer holds the file the command got with it ` +
            '(the command closed it itself); nothing was closed',
        );
      }
      return held.install;
    });
  }

  /** closeClientFds took `fds`: no longer held. */
  take(fds: readonly number[]): void {
    for (const fd of fds) this.#held.delete(fd);
  }
}

/** What a socket needs of the running command's ClientFds (another copy of this module's included). */
export interface CommandReceipts {
  hold(fds: readonly number[]): void;
}

/**
 * Where the command running now (synchronously) keeps its fds, if one runs:
 * on the global object under a registered symbol, so that a socket made by
 * another copy of the library than the host's (a command module loading
 * its own) records into the same command.
 */
const RUNNING = Symbol.for('fdbridge.runningCommandFds');
type WithRunning = { [RUNNING]?: CommandReceipts };

/** Runs `fn` as the command holding `held`: sockets made meanwhile record what they receive there. */
export function asCommand<T>(held: CommandReceipts, fn: () => T): T {
  const global = globalThis as WithRunning;
  const previous = global[RUNNING];
  global[RUNNING] = held;
  try {
    return fn();
  } finally {
    global[RUNNING] = previous;
  }
}

/** The fds of the command running now (asCommand), for a socket it makes; undefined outside any. */
export function runningCommandFds(): CommandReceipts | undefined {
  return (globalThis as WithRunning)[RUNNING];
}
