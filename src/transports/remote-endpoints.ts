/**
 * The local ends of relayed streams that JavaScript reads and writes, on
 * each side of the remote transport. (A pipe end or a stream socket is
 * pumped by the channel itself: see RelayStream's pumped end.)
 *
 * - FileSink / FileSource: a regular file or a character device, written or
 *   read on the thread pool (they ignore O_NONBLOCK).
 * - MemorySink: the remote side's copy of a read-only file (a memfd).
 */
import { read, write, writeSync } from 'node:fs';

import { closeOwnFd } from '../fd';
import type { RelaySink, RelaySource, RelayStream } from './remote-channel';

const NOOP = (): void => undefined;

/** An endpoint delivers to its stream once attached; before that nothing flows. */
export interface Attachable {
  attach(stream: RelayStream): void;
}

/**
 * Runs one thread-pool operation on `fd` at a time and closes `fd` only once
 * none is running: a close while a write is in flight could let the fd
 * number be reused and the write land in another file.
 */
class PoolFd {
  readonly fd: number;
  #busy = false;
  #closeWanted = false;
  #closed = false;

  constructor(fd: number) {
    this.fd = fd;
  }

  begin(): boolean {
    if (this.#closeWanted) return false;
    this.#busy = true;
    return true;
  }

  done(): void {
    this.#busy = false;
    if (this.#closeWanted) this.#close();
  }

  close(): void {
    this.#closeWanted = true;
    if (!this.#busy) this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeOwnFd(this.fd);
  }
}

/**
 * Writes chunks in order through a regular file's or device's own offset
 * (O_APPEND: at its end). Owns `fd`. One write is on the thread pool at a
 * time: two in flight with no position could land in either order.
 */
export class FileSink implements RelaySink, Attachable {
  readonly prompt = true;
  readonly #fd: PoolFd;
  readonly #queue: Array<{ chunk: Buffer; done: (err: Error | null) => void }> = [];
  #writing = false;

  constructor(fd: number) {
    this.#fd = new PoolFd(fd);
  }

  attach(): void {}

  write(chunk: Buffer, done: (err: Error | null) => void): void {
    this.#queue.push({ chunk, done });
    if (!this.#writing) this.#next();
  }

  #next(): void {
    const job = this.#queue.shift();
    if (job === undefined) {
      this.#writing = false;
      return;
    }
    this.#writing = true;
    const { chunk, done } = job;
    const finish = (err: Error | null): void => {
      done(err);
      this.#next();
    };
    const step = (offset: number): void => {
      if (offset >= chunk.length) {
        finish(null);
        return;
      }
      if (!this.#fd.begin()) {
        // Stryker disable next-line StringLiteral: RelayStream.data reads only that the write failed (it sends STOP); the message goes nowhere
        finish(new Error('the relay endpoint is closed'));
        return;
      }
      write(this.#fd.fd, chunk, offset, chunk.length - offset, null, (err, n) => {
        this.#fd.done();
        if (err && err.code === 'EAGAIN') {
          // A terminal or device shared with a non-blocking user: wait, then retry.
          setTimeout(() => step(offset), 1);
          return;
        }
        if (err) finish(err);
        else step(offset + n);
      });
    };
    step(0);
  }

  end(done: () => void): void {
    done();
  }

  destroy(): void {
    this.#fd.close();
  }
}

/**
 * Reads a regular file from its start to its end of file, on the thread
 * pool, at most `limit` bytes: a file that has more (it grew while it was
 * read) ends there, and `overflowed` says so. A read that fails (EIO, or a
 * file of /proc or /sys that cannot be read) ends it too, and `failure`
 * holds its error: what was sent is then not the file. Owns `fd`.
 */
export class FileSource implements RelaySource, Attachable {
  readonly #fd: PoolFd;
  readonly #limit: number;
  #stream: RelayStream | undefined;
  #position = 0;
  // Stryker disable next-line BooleanLiteral: nothing reads before the first resume(), which sets it false
  #paused = true;
  #reading = false;
  #ended = false;
  #overflowed = false;
  #failure: NodeJS.ErrnoException | undefined;

  constructor(fd: number, limit: number) {
    this.#fd = new PoolFd(fd);
    this.#limit = limit;
  }

  /** True once the file was found to hold more than `limit` bytes (what was sent stops at the limit). */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** The error of the read that ended the copy before the file's end, if one did. */
  get failure(): NodeJS.ErrnoException | undefined {
    return this.#failure;
  }

  attach(stream: RelayStream): void {
    this.#stream = stream;
  }

  resume(): void {
    this.#paused = false;
    this.#pump();
  }

  pause(): void {
    this.#paused = true;
  }

  #pump(): void {
    if (this.#reading || this.#paused || this.#ended) return;
    if (!this.#fd.begin()) return;
    this.#reading = true;
    // One byte past the limit is asked for at most: its coming says the file has more.
    const buf = Buffer.allocUnsafe(Math.min(256 * 1024, this.#limit - this.#position + 1));
    read(this.#fd.fd, buf, 0, buf.length, this.#position, (err, n) => {
      this.#fd.done();
      this.#reading = false;
      if (this.#ended) return;
      if (err) {
        this.#failure = err;
        this.#end();
        return;
      }
      const keep = Math.min(n, this.#limit - this.#position);
      if (keep < n) this.#overflowed = true;
      if (keep > 0) {
        this.#position += keep;
        this.#stream?.sourceData(buf.subarray(0, keep));
      }
      if (n === 0 || this.#overflowed) {
        this.#end();
        return;
      }
      this.#pump();
    });
  }

  /** No more is read: the stream's source has ended (at the file's end, the limit, or a failed read). */
  #end(): void {
    this.#ended = true;
    this.#stream?.sourceEnded();
  }

  destroy(): void {
    this.#ended = true;
    this.#fd.close();
  }
}

/** The remote side of a read-only copy: bytes written into a memfd as they come. Does not own the fd. */
export class MemorySink implements RelaySink, Attachable {
  readonly #fd: number;
  #onEnd: () => void;

  constructor(fd: number, onEnd: () => void) {
    this.#fd = fd;
    this.#onEnd = onEnd;
  }

  attach(): void {}

  write(chunk: Buffer, done: (err: Error | null) => void): void {
    let off = 0;
    try {
      while (off < chunk.length) off += writeSync(this.#fd, chunk, off, chunk.length - off);
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null);
  }

  end(done: () => void): void {
    const onEnd = this.#onEnd;
    this.#onEnd = NOOP;
    onEnd();
    done();
  }

  destroy(): void {}
}
