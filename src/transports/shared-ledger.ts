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
import { HeldCopies, isFdOpen } from '../fd';
import { native } from '../native';

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
  #view: Uint8Array;
  /** This thread's closes of what it swept. */
  readonly #held = new HeldCopies();

  /** A new, empty ledger sized for this process's fd limit (it grows on demand). */
  static create(): SharedFdLedger {
    const max = maxFdSlots();
    const soft = native.getFdLimit()[0];
    // Stryker disable next-line ConditionalExpression: `Number.isFinite(soft)` forced true: an unlimited soft limit gives Math.max(Infinity, 1024), and Math.min takes max all the same
    const initial = Math.min(max, Number.isFinite(soft) ? Math.max(soft, 1024) : max);
    return new SharedFdLedger(new SharedArrayBuffer(initial, { maxByteLength: max }));
  }

  /** The same ledger, seen from another thread. */
  static attach(buffer: SharedArrayBuffer): SharedFdLedger {
    return new SharedFdLedger(buffer);
  }

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    // A length-tracking view follows the buffer when it grows.
    this.#view = new Uint8Array(buffer);
  }

  add(fd: number): void {
    if (fd >= this.#view.length) {
      this.buffer.grow(Math.min(this.buffer.maxByteLength, Math.max(fd + 1, this.#view.length * 2)));
    }
    Atomics.store(this.#view, fd, GIVEN);
  }

  adopt(fd: number): boolean {
    return fd < this.#view.length && Atomics.compareExchange(this.#view, fd, GIVEN, 0) === GIVEN;
  }

  sweep(): number {
    let swept = 0;
    const open: number[] = [];
    const view = this.#view;
    // Stryker disable next-line EqualityOperator: `fd <= view.length` reads one past the end: undefined, not GIVEN
    for (let fd = 0; fd < view.length; fd++) {
      // Stryker disable next-line ConditionalExpression: the plain read `view[fd] === GIVEN` forced true leaves it to the compare-and-swap, which decides the same (it is a cheap filter)
      if (view[fd] === GIVEN && Atomics.compareExchange(view, fd, GIVEN, 0) === GIVEN) {
        // One closed by someone else already is left alone: its number may
        // be another file's by the time the closer gets to it.
        // Stryker disable next-line ConditionalExpression: `isFdOpen(fd)` forced true is not equivalent: it hands a free number to the closer, harmful only if the number is reused before a closer thread takes the batch, which no test can hold back
        if (isFdOpen(fd)) open.push(fd);
        swept++;
      }
    }
    this.#held.close(open);
    return swept;
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
