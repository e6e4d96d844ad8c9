/**
 * The fd ledger of a worker transport. A worker shares the process's fd
 * table, so handing it an fd needs no message at all: the client dup(2)s the
 * fd and marks the number in a SharedArrayBuffer that both threads see; the
 * worker's command adopts it by clearing the mark (compare-and-swap, so an fd
 * is adopted at most once). Whoever closes the connection sweeps the marks
 * that are left.
 */
import { readFileSync } from 'node:fs';

import type { FdLedger } from '../command';
import { HeldCopies } from '../fd';
import { fdList, native, type FdList } from '../native';

const GIVEN = 1;

function maxFdSlots(): number {
  try {
    // The kernel's ceiling for RLIMIT_NOFILE: no fd number can reach it.
    // Stryker disable next-line MethodExpression: `.trim()` left out: Number() ignores the newline around the digits as well
    return Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim()) || 1 << 20;
  } catch {
    return 1 << 20;
  }
}

export class SharedFdLedger implements FdLedger {
  readonly buffer: SharedArrayBuffer;
  /**
   * The closer owner its copies are given under (native.dupHigh's
   * `givenTo`), the same on both threads: whichever sweeps closes only the
   * copies still given to it (HeldCopies.closeGiven).
   */
  readonly owner: number;
  #view: Uint8Array;
  /** This thread's closes of what it swept. */
  readonly #held: HeldCopies;

  /** A new, empty ledger sized for this process's fd limit (it grows on demand). */
  static create(): SharedFdLedger {
    const max = maxFdSlots();
    const soft = native.getFdLimit()[0];
    // Stryker disable next-line ConditionalExpression: `Number.isFinite(soft)` forced true: an unlimited soft limit gives Math.max(Infinity, 1024), and Math.min takes max all the same
    const initial = Math.min(max, Number.isFinite(soft) ? Math.max(soft, 1024) : max);
    return new SharedFdLedger(new SharedArrayBuffer(initial, { maxByteLength: max }), native.newCloseOwner());
  }

  /** The same ledger (its buffer and owner), seen from another thread. */
  static attach(buffer: SharedArrayBuffer, owner: number): SharedFdLedger {
    return new SharedFdLedger(buffer, owner);
  }

  private constructor(buffer: SharedArrayBuffer, owner: number) {
    this.buffer = buffer;
    this.owner = owner;
    this.#held = new HeldCopies(owner);
    // A length-tracking view follows the buffer when it grows.
    this.#view = new Uint8Array(buffer);
  }

  /** A copy of `fd` made for the command (native.dupHigh: above the floor, given under this ledger's owner), marked here. */
  give(fd: number): number {
    const d = native.dupHigh(fd, this.owner);
    this.add(d);
    return d;
  }

  /** give() for every fd, all or none (native.dupAll: each above the highest in the list and at least `above`). */
  giveAll(fds: FdList, above: number): number[] {
    const out = native.dupAll(fdList(fds), above, this.owner);
    for (const d of out) this.add(d);
    return out;
  }

  add(fd: number): void {
    if (fd >= this.#view.length) {
      this.buffer.grow(Math.min(this.buffer.maxByteLength, Math.max(fd + 1, this.#view.length * 2)));
    }
    Atomics.store(this.#view, fd, GIVEN);
  }

  adopt(fd: number): boolean {
    // A copy the program closed behind fdbridge's back, whose number another
    // fd of fdbridge's took since, is not this command's to adopt.
    return fd < this.#view.length && Atomics.compareExchange(this.#view, fd, GIVEN, 0) === GIVEN && native.disownGiven(fd, this.owner);
  }

  sweep(): number {
    const swept: number[] = [];
    const view = this.#view;
    // Stryker disable next-line EqualityOperator: `fd <= view.length` reads one past the end: undefined, not GIVEN
    for (let fd = 0; fd < view.length; fd++) {
      // Stryker disable next-line ConditionalExpression: the plain read `view[fd] === GIVEN` forced true leaves it to the compare-and-swap, which decides the same (it is a cheap filter)
      if (view[fd] === GIVEN && Atomics.compareExchange(view, fd, GIVEN, 0) === GIVEN) swept.push(fd);
    }
    // One the program closed behind fdbridge's back is left alone (and its
    // registration ends), whatever file took its number since.
    this.#held.closeGiven(swept);
    return swept.length;
  }

  swept(): Promise<void> {
    return this.#held.settled();
  }

  get size(): number {
    let n = 0;
    // Stryker disable next-line EqualityOperator: `fd <= length` reads one past the end: undefined, not GIVEN
    for (let fd = 0; fd < this.#view.length; fd++) if (this.#view[fd] === GIVEN) n++;
    return n;
  }
}
