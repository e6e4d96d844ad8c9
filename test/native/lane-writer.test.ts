/**
 * The lanes of writer threads (native/lane_writer.h): each write goes into
 * a copy of the fd, on a thread of its owner's lane (at most
 * laneWriters().perOwner of them), never on libuv's pool. One owner's
 * writes that cannot go on (pipes nobody reads) hold back that owner's
 * other writes only; a pipe or socket is written with RWF_NOWAIT, so the
 * O_NONBLOCK of the caller's open file is never changed, and a write
 * waiting for room ends at once when its group is cancelled. Every write
 * ends with its bytes written or -errno, its copy closed before.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, fdFlags, formatFdTableDiff, makePipe, openFdTable, setFdFlags } from '../../src/fd';
import { constants, native } from './binding';
import { settledFdTableDiff, thrown } from './helpers';

const ECANCELED = -osConstants.errno.ECANCELED;
const EPIPE = -osConstants.errno.EPIPE;

/** laneWrite as a promise of its result (bytes written, or -errno). */
function write(fd: number, data: Buffer, owner: number, group = native.laneGroup()): Promise<number> {
  return new Promise((resolve) => native.laneWrite(fd, data, owner, group, resolve));
}

/** Turns the event loop until `ok()` holds (the lanes work on their own threads); bounded by the test's timeout only. */
async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 5));
}

