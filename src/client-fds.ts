/**
 * The fds a command holds as its client's: what CommandContext.closeClientFds
 * may close. An fd is the command's client's once the command adopted it
 * from its connection (adoptFd), or once it arrived on a socket of
 * fdbridge's that the command made (a DatagramSocket bound or opened while
 * the command's constructor or one of its methods ran, before the first
 * await: received fds are recorded as they are delivered), each with its
 * file (device and inode) read then. closeClientFds takes them out; any
 * other number (one the command chose, another connection's or another
 * uid's fd, the program's or the process's own, one closed through
 * closeClientFds already) is refused, and so is a held number that no
 * longer holds the file it was held with (the command closed it itself),
 * or that another command holds now: a number is held by one command at a
 * time, process-wide (clientFdHolders), so that a command that closed what it
 * held itself cannot close another command's fd that took the number, even
 * one of the same file (/dev/null given to both) that a file check passes.
 */
import { constants as osConstants } from 'node:os';

import { SystemError } from './errors';
import { fileAt, holdsFile } from './fd';
import type { FileKey } from './native';
import { growAtLeast, maxFdSlots } from './transports/shared-ledger';

/**
 * Which command holds each fd number now, process-wide: Int32 0 is the last
 * holder id given out, Int32 1 + fd the id of the ClientFds that holds fd
 * (0: none). A command's hold of a number (an adoption, a receipt) is of a
 * new fd there, so any other command that held the number before had
 * closed its fd itself: from then on the number is not that one's. One
 * buffer per process: on the global object under a registered symbol (as
 * RUNNING, for another copy of the library in the thread), and handed to
 * the worker transport's threads (workerData), which share the fd table.
 */
const STAMPS = Symbol.for('fdbridge.clientFdHolders');
type WithStamps = { [STAMPS]?: SharedArrayBuffer };

/** This process's holder stamps (made on first use, in the thread that runs first). */
export function clientFdHolders(): SharedArrayBuffer {
  const global = globalThis as WithStamps;
  global[STAMPS] ??= new SharedArrayBuffer(4 * (1 + 1024), { maxByteLength: 4 * (1 + maxFdSlots()) });
  return global[STAMPS];
}

/** In a thread fdbridge started (a worker connection's): the stamps of the thread that started it, before any command is held. */
export function attachClientFdHolders(buffer: SharedArrayBuffer): void {
  (globalThis as WithStamps)[STAMPS] = buffer;
}

export class ClientFds {
  /** Each fd held, with its file as it was held (undefined: its number was free then, which holds nothing). */
  readonly #files = new Map<number, FileKey | undefined>();
  /** Who holds each number (clientFdHolders), a length-tracking view: it follows the buffer as it grows. */
  readonly #stamps = new Int32Array(clientFdHolders());
  /** This record's stamp. */
  readonly #id = Atomics.add(this.#stamps, 0, 1) + 1;

  /**
   * `fds` are the command's client's now (adopted, or received by the
   * command), each with its file now; no other command holds their numbers
   * from now on.
   */
  hold(fds: readonly number[]): void {
    this.makeRoom(fds);
    for (const fd of fds) {
      Atomics.store(this.#stamps, 1 + fd, this.#id);
      this.#files.set(fd, fileAt(fd));
    }
  }

  /**
   * Makes room for `fds`' stamps, so that hold(fds) throws nothing: before
   * an adoption, which cannot be undone once made (a RangeError after it
   * would leave the adopted fd open and nobody's).
   */
  makeRoom(fds: readonly number[]): void {
    const top = Math.max(-1, ...fds);
    if (1 + top >= this.#stamps.length) growAtLeast(this.#stamps.buffer as SharedArrayBuffer, 4 * (2 + top));
  }

  /**
   * Throws a SystemError EBADF naming the first of `fds` that is not held,
   * whose number another command holds now, or whose number no longer
   * holds the file it was held with; nothing is taken then.
   */
  check(fds: readonly number[]): void {
    for (const fd of fds) {
      if (!this.#files.has(fd) || Atomics.load(this.#stamps, 1 + fd) !== this.#id) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: the command did not adopt it from its connection nor receive it on a socket ` +
            'of its own, or closed it through closeClientFds already, or another command holds the number now; nothing was closed',
        );
      }
      const held = this.#files.get(fd);
      if (held === undefined || !holdsFile(fd, held)) {
        throw new SystemError(
          osConstants.errno.EBADF,
          'closeClientFds',
          `closeClientFds: fd ${fd} is not the client's to close: its number no longer holds the file the command got with it ` +
            '(the command closed it itself); nothing was closed',
        );
      }
    }
  }

  /** closeClientFds took `fds`: no longer held. */
  take(fds: readonly number[]): void {
    for (const fd of fds) {
      this.#files.delete(fd);
      Atomics.compareExchange(this.#stamps, 1 + fd, this.#id, 0);
    }
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
