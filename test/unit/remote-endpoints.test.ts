/**
 * The local ends of the remote transport's relayed files, each driven as
 * its RelayStream drives it (src/transports/remote-endpoints.ts):
 * FileSource, the client's read of a file given as a copy; FileSink, the
 * client's writes into a file or device the command writes through;
 * MemorySink, the server's copy. What a user sees of them: a copy holds the
 * file's bytes from its start, in order, up to the limit (README, Remote
 * commands: at most 256 MiB), or says why it does not; the command's writes
 * land whole and in order, also in a device shared with a non-blocking
 * user; a closed endpoint's number, taken by another file, is never read or
 * written. The fd table is checked after each test (test/setup/fd-table.ts):
 * every endpoint closes what it owns once destroyed.
 */
import fs from 'node:fs';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, closeFds, fdIdentity, isFdOpen, makeMemfd, makePipe, setFdFlags } from '../../src/fd';
import type { RelayStream } from '../../src/transports/remote-channel';
import { FileSink, FileSource, MemorySink } from '../../src/transports/remote-endpoints';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';
import { within } from '../util/within';

/** The most a FileSource reads at once. */
const READ_BYTES = 256 * 1024;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-remote-endpoints-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `size` bytes that differ from one 512-byte block to the next: a piece out of order, twice or missing shows. */
function content(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + (i >> 9)) & 0xff;
  return buf;
}

/** A file holding `bytes`, open for reading (the caller closes it, or hands it to an endpoint). */
function fileWith(name: string, bytes: Buffer): number {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  const fd = openSync(path, 'r');
  rmSync(path);
  return fd;
}

/** True once `fd` no longer names the file it named when this was made (closed, or its number taken by another). */
function closedLater(fd: number): () => boolean {
  const { dev, ino } = fdIdentity(fd);
  return () => {
    if (!isFdOpen(fd)) return true;
    const now = fdIdentity(fd);
    return now.dev !== dev || now.ino !== ino;
  };
}

/**
 * A stand-in for the RelayStream a FileSource delivers to: keeps the
 * chunks, counts the ends, and pauses the source after the chunks that
 * `pauses` says (resuming it on a later turn), as a spent window does;
 * a chunk that comes while it is paused is recorded as such.
 */
class Consumer {
  readonly chunks: Buffer[] = [];
  ends = 0;
  whilePaused = 0;
  afterEnd = 0;
  #paused = false;
  #n = 0;
  readonly ended: Promise<void>;
  #end!: () => void;