/** Everything readable from a non-blocking read end now. */
function drain(fd: number): Buffer {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    try {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      parts.push(Buffer.from(buf.subarray(0, n)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
  }
  return Buffer.concat(parts);
}

type Kind = 'pipe' | 'nonblocking pipe' | 'socket' | 'file';

/** A place to write into and the way to read back what reached it. */
function target(kind: Kind, dir: string, i: number): { fd: number; read(): Buffer; close(): void } {
  if (kind === 'file') {
    const path = join(dir, `f${i}`);
    const fd = openSync(path, 'a');
    return { fd, read: () => readFileSync(path), close: () => closeSync(fd) };
  }
  const [r, w] = kind === 'socket' ? native.socketpair(constants.SOCK_STREAM) : makePipe();
  setFdFlags(r, { nonblock: true });
  if (kind === 'nonblocking pipe') setFdFlags(w, { nonblock: true });
  return {
    fd: w,
    read: () => drain(r),
    close: () => {
      closeFd(r);
      closeFd(w);
    },
  };
}

describe('lane writes', () => {
  test('generated: every write reaches its own file whole and in order, whatever the kind of fd and the owner, and leaves its O_NONBLOCK alone', async () => {
    const kinds: Kind[] = ['pipe', 'nonblocking pipe', 'socket', 'file'];
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            kind: fc.constantFrom(...kinds),
            owner: fc.integer({ min: 0, max: 3 }),
            // Under a pipe's 64 KiB in all: nobody reads until every write has ended.
            lines: fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 6 }),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        async (targets) => {
          const before = openFdTable();
          const dir = mkdtempSync(join(tmpdir(), 'fdbridge-lanes-'));
          const made = targets.map((t, i) => ({ ...t, place: target(t.kind, dir, i) }));
          try {
            const flags = made.map((t) => fdFlags(t.place.fd).nonblock);
            // The targets in parallel, the lines of each one after another (as a log command writes them).
            const results = await Promise.all(
              made.map(async (t, i) => {
                const group = native.laneGroup();
                const out: number[] = [];
                for (let k = 0; k < t.lines.length; k++) out.push(await write(t.place.fd, Buffer.alloc(t.lines[k]!, 97 + ((i + k) % 26)), t.owner, group));
                return out;
              }),
            );
            expect(results).toEqual(made.map((t) => t.lines));
            made.forEach((t, i) => {
              const expected = Buffer.concat(t.lines.map((n, k) => Buffer.alloc(n, 97 + ((i + k) % 26))));
              expect(t.place.read().equals(expected)).toBe(true);
            });
            expect(made.map((t) => fdFlags(t.place.fd).nonblock)).toEqual(flags);
            expect(native.laneWriters()).toMatchObject({ busy: 0, queued: 0 });
          } finally {
            for (const t of made) t.place.close();
            rmSync(dir, { recursive: true, force: true });
          }
          // Each copy was closed before its result came.
          expect(formatFdTableDiff(await settledFdTableDiff(before))).toBe('');
        },
      ),
      { numRuns: 25 },
    );
  });

  test("an owner whose writes wait for pipes nobody reads holds back its own writes only; a cancel ends them, and what waited runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-lanes-'));
    const stuck = [makePipe(), makePipe()];
    const file = openSync(join(dir, 'log'), 'a');
    const perOwner = native.laneWriters().perOwner;
    expect(perOwner).toBe(2);
    try {
      const groups = stuck.map(() => native.laneGroup());
      // More than a pipe holds: each holds one of owner 7's threads.
      const blocked = stuck.map(([, w], i) => write(w, Buffer.alloc(100_000, 120), 7, groups[i]));
      await until(() => native.laneWriters().busy === 2);
      // Owner 7's next write waits for one of its threads; owner 8's does not.
      const behind = write(file, Buffer.from('seven\n'), 7);
      expect(native.laneWriters()).toMatchObject({ busy: 2, queued: 1 });
      expect(await write(file, Buffer.from('eight\n'), 8)).toBe(6);
      expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('eight\n');
      expect(native.laneWriters()).toMatchObject({ busy: 2, queued: 1 });
      // Cancelling one pipe's group ends its write at once (as much as the pipe took is in it); owner 7's file write runs then.
      native.laneWriteCancel(groups[0]!);
      expect(await blocked[0]).toBe(ECANCELED);
      expect(await behind).toBe(6);
      expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('eight\nseven\n');
      // The other one goes on as soon as its pipe is read.
      setFdFlags(stuck[1]![0], { nonblock: true });
      let got = 0;
      const reading = (async () => {
        while (got < 100_000) {
          got += drain(stuck[1]![0]).length;
          await new Promise((r) => setTimeout(r, 1));
        }
      })();
      expect(await blocked[1]).toBe(100_000);
      await reading;
      expect(got).toBe(100_000);
    } finally {
      for (const [r, w] of stuck) {
        closeFd(r);
        closeFd(w);
      }
      closeSync(file);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a cancel ends the writes of its group that wait for a thread, and no other', async () => {
    const stuck = [makePipe(), makePipe()];
    const [r, w] = makePipe();
    try {
      const g = native.laneGroup();
      const other = native.laneGroup();
      const blocked = stuck.map(([, sw]) => write(sw, Buffer.alloc(100_000, 120), 9, other));
      await until(() => native.laneWriters().busy === 2);
      const queuedMine = [write(w, Buffer.from('a'), 9, g), write(w, Buffer.from('b'), 9, g)];
      expect(native.laneWriters().queued).toBe(2);
      native.laneWriteCancel(g);
      expect(await Promise.all(queuedMine)).toEqual([ECANCELED, ECANCELED]);
      expect(native.laneWriters()).toMatchObject({ busy: 2, queued: 0 });
      setFdFlags(r, { nonblock: true });
      expect(drain(r).length).toBe(0); // nothing of theirs was written
      native.laneWriteCancel(other);
      expect(await Promise.all(blocked)).toEqual([ECANCELED, ECANCELED]);
    } finally {
      for (const [sr, sw] of [...stuck, [r, w]]) {
        closeFd(sr!);
        closeFd(sw!);
      }
    }
  });

  test("the write goes to the file the fd named when it was handed over, even once that number is closed and taken by another file", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-lanes-'));
    const [r, w] = makePipe();
    const [sr, sw] = makePipe();
    try {
      // Owner 11's threads are both held: the write is queued, its copy made already.
      const blocked = [makePipe(), makePipe()];
      const g = native.laneGroup();
      const held = blocked.map(([, bw]) => write(bw, Buffer.alloc(100_000, 120), 11, g));
      await until(() => native.laneWriters().busy === 2);
      const line = write(w, Buffer.from('to the pipe\n'), 11);
      closeFd(w);
      // Open the other file until it takes w's number (lower free numbers are taken first).
      const extra: number[] = [];
      let other = openSync(join(dir, 'other'), 'a');
      while (other !== w) {
        expect(other).toBeLessThan(w);
        extra.push(other);
        other = openSync(join(dir, 'other'), 'a');
      }
      for (const fd of extra) closeSync(fd);
      native.laneWriteCancel(g);
      expect(await Promise.all(held)).toEqual([ECANCELED, ECANCELED]);
      expect(await line).toBe(12);
      closeSync(other);
      setFdFlags(r, { nonblock: true });
      expect(drain(r).toString()).toBe('to the pipe\n');
      expect(readFileSync(join(dir, 'other'), 'utf8')).toBe('');
      for (const [br, bw] of blocked) {
        closeFd(br!);
        closeFd(bw!);
      }
    } finally {
      closeFd(r);
      closeFd(sr);
      closeFd(sw);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a pipe whose reader is gone: -EPIPE; an fd that is not open: a SystemError at once, nothing queued', async () => {
    const [r, w] = makePipe();
    closeFd(r);
    try {
      expect(await write(w, Buffer.from('x'), 0)).toBe(EPIPE);
    } finally {
      closeFd(w);
    }
    const notOpen = 2 ** 30; // above any fd limit
    expect(() => native.laneWrite(notOpen, Buffer.from('x'), 0, native.laneGroup(), () => undefined)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'dup' }));
    expect(native.laneWriters()).toMatchObject({ busy: 0, queued: 0 });
  });

  test('bad arguments are TypeErrors, and nothing is queued', () => {
    const g = native.laneGroup();
    const bad = native as unknown as { laneWrite(...a: unknown[]): void; laneWriteCancel(...a: unknown[]): void };
    // The addon's errors come from another realm than jest's: compared by name.
    const typeError = (fn: () => void, message: RegExp): void => {
      expect(thrown(fn)).toMatchObject({ name: 'TypeError', message: expect.stringMatching(message) });
    };
    typeError(() => bad.laneWrite(1, 'text', 0, g, () => undefined), /Uint8Array/);
    typeError(() => bad.laneWrite(1, new Uint16Array(2), 0, g, () => undefined), /must be a Uint8Array/);
    typeError(() => bad.laneWrite(1, Buffer.from('x'), -1, g, () => undefined), /owner/);
    typeError(() => bad.laneWrite(1, Buffer.from('x'), 0, 0, () => undefined), /group/);
    typeError(() => bad.laneWrite(1, Buffer.from('x'), 0, g), /callback/);
    typeError(() => bad.laneWriteCancel(0), /group/);
    expect(native.laneWriters()).toMatchObject({ busy: 0, queued: 0 });
  });
});
