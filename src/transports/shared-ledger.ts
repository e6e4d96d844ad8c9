/**
 * The fd ledger of a worker transport. A worker shares the process's fd
 * table, so handing it an fd needs no message at all: the client dup(2)s the
 * fd and marks the number in a SharedArrayBuffer that both threads see; the
 * worker's command adopts it by clearing the mark (compare-and-swap, so an fd
 * is adopted at most once). Whoever closes the connection sweeps the marks
 * that are left.
 */
import { readFileSync } from 'node:fs';

import { native } from '../native';
import { GivenCopiesLedger } from './given-copies';

const GIVEN = 1;

/** The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open): no fd number reaches it. */
export function maxFdSlots(): number {
  try {
    // The kernel's ceiling for RLIMIT_NOFILE: no fd number can reach it.
    // Stryker disable next-line MethodExpression: `.trim()` left out: Number() ignores the newline around the digits as well
    return Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim()) || 1 << 20;
  } catch {
    return 1 << 20;
  }
}

/**
 * Grows `buffer`, a growable SharedArrayBuffer that threads share, to at
 * least `bytes` (at most its maxByteLength): to twice its length if that is
 * more, so that numbers rising one by one grow it rarely. Another thread
 * may grow it between this one's look at its length and its grow, further
 * than this one asks; grow then throws a RangeError (it never shrinks),
 * which is no failure when the buffer is as large as asked by now: looked
 * at again, and grown again while it is still too small. Any other failure
 * is thrown.
 */
export function growAtLeast(buffer: SharedArrayBuffer, bytes: number): void {
  const wanted = Math.min(buffer.maxByteLength, bytes);
  while (buffer.byteLength < wanted) {
    const to = Math.min(buffer.maxByteLength, Math.max(wanted, 2 * buffer.byteLength));
    try {
      buffer.grow(to);
    } catch (err) {
      // Grown past `to` by another thread meanwhile: the loop looks again.
      if (!(err instanceof RangeError) || buffer.byteLength < to) throw err;
    }
  }
}

export class SharedFdLedger extends GivenCopiesLedger {
  readonly buffer: SharedArrayBuffer;
  #view: Uint8Array;

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

  /**
   * `owner`: the closer owner its copies are given under, the same on both
   * threads: whichever sweeps closes only the copies still given to it.
   */
  private constructor(buffer: SharedArrayBuffer, owner: number) {
    super(owner);
    this.buffer = buffer;
    // A length-tracking view follows the buffer when it grows.
    this.#view = new Uint8Array(buffer);
  }

  add(fd: number): void {
    if (fd >= this.#view.length) growAtLeast(this.buffer, fd + 1);
    Atomics.store(this.#view, fd, GIVEN);
  }

  /** Clears the mark (compare-and-swap: one thread takes it). */
  protected take(fd: number): boolean {
    return fd < this.#view.length && Atomics.compareExchange(this.#view, fd, GIVEN, 0) === GIVEN;
  }

  protected holdsGiven(fd: number): boolean {
    return fd < this.#view.length && Atomics.load(this.#view, fd) === GIVEN;
  }

  protected takeAll(): number[] {
    const taken: number[] = [];
    const view = this.#view;
    // Stryker disable next-line EqualityOperator: `fd <= view.length` reads one past the end: undefined, not GIVEN
    for (let fd = 0; fd < view.length; fd++) {
      // Stryker disable next-line ConditionalExpression: the plain read `view[fd] === GIVEN` forced true leaves it to the compare-and-swap, which decides the same (it is a cheap filter)
      if (view[fd] === GIVEN && Atomics.compareExchange(view, fd, GIVEN, 0) === GIVEN) taken.push(fd);
    }
    return taken;
  }

  get size(): number {
    let n = 0;
    // Stryker disable next-line EqualityOperator: `fd <= length` reads one past the end: undefined, not GIVEN
    for (let fd = 0; fd < this.#view.length; fd++) if (this.#view[fd] === GIVEN) n++;
    return n;
  }
}