  constructor(
    private readonly source: FileSource,
    private readonly pauses: boolean[] = [],
    private readonly extraResumes = false,
  ) {
    this.ended = new Promise((resolve) => (this.#end = resolve));
    source.attach(this as unknown as RelayStream);
  }

  sourceData(chunk: Buffer): void {
    if (this.#paused) this.whilePaused++;
    if (this.ends > 0) this.afterEnd++;
    this.chunks.push(Buffer.from(chunk));
    if (this.pauses[this.#n++ % Math.max(1, this.pauses.length)] === true) {
      this.#paused = true;
      this.source.pause();
      setTimeout(() => {
        this.#paused = false;
        this.source.resume();
        if (this.extraResumes) this.source.resume();
      }, 1);
    }
  }

  sourceEnded(): void {
    this.ends++;
    this.#end();
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

describe('FileSource: a file copied from its start, at most `limit` bytes', () => {
  test('generated: the file\'s bytes in order, up to the limit, each read at most 256 KiB, one end; overflowed when the file has more; the fd closed once destroyed', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3 * READ_BYTES }),
        fc.oneof(fc.integer({ min: 1, max: 3 * READ_BYTES }), fc.integer({ min: -2, max: 2 })),
        fc.array(fc.boolean(), { maxLength: 4 }),
        fc.boolean(),
        async (size, limitOrDelta, pauses, extraResumes) => {
          // A limit near the size half of the time: under, at and past it.
          const limit = limitOrDelta > 2 ? limitOrDelta : Math.max(1, size + limitOrDelta);
          const bytes = content(size);
          const fd = fileWith(`copy-${run++}`, bytes);
          const closed = closedLater(fd);
          const source = new FileSource(fd, limit);
          const consumer = new Consumer(source, pauses, extraResumes);
          source.resume();
          if (extraResumes) source.resume(); // a second resume while the first read is on the pool reads nothing twice
          await within(consumer.ended, scaled(5_000), `the copy of ${size} bytes, limit ${limit}`);
          // A turn for anything that would still come after the end.
          await new Promise((r) => setTimeout(r, 5));
          expect(consumer.ends).toBe(1);
          expect(consumer.afterEnd).toBe(0);
          expect(consumer.whilePaused).toBe(0);
          const kept = Math.min(size, limit);
          expect(consumer.bytes.length).toBe(kept);
          expect(consumer.bytes.equals(bytes.subarray(0, kept))).toBe(true);
          expect(consumer.chunks.every((c) => c.length > 0 && c.length <= READ_BYTES)).toBe(true);
          expect(source.overflowed).toBe(size > limit);
          expect(source.failure).toBeUndefined();
          expect(closed()).toBe(false);
          source.destroy();
          expect(closed()).toBe(true);
        },
      ),
      // No shrinking after a failure: each step of it would wait out the deadline again.
      { numRuns: 40, endOnFailure: true },
    );
  });

  test('nothing is read before resume(), nor while paused', async () => {
    const bytes = content(1000);
    const fd = fileWith('paused', bytes);
    const source = new FileSource(fd, 1 << 20);
    const consumer = new Consumer(source);
    try {
      await new Promise((r) => setTimeout(r, 20));
      expect(consumer.chunks.length).toBe(0);
      source.resume();
      source.pause(); // the read already asked for still delivers; nothing after it
      await new Promise((r) => setTimeout(r, 20));
      expect(consumer.ends).toBe(0);
      source.resume();
      await within(consumer.ended, scaled(5_000), 'the copy');
      expect(consumer.bytes.equals(bytes)).toBe(true);
    } finally {
      source.destroy();
    }
  });

  test('generated: a read that fails mid-copy (EIO) ends the copy with that error as its failure, after the bytes read before it', async () => {
    let run = 0;
    const realRead = fs.read;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 * READ_BYTES }), fc.nat(), fc.constantFrom('EIO', 'EINVAL'), async (size, k, code) => {
        const bytes = content(size);
        const fd = fileWith(`failing-${run++}`, bytes);
        // The reads a whole copy makes: its full ones and the one that finds the end.
        const reads = Math.ceil(size / READ_BYTES) + 1;
        const failAt = k % reads; // reads before the failing one
        let count = 0;
        const staged = Object.assign(new Error(`${code}: staged, read`), { code, errno: code === 'EIO' ? -5 : -22, syscall: 'read' });
        const spy = jest.spyOn(fs, 'read').mockImplementation(((...args: unknown[]) => {
          const callback = args[args.length - 1] as (err: NodeJS.ErrnoException | null, n: number) => void;
          if (args[0] === fd && count++ === failAt) {
            setImmediate(() => callback(staged, 0));
            return;
          }
          (realRead as (...a: unknown[]) => void)(...args);
        }) as typeof fs.read);
        const source = new FileSource(fd, 1 << 30);
        try {
          const consumer = new Consumer(source);
          source.resume();
          await within(consumer.ended, scaled(5_000), 'the copy');
          expect(consumer.ends).toBe(1);
          const before = Math.min(size, failAt * READ_BYTES);
          expect(consumer.bytes.equals(bytes.subarray(0, before))).toBe(true);
          expect(source.failure).toBe(staged);
          expect(source.failure?.code).toBe(code);
          expect(source.overflowed).toBe(false);
        } finally {
          spy.mockRestore();
          source.destroy();
        }
      }),
      { numRuns: 25, endOnFailure: true },
    );
  });

  test('a file of /proc whose reads fail (/proc/self/mem: EIO at its start): an empty copy, failed with EIO', async () => {
    const fd = openSync('/proc/self/mem', 'r');
    const source = new FileSource(fd, 1 << 20);
    try {
      const consumer = new Consumer(source);
      source.resume();
      await within(consumer.ended, scaled(5_000), 'the copy');
      expect(consumer.bytes.length).toBe(0);
      expect(source.failure?.code).toBe('EIO');
    } finally {
      source.destroy();
    }
  });

  test('destroyed while a read is on the thread pool: the fd stays open until that read returns, then closes; nothing is delivered', async () => {
    const fd = fileWith('in-flight', content(READ_BYTES));
    const closed = closedLater(fd);
    const source = new FileSource(fd, 1 << 20);
    const consumer = new Consumer(source);
    source.resume();
    source.destroy();
    // The read asked for may still run: closed now, its number could go to another file that it then reads.
    expect(closed()).toBe(false);
    await new HangGuard(scaled(5_000)).until('the fd closed once its read returned', closed, (c) => c);
    expect([consumer.chunks.length, consumer.ends]).toEqual([0, 0]);
    source.resume(); // a destroyed source reads nothing, and closes nothing again
    await new Promise((r) => setTimeout(r, 5));
    expect([consumer.chunks.length, consumer.ends]).toEqual([0, 0]);
  });
});

