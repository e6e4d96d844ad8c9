/**
 * The fds a command holds as its client's: what CommandContext.closeClientFds
 * may close. An fd is the command's client's once the command adopted it
 * from its connection (adoptFd), or once it arrived on a socket of
 * fdbridge's that the command made (a DatagramSocket bound or opened while
 * the command's constructor or one of its methods ran, before the first
 * await: received fds are recorded as they are delivered, and only those
 * the addon says such a socket received, ClientFds.receipts), each with
 * its file (device and inode) and its number's install generation read
 * then. closeClientFds takes them out;
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

  /**
   * What the sockets the command makes are given (asCommand): the receipt
   * tag they record what they receive with, and the hold that takes, of
   * the numbers it is given, only those the addon says a socket with that
   * tag received and nobody claimed yet (native.claimReceipts). It is on
   * the global object while the command runs, where any code of the process
   * can reach it: so it can hold nothing else (a number the caller chose,
   * another command's adopted fd or receipt, the program's own fd, one of
   * fdbridge's own), and each receipt once.
   */
  readonly receipts: CommandReceipts;

  constructor() {
    const tag = native.newReceiptTag();
    const held = this.#held;
    this.receipts = Object.freeze({
      tag,
      hold(fds: readonly number[]): void {
        const installs = native.claimReceipts(fds, tag);
        fds.forEach((fd, i) => {
          const install = installs[i] as number;
          if (install !== 0) held.set(fd, { file: fileAt(fd), install });
        });
      },
    });
  }

  /** `fds`, adopted from the connection (adoptFd), are the command's client's now, each with its file and install generation now. */
  holdAdopted(fds: readonly number[]): void {
    const installs = native.installGenerations(fds);
    fds.forEach((fd, i) => this.#held.set(fd, { file: fileAt(fd), install: installs[i] as number }));
  }

  /**
   * Throws a SystemError EBADF naming the first of `fds` that is not held,
   * or whose number no longer holds the file it was held with (its `fd`, and
   * its `index` in `fds`); nothing is taken then. Returns each one's install
   * generation as it was held, for the close to check
   * (native.closeClientFds' `installs`).
   */
  check(fds: readonly number[]): number[] {
    return fds.map((fd, index) => {
      const held = this.#held.get(fd);
      if (held === undefined) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: the command did not adopt it from its connection nor receive it on a socket ` +
            'of its own, or closed it through closeClientFds already; nothing was closed',
          { entry: { index, fd } },
        );
      }
      if (held.file === undefined || !holdsFile(fd, held.file)) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: its number no longer holds the file the command got with it ` +
            '(the command closed it itself); nothing was closed',
          { entry: { index, fd } },
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

/** What a socket needs of the running command's ClientFds (another copy of this module's included): ClientFds.receipts. */
export interface CommandReceipts {
  /** The receipt tag the socket records what it receives with (native recordReceiptsFor). */
  readonly tag: number;
  /** Holds, of `fds`, those a socket with `tag` received and nobody claimed yet as the command's client's. */
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

/**
 * The receipts of the command running now (asCommand), for a socket it
 * makes; undefined outside any, and for whatever else is there (any code
 * can set the global object's property: a value without a receipt tag and
 * a hold is nobody's receipts).
 */
export function runningCommandFds(): CommandReceipts | undefined {
  const running = (globalThis as WithRunning)[RUNNING];
  if (typeof running !== 'object' || running === null) return undefined;
  return Number.isSafeInteger(running.tag) && running.tag > 0 && typeof running.hold === 'function' ? running : undefined;
}
