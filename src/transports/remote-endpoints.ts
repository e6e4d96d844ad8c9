/**
 * The local ends of relayed streams: what a RelayStream reads from and
 * writes to on each side of the remote transport.
 *
 * - SocketEnd: a pipe end or a stream socket on the event loop (libuv sets
 *   O_NONBLOCK on it, so it is always an open file description of the
 *   relay's own, or a socket's duplicate: see remote-kinds.ts).
 * - FileSink / FileSource: a regular file or a character device, written or
 *   read on the thread pool (they ignore O_NONBLOCK).
 * - MemorySink: the remote side's copy of a read-only file (a memfd).
 */
import { read, readSync, write, writeSync } from 'node:fs';
import { Socket } from 'node:net';

import { closeFd } from '../fd';
import { native } from '../native';
import type { RelaySink, RelaySource, RelayStream } from './remote-channel';

const NOOP = (): void => undefined;

/** An endpoint delivers to its stream once attached; before that nothing flows. */
export interface Attachable {
  attach(stream: RelayStream): void;
}

/**
 * A pipe end or stream socket (owned: closed on destroy). As a sink,
 * end of file is a close for a pipe (a reader sees EOF once every write end
 * is closed) and a shutdown(SHUT_WR) for a socket (its other direction
 * goes on).
 */
export class SocketEnd implements RelaySource, RelaySink, Attachable {
  readonly #socket: Socket;
  readonly #fd: number;
  readonly #readable: boolean;
  readonly #isPipe: boolean;
  #stream: RelayStream | undefined;
  #destroyed = false;
  /** While readNow takes the chunks the paused stream holds: where they go. */
  #taken: Buffer[] | undefined;

  constructor(fd: number, ways: { read: boolean; write: boolean }, isPipe: boolean) {
    this.#isPipe = isPipe;
    this.#fd = fd;
    this.#readable = ways.read;
    this.#socket = new Socket({ fd, readable: ways.read, writable: ways.write, allowHalfOpen: true });
    this.#socket.pause();
    // A failed write reaches its callback; a failed read ends the stream below.
    this.#socket.on('error', NOOP);
    if (ways.read) {
      this.#socket.on('data', (chunk: Buffer) => {
        if (this.#taken) this.#taken.push(chunk);
        else this.#stream?.sourceData(chunk);
      });
      const ended = (): void => this.#stream?.sourceEnded();
      this.#socket.on('end', ended);
      this.#socket.on('close', ended);
    }
  }

  attach(stream: RelayStream): void {
    this.#stream = stream;
  }

  resume(): void {
    if (!this.#destroyed) this.#socket.resume();
  }

  pause(): void {
    if (!this.#destroyed) this.#socket.pause();
  }

  /**
   * Reads what the fd holds now. First what the stream has already read
   * and holds while paused (a paused net.Socket goes on reading up to its
   * highWaterMark): those bytes are older than any still in the fd. Then
   * the fd itself: it is non-blocking (libuv set it), so an empty pipe is
   * EAGAIN at once; a read of 0 is its end of file (every write end
   * closed). Bytes read here are simply not there for the event loop's own
   * read: the order holds, as both happen on this thread.
   */
  readNow(max: number): { chunks: Buffer[]; ended: boolean } {
    const out: Buffer[] = [];
    if (this.#destroyed || !this.#readable || this.#socket.destroyed) return { chunks: out, ended: false };
    this.#taken = out;
    try {
      // read() hands each held chunk to the 'data' listener, which puts it in `out`.
      while (this.#socket.readableLength > 0 && this.#socket.read() !== null);
    } finally {
      this.#taken = undefined;
    }
    for (const chunk of out) max -= chunk.length;
    while (max > 0) {
      const buf = Buffer.allocUnsafe(Math.min(max, 256 * 1024));
      let n: number;
      try {
        n = readSync(this.#fd, buf, 0, buf.length, null);
      } catch {
        break; // EAGAIN (empty) or an error the event loop's read will report
      }
      if (n === 0) return { chunks: out, ended: true };
      out.push(buf.subarray(0, n));
      max -= n;
    }
    return { chunks: out, ended: false };
  }

  write(chunk: Buffer, done: (err: Error | null) => void): void {
    if (this.#destroyed || this.#socket.destroyed) {
      process.nextTick(done, new Error('the relay endpoint is closed'));
      return;
    }
    this.#socket.write(chunk, (err) => done(err ?? null));
  }

  end(done: () => void): void {
    if (this.#isPipe) {
      // Every write has completed (the stream ends a sink only then): the
      // reader sees end of file once this write end is closed.
      this.destroy();
      done();
      return;
    }
    if (this.#socket.destroyed) {
      done();
      return;
    }
    this.#socket.end(() => done());
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    // libuv closes the fd, not fdbridge's close: it must leave the registry
    // of fds fdbridge holds for itself first, or its number stays refused.
    native.disown(this.#fd);
    this.#socket.destroy();
  }
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

  get closed(): boolean {
    return this.#closeWanted;
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
    closeFd(this.fd);
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

/** Reads a regular file from its start to its end of file, on the thread pool. Owns `fd`. */
export class FileSource implements RelaySource, Attachable {
  readonly #fd: PoolFd;
  #stream: RelayStream | undefined;
  #position = 0;
  #paused = true;
  #reading = false;
  #ended = false;

  constructor(fd: number) {
    this.#fd = new PoolFd(fd);
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
    const buf = Buffer.allocUnsafe(256 * 1024);
    read(this.#fd.fd, buf, 0, buf.length, this.#position, (err, n) => {
      this.#fd.done();
      this.#reading = false;
      if (this.#ended) return;
      if (err || n === 0) {
        this.#ended = true;
        this.#stream?.sourceEnded();
        return;
      }
      this.#position += n;
      this.#stream?.sourceData(buf.subarray(0, n));
      this.#pump();
    });
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