describe('FileSink: the command\'s writes into a file or device, in order, each done once written', () => {
  test('it is prompt: a call\'s reply waits for its writes (RelayStream.written)', () => {
    const fd = openSync('/dev/null', 'w');
    const sink = new FileSink(fd);
    sink.destroy();
    expect(sink.prompt).toBe(true);
  });

  test('generated: chunks written back to back (each queued before the one before is done) land whole and in order, each done when it is in the file; end is done at once; destroy closes the fd', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 600_000 }), { minLength: 1, maxLength: 5 }), fc.boolean(), fc.boolean(), async (sizes, append, waitEach) => {
        const path = join(dir, `sink-${run++}`);
        writeFileSync(path, 'head:');
        const fd = openSync(path, append ? 'a' : 'w');
        const closed = closedLater(fd);
        const sink = new FileSink(fd);
        sink.attach();
        const head = append ? 'head:' : '';
        const all = content(sizes.reduce((a, b) => a + b, 0));
        try {
          let at = 0;
          const dones: Array<Promise<void>> = [];
          const order: number[] = [];
          /** Per done: whether the file held that chunk and every one before it (checked here, after the writes). */
          const there: boolean[] = [];
          for (const [i, size] of sizes.entries()) {
            const chunk = all.subarray(at, at + size);
            at += size;
            const end = at;
            const done = new Promise<void>((resolve, reject) =>
              sink.write(chunk, (err) => {
                order.push(i);
                if (err) return reject(err);
                const now = readFileSync(path);
                there.push(now.length >= head.length + end && now.subarray(head.length, head.length + end).equals(all.subarray(0, end)));
                resolve();
              }),
            );
            dones.push(done);
            if (waitEach) await within(done, scaled(5_000), `write ${i}`);
          }
          await within(Promise.all(dones), scaled(5_000), 'the writes');
          expect(order).toEqual(sizes.map((_, i) => i));
          // Each chunk, and every one before it, was in the file when its done came.
          expect(there).toEqual(sizes.map(() => true));
          await within(new Promise<void>((resolve) => sink.end(resolve)), scaled(5_000), 'end');
          expect(readFileSync(path).equals(Buffer.concat([Buffer.from(head), all]))).toBe(true);
        } finally {
          sink.destroy();
          rmSync(path);
        }
        expect(closed()).toBe(true);
      }),
      { numRuns: 20, endOnFailure: true },
    );
  });

  test('generated: a device shared with a non-blocking user (a full O_NONBLOCK pipe): the writes wait for room (EAGAIN) and arrive whole and in order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 200_000 }), { minLength: 1, maxLength: 4 }), async (sizes) => {
        const [r, wSink] = makePipe();
        setFdFlags(wSink, { nonblock: true });
        setFdFlags(r, { nonblock: true }); // read here on this thread while the sink waits
        const sink = new FileSink(wSink);
        // Fill the pipe: the sink's first write finds no room.
        const filler = Buffer.alloc(4096, 0x21);
        let filled = 0;
        for (;;) {
          try {
            filled += writeSync(wSink, filler);
          } catch {
            break;
          }
        }
        const all = content(sizes.reduce((a, b) => a + b, 0));
        try {
          let at = 0;
          const dones = sizes.map((size) => {
            const chunk = all.subarray(at, (at += size));
            return new Promise<void>((resolve, reject) => sink.write(chunk, (err) => (err ? reject(err) : resolve())));
          });
          // Read everything while the sink waits and retries.
          const got: Buffer[] = [];
          let total = 0;
          const want = filled + all.length;
          const buf = Buffer.alloc(65536);
          const guard = new HangGuard(scaled(5_000));
          await guard.until(
            'every byte through the pipe',
            () => {
              for (;;) {
                let n = 0;
                try {
                  n = readSync(r, buf, 0, buf.length, null);
                } catch {
                  break; // EAGAIN: nothing there yet
                }
                if (n === 0) break;
                got.push(Buffer.from(buf.subarray(0, n)));
                total += n;
              }
              return total;
            },
            (t) => t >= want,
          );
          await within(Promise.all(dones), scaled(5_000), 'the writes');
          const received = Buffer.concat(got);
          expect(received.length).toBe(want);
          expect(received.subarray(filled).equals(all)).toBe(true);
        } finally {
          sink.destroy();
          closeFd(r);
        }
      }),
      { numRuns: 6, endOnFailure: true },
    );
  });

  test('a write that fails (EPIPE: no reader left) is done with its error; the next queued write is tried and fails too', async () => {
    const [r, w] = makePipe();
    closeFd(r);
    const sink = new FileSink(w);
    try {
      const results = await within(
        Promise.all(
          ['first', 'second'].map(
            (text) => new Promise<NodeJS.ErrnoException | null>((resolve) => sink.write(Buffer.from(text), (err) => resolve(err as NodeJS.ErrnoException | null))),
          ),
        ),
        scaled(5_000),
        'the failed writes',
      );
      expect(results.map((e) => e?.code)).toEqual(['EPIPE', 'EPIPE']);
    } finally {
      sink.destroy();
    }
  });

  test('once destroyed: a write is done with an error and lands nowhere, also not in the file that took the sink\'s number', async () => {
    const fd = openSync(join(dir, 'destroyed-sink'), 'w');
    const sink = new FileSink(fd);
    sink.destroy();
    // The lowest free number is the sink's: the next file opened takes it.
    const other = join(dir, 'took-the-number');
    const taken = openSync(other, 'w');
    try {
      expect(taken).toBe(fd);
      const err = await within(new Promise<Error | null>((resolve) => sink.write(Buffer.from('lost'), resolve)), scaled(5_000), 'the refused write');
      expect(err).toBeInstanceOf(Error);
      expect(fstatSync(taken).size).toBe(0);
      expect(readFileSync(join(dir, 'destroyed-sink'), 'utf8')).toBe('');
    } finally {
      closeSync(taken);
    }
  });

  test('destroyed while a write is on the thread pool: the write lands whole, the fd closes only after it', async () => {
    const path = join(dir, 'in-flight-write');
    const fd = openSync(path, 'w');
    const closed = closedLater(fd);
    const sink = new FileSink(fd);
    const bytes = content(READ_BYTES);
    const done = new Promise<Error | null>((resolve) => sink.write(bytes, resolve));
    sink.destroy();
    expect(closed()).toBe(false);
    expect(await within(done, scaled(5_000), 'the write in flight')).toBeNull();
    await new HangGuard(scaled(5_000)).until('the fd closed after its write', closed, (c) => c);
    expect(readFileSync(path).equals(bytes)).toBe(true);
  });
});

