/**
 * A direct command's ledger: the copies its connection gives it, each made
 * above the fd floor and registered as given under the ledger's closer
 * owner with its file, so that what the ledger adopts or closes is that
 * copy alone: one the program closed behind fdbridge's back is neither
 * adopted nor closed, whatever file took its number since.
 */
import type { FdLedger } from '../command';
import { HeldCopies } from '../fd';
import { fdList, native, type FdList } from '../native';

export class GivenCopySet implements FdLedger {
  #fds = new Set<number>();
  /** The closes of what it swept, under the owner its copies are given to. */
  readonly #held = new HeldCopies();

  add(fd: number): void {
    this.#fds.add(fd);
  }

  /** A copy of `fd` made for the command (native.dupHigh: above the floor, given under this ledger's owner), held here. */
  give(fd: number): number {
    const d = native.dupHigh(fd, this.#held.owner);
    this.#fds.add(d);
    return d;
  }

  /** give() for every fd, all or none (native.dupAll: each above the highest in the list and at least `above`). */
  giveAll(fds: FdList, above: number): number[] {
    const out = native.dupAll(fdList(fds), above, this.#held.owner);
    for (const d of out) this.#fds.add(d);
    return out;
  }

  adopt(fd: number): boolean {
    // A copy the program closed behind fdbridge's back, whose number another
    // fd of fdbridge's took since, is not this command's to adopt.
    return this.#fds.delete(fd) && native.disownGiven(fd, this.#held.owner);
  }

  sweep(): number {
    const fds = [...this.#fds];
    this.#fds.clear();
    // One the program closed behind fdbridge's back is left alone (and its
    // registration ends), whatever file took its number since.
    this.#held.closeGiven(fds);
    return fds.length;
  }

  swept(): Promise<void> {
    return this.#held.settled();
  }

  get size(): number {
    return this.#fds.size;
  }
}
