/**
 * The ledgers of the copies a connection gives a command in this process
 * (direct, worker): each copy is made above the fd floor (native.dupHigh,
 * dupAll) and registered as given under the ledger's closer owner with its
 * file, so that what the ledger adopts or closes is that copy alone: one the
 * program closed behind fdbridge's back is neither adopted nor closed,
 * whatever file took its number since. What the command adopted is kept
 * with that file too, so that closeClientFds closes an adopted fd only
 * while its number holds it (not another command's adopted fd or the
 * program's file that took the number once the command closed its own).
 */
import type { FdLedger } from '../command';
import { AdoptedFiles, closesSettled, HeldCopies } from '../fd';
import { native, type FdList, type FileKey } from '../native';
import { dupAll } from './dup-above-floor';

/**
 * What every ledger of given copies does with them: the direct command's
 * (GivenCopySet) and the worker's (SharedFdLedger, shared by both
 * threads). A subclass keeps the numbers given and not yet adopted (add,
 * take, takeAll, size).
 */
export abstract class GivenCopiesLedger implements FdLedger {
  /** The closes of what it swept or released, under the owner its copies are given to. */
  readonly #held: HeldCopies;
  /**
   * The fds the command adopted (on this ledger's side: the command's
   * thread), each with the file its copy was made with; forgotten as
   * closeClientFds takes them.
   */
  readonly #adopted = new AdoptedFiles();

  /** `owner`: the closer owner to give copies under (another thread's ledger's: HeldCopies); by default a new one. */
  protected constructor(owner?: number) {
    this.#held = new HeldCopies(owner);
  }

  /**
   * The closer owner its copies are given under (native.dupHigh's
   * `givenTo`): the ledger closes only the copies still given to it
   * (HeldCopies.closeGiven).
   */
  get owner(): number {
    return this.#held.owner;
  }

  abstract add(fd: number): void;
  /** Forgets `fd`: true when it was given (add) and not yet adopted or forgotten. */
  protected abstract take(fd: number): boolean;
  /** Whether `fd` was given (add) and not yet adopted or forgotten. */
  protected abstract holdsGiven(fd: number): boolean;
  /** Forgets every fd given and not yet adopted, and returns them. */
  protected abstract takeAll(): number[];
  abstract get size(): number;

  /** A copy of `fd` made for the command (native.dupHigh: above the floor, given under this ledger's owner), held here. */
  give(fd: number): number {
    const d = native.dupHigh(fd, this.owner);
    this.add(d);
    return d;
  }

  /** give() for every fd, all or none (dupAll: each above the highest in the list and at least `above`). */
  giveAll(fds: FdList, above: number): number[] {
    const out = dupAll(fds, above, this.owner);
    for (const d of out) this.add(d);
    return out;
  }

  /** Takes the copy out of fdbridge's own fds too (native.disownGiven), and keeps its file for closeClientFds. */
  adopt(fd: number): boolean {
    // A copy the program closed behind fdbridge's back is not this
    // command's to adopt, whatever its number holds now (nothing, another
    // fd of fdbridge's, another file): it is forgotten here, nothing closed.
    if (!this.take(fd)) return false;
    const file = native.disownGiven(fd, this.owner);
    if (file === false) return false;
    this.#adopted.adopted(fd, file);
    return true;
  }

  /**
   * The file each of `fds` was adopted with (closeClientFds refuses another
   * there), undefined for one not adopted here. A copy still given and not
   * adopted is not the client's to close (SystemError EBADF), even once the
   * command closed it itself and another command's adopted fd, which
   * fdbridge no longer holds, took the number.
   */
  clientFiles(fds: readonly number[]): Array<FileKey | undefined> {
    return this.#adopted.expected(fds, (fd) => this.holdsGiven(fd));
  }

  closing(fds: readonly number[]): void {
    this.#adopted.forget(fds);
  }

  /**
   * Closes those of `fds` still given and not adopted (copies of a batch
   * the caller does not get after all), as the sweep does: each only while
   * its number still holds that copy, so that a file the program opened at
   * the number of one it closed behind fdbridge's back stays open. Resolves
   * once they are closed (or their closes given up on, closesSettled),
   * whatever closes this ledger handed over before are still running.
   */
  release(fds: readonly number[]): Promise<void> {
    return closesSettled([this.#held.closeGiven(fds.filter((fd) => this.take(fd)))]);
  }

  sweep(): number {
    const fds = this.takeAll();
    // One the program closed behind fdbridge's back is left alone (and its
    // registration ends), whatever file took its number since.
    this.#held.closeGiven(fds);
    return fds.length;
  }

  swept(): Promise<void> {
    return this.#held.settled();
  }
}

/** A direct command's ledger: the copies given to it, in a Set. */
export class GivenCopySet extends GivenCopiesLedger {
  readonly #fds = new Set<number>();

  constructor() {
    super();
  }

  add(fd: number): void {
    this.#fds.add(fd);
  }

  protected take(fd: number): boolean {
    return this.#fds.delete(fd);
  }

  protected holdsGiven(fd: number): boolean {
    return this.#fds.has(fd);
  }

  protected takeAll(): number[] {
    const fds = [...this.#fds];
    this.#fds.clear();
    return fds;
  }

  get size(): number {
    return this.#fds.size;
  }
}