describe('destroyed twice (a caller\'s mistake): the fd is closed once', () => {
  test.each([['FileSink'], ['FileSource']])('%s: the file that took its number since stays open', (which) => {
    const fd = fileWith(`twice-${which}`, content(10));
    const endpoint = which === 'FileSink' ? new FileSink(fd) : new FileSource(fd, 1 << 20);
    endpoint.destroy();
    const taken = openSync(join(dir, 'took-the-number-twice'), 'w');
    try {
      expect(taken).toBe(fd);
      endpoint.destroy();
      expect(isFdOpen(taken)).toBe(true);
    } finally {
      closeSync(taken);
    }
  });
});

describe('MemorySink: the server\'s copy of a file, written into a memfd', () => {
  test('generated: chunks land whole and in order; end calls the copy\'s onEnd once, then done; destroy leaves the fd to its owner', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 300_000 }), { maxLength: 5 }), fc.integer({ min: 1, max: 3 }), async (sizes, endCalls) => {
        const memfd = makeMemfd('remote-endpoints');
        let onEnds = 0;
        const sink = new MemorySink(memfd, () => onEnds++);
        sink.attach();
        const all = content(sizes.reduce((a, b) => a + b, 0));
        try {
          let at = 0;
          for (const size of sizes) {
            const chunk = all.subarray(at, (at += size));
            expect(await new Promise<Error | null>((resolve) => sink.write(chunk, resolve))).toBeNull();
          }
          let dones = 0;
          for (let i = 0; i < endCalls; i++) sink.end(() => dones++);
          expect([onEnds, dones]).toEqual([1, endCalls]);
          sink.destroy();
          expect(isFdOpen(memfd)).toBe(true);
          const copy = Buffer.alloc(all.length);
          expect(all.length === 0 || readSync(memfd, copy, 0, copy.length, 0) === all.length).toBe(true);
          expect(copy.equals(all)).toBe(true);
        } finally {
          closeFd(memfd);
        }
      }),
      { numRuns: 15, endOnFailure: true },
    );
  });

  test('a write that fails is done with its error (a read-only fd: EBADF)', async () => {
    const memfd = makeMemfd('remote-endpoints-ro');
    const ro = openSync(`/proc/self/fd/${memfd}`, 'r');
    try {
      const sink = new MemorySink(ro, () => undefined);
      const err = await new Promise<Error | null>((resolve) => sink.write(Buffer.from('x'), resolve));
      expect((err as NodeJS.ErrnoException | null)?.code).toBe('EBADF');
    } finally {
      closeFds([memfd, ro]);
    }
  });
});
