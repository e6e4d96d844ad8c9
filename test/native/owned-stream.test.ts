/**
 * ownedStream (src/transports/owned-stream.ts): a net.Socket on an fd
 * fdbridge registered as its own. libuv closes the fd, and it leaves the
 * registry once closed, however the stream ends; and only its own
 * registration does: a new fd of ours that takes the freed number before
 * the stream's 'close' keeps its own, and a caller naming that number is
 * still refused.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, readSync } from 'node:fs';

import { checkFdLeaks, type FdLeakReport } from '../../src';
import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { ownedStream } from '../../src/transports/owned-stream';
import { DIST_SRC } from '../util/nobody';
import { scaled } from '../util/time-scale';
import { constants, native } from './binding';
import { expectSystemError, thrown, withScope } from './helpers';

/** A connected stream socketpair of fdbridge's own (registered, above the fd floor). */
function ownPair(): [number, number] {
  return native.socketpair(constants.SOCK_STREAM, true);
}

describe('ownedStream', () => {
  test('destroyed: libuv closes the fd at once, and it leaves the registry with the close event', () =>
    withScope(async (s) => {
      const owned = native.ownedFdCount();
      const [ours, peer] = ownPair();
      s.defer(() => native.close(peer));
      const stream = ownedStream(ours, { readable: true, writable: true });
      expect(native.registration(ours)).toBeGreaterThan(0);
      expect(native.ownedFdCount()).toBe(owned + 2);
      const closed = once(stream, 'close');
      stream.destroy();
      expect(openFdTable().has(ours)).toBe(false);
      await closed;
      expect(native.registration(ours)).toBe(0);
      expect(native.ownedFdCount()).toBe(owned + 1); // the peer, closed by the scope
    }));

  test('ended by itself (the peer hung up on a read-only stream): it leaves the registry too', async () => {
    const owned = native.ownedFdCount();
    const [ours, peer] = ownPair();
    const stream = ownedStream(ours, { readable: true, writable: false });
    stream.resume();
    const closed = once(stream, 'close');
    native.close(peer);
    await closed;
    expect(openFdTable().has(ours)).toBe(false);
    expect(native.registration(ours)).toBe(0);
    expect(native.ownedFdCount()).toBe(owned);
  });

  test("a new fd of ours at the number it freed, made before the stream's close event, keeps its registration: a caller naming it is still refused", () =>
    withScope(async (s) => {
      const owned = native.ownedFdCount();
      const [ours, peer] = ownPair();
      s.defer(() => native.close(peer));
      const memfd = native.memfd('caller');
      s.defer(() => native.close(memfd));
      const stream = ownedStream(ours, { readable: true, writable: true });
      const closed = once(stream, 'close');
      stream.destroy();
      // The number is free now, its registration not yet removed (the close
      // event comes a loop turn later): a copy of ours above the floor takes it.
      const mine = native.dupAll([memfd], ours)[0] as number;
      s.defer(() => native.close(mine));
      expect(mine).toBe(ours);
      await closed;
      expect(native.registration(mine)).toBeGreaterThan(0);
      expect(native.ownedFdCount()).toBe(owned + 2);
      // A caller naming that number gets EBADF, never our copy.
      expectSystemError(thrown(() => native.dupAll([mine])), 'EBADF');
    }));

  test("a duplex stream whose peer shuts its writing side reads end of file and still writes (half-open): the peer reads what it wrote after, then end of file", () =>
    withScope(async (s) => {
      const [ours, peer] = ownPair();
      s.defer(() => native.close(peer));
      const stream = ownedStream(ours, { readable: true, writable: true });
      const errors: string[] = [];
      stream.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
      const closed = once(stream, 'close');
      const ended = once(stream, 'end');
      stream.resume();
      native.shutdown(peer, constants.SHUT_WR);
      await ended;
      const wrote = await new Promise<string>((resolve) => stream.write('after the end', (err) => resolve(err ? ((err as NodeJS.ErrnoException).code ?? err.message) : 'written')));
      expect({ wrote, errors }).toEqual({ wrote: 'written', errors: [] });
      stream.end();
      await closed;
      const buf = Buffer.alloc(64);
      const got = readSync(peer, buf, 0, 64, null);
      expect(buf.toString('utf8', 0, got)).toBe('after the end');
      expect(readSync(peer, buf, 0, 64, null)).toBe(0);
      expect(native.registration(ours)).toBe(0);
    }));

  test.each([
    ['destroyed', true],
    ['ended by its peer', false],
  ] as const)("%s inside a leak check, with its fd closed by libuv as it should be: no close is blamed on the code under test", async (_how, destroy) => {
    const before = openFdTable(process.pid);
    const [ours, peer] = ownPair();
    let peerOpen = true;
    try {
      const stream = ownedStream(ours, { readable: true, writable: true });
      const closed = once(stream, 'close');
      const report = await checkFdLeaks(async () => {
        if (destroy) {
          stream.destroy();
        } else {
          stream.resume();
          stream.end();
          native.close(peer);
          peerOpen = false;
        }
        await closed;
      });
      expect(native.registration(ours)).toBe(0);
      expect({ closed: report.closed.filter((e) => e.fd === ours), leaks: report.leaks }).toEqual({ closed: [], leaks: [] });
    } finally {
      if (peerOpen) native.close(peer);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test.each([false, true])(
    "its fd closed behind fdbridge's back and the number left free, in a leak check: %s: the stream's close leaves nothing registered, and a leak check blames the stream's fd",
    async (inCheck) => {
      const before = openFdTable(process.pid);
      const [ours, peer] = ownPair();
      try {
        const stream = ownedStream(ours, { readable: true, writable: true });
        const closed = once(stream, 'close');
        const body = async (): Promise<void> => {
          closeSync(ours); // the program's close, behind fdbridge's back; nothing takes the number
          stream.destroy();
          await closed;
        };
        let report: FdLeakReport | undefined;
        if (inCheck) report = await checkFdLeaks(body);
        else await body();
        expect(native.registration(ours)).toBe(0);
        if (report !== undefined) {
          expect(report.closed.map((e) => ({ fd: e.fd, fdbridgeOwn: e.fdbridgeOwn }))).toEqual([{ fd: ours, fdbridgeOwn: true }]);
        }
      } finally {
        native.close(peer);
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    },
  );

  /** Every case: how the new fds of ours are made, how many, in a leak check or not. */
  const takeOvers = (['dup', 'socketpair'] as const).flatMap((maker) =>
    [1, 2, 3].flatMap((count) => [false, true].map((inCheck) => ({ maker, count, inCheck }))),
  );

  test.each(takeOvers)(
    "$maker x $count, in a leak check: $inCheck: its fd closed behind fdbridge's back and the number taken by a new fd of ours, the stream's close (libuv's, by number) never closes that fd; a leak check blames the stream's fd",
    async ({ maker, count, inCheck }) => {
      const before = openFdTable(process.pid);
      const [ours, peer] = ownPair();
      const memfd = native.memfd('owned-stream-reuse');
      const made: number[] = [];
      try {
        const stream = ownedStream(ours, { readable: true, writable: true });
        const closed = once(stream, 'close');
        const identities = new Map<number, string>();
        const body = async (): Promise<void> => {
          closeSync(ours); // the program's close, behind fdbridge's back
          // New fds of ours: the first takes the lowest free number above the floor, the stream's.
          for (let i = 0; i < count; i++) made.push(...(maker === 'dup' ? native.dupAll([memfd]) : ownPair()));
          for (const fd of made) identities.set(fd, `${fstatSync(fd).dev}:${fstatSync(fd).ino}`);
          stream.destroy();
          await closed;
        };
        let report: FdLeakReport | undefined;
        if (inCheck) report = await checkFdLeaks(body);
        else await body();
        // Every new fd of ours is still open, on its file, and still ours (none is the one libuv closes at the stream's number).
        for (const fd of made) {
          expect(`${fstatSync(fd).dev}:${fstatSync(fd).ino}`).toBe(identities.get(fd));
          expect(native.registration(fd)).toBeGreaterThan(0);
        }
        expect(native.registration(ours) === 0 || made.includes(ours)).toBe(true);
        expect(report !== undefined).toBe(inCheck);
        if (report !== undefined) {
          // The close blamed on the code under test is the stream's fd's, and no other.
          expect(report.closed.map((e) => ({ fd: e.fd, fdbridgeOwn: e.fdbridgeOwn }))).toEqual([{ fd: ours, fdbridgeOwn: true }]);
        }
      } finally {
        for (const fd of [...made, memfd, peer]) {
          try {
            native.close(fd);
          } catch {
            // closed already
          }
        }
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    },
  );

  test("on a number closed behind fdbridge's back it is refused (EBADF) and leaves nothing of the stream behind: a new fd of ours takes that number as any free one", async () => {
    const before = openFdTable(process.pid);
    await withScope(async (s) => {
      const [ours, peer] = ownPair();
      s.defer(() => native.close(peer));
      const memfd = native.memfd('owned-stream-refused');
      s.defer(() => native.close(memfd));
      closeSync(ours);
      expectSystemError(thrown(() => ownedStream(ours, { readable: true, writable: true })), 'EBADF');
      const mine = native.dupAll([memfd])[0] as number;
      s.defer(() => native.close(mine));
      // A stream that was never made leaves no mark on the number: the new fd is not moved off it.
      expect(mine).toBe(ours);
    });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

// The stream keeps using its number until it is closed: it reads and
// writes it, and libuv (re)adds it to epoll when the stream reads or writes
// again. A new fd of ours that took the number (the program closed the
// stream's fd) is moved off it, and what fdbridge leaves there must be a
// file epoll takes (libuv aborts on EPERM, a regular file's or a memfd's)
// that reads end of file and refuses writes (EPIPE), so that the stream
// ends instead of writing into it. In a process of its own, which would
// abort. argv: dist/src, readable, writable, how the new fd is made.
const TAKEN_WHILE_STREAMING = String.raw`
const { closeSync } = require('node:fs');
const dist = process.argv[1];
const { native } = require(dist + '/native.js');
const { openFdTable } = require(dist + '/fd.js');
const { ownedStream } = require(dist + '/transports/owned-stream.js');
const readable = process.argv[2] === 'true';
const writable = process.argv[3] === 'true';
const maker = process.argv[4];
const STREAM = native.constants.SOCK_STREAM;
(async () => {
  // libuv opens /dev/null once, for its EMFILE reserve, with the first stream: not the test's.
  const table = () => [...openFdTable()].filter(([, target]) => target !== '/dev/null').join(',');
  const before = table();
  const [ours, peer] = native.socketpair(STREAM, true);
  const memfd = native.memfd('taken-while-streaming');
  const stream = ownedStream(ours, { readable, writable });
  const events = [];
  stream.on('error', (e) => events.push('error ' + e.code));
  stream.on('end', () => events.push('end'));
  const closed = new Promise((resolve) => stream.once('close', resolve));
  if (readable) stream.resume();
  closeSync(ours); // the program's close, behind fdbridge's back
  const made = maker === 'dup' ? native.dupAll([memfd]) : native.socketpair(STREAM, true);
  const identity = (fd) => { const s = require('node:fs').fstatSync(fd); return s.dev + ':' + s.ino; };
  const madeFiles = made.map(identity);
  let wrote = null;
  if (writable) {
    wrote = await new Promise((resolve) => stream.write(Buffer.alloc(4096, 1), (err) => resolve(err ? err.code : 'written')));
  } else {
    await new Promise((resolve) => stream.once('end', resolve));
  }
  stream.destroy();
  await closed;
  const report = {
    events: [...new Set(events)].sort(),
    wrote,
    madeKept: made.every((fd, i) => identity(fd) === madeFiles[i] && native.registration(fd) > 0),
    moved: !made.includes(ours),
  };
  native.closeAll([...made, memfd, peer]);
  report.tableSame = table() === before;
  console.log(JSON.stringify(report));
})();
`;

/** Every case: what the stream does (read, write or both), how the new fd of ours is made. */
const streaming = ([[true, false], [false, true], [true, true]] as const).flatMap(([readable, writable]) =>
  (['dup', 'socketpair'] as const).map((maker) => ({ readable, writable, maker })),
);

test.each(streaming)(
  "readable $readable, writable $writable, a new fd made by $maker at the number of a stream still reading or writing leaves there a socket whose peer is closed: the stream reads end of file or fails its write with EPIPE, the process lives on, the new fd is kept",
  ({ readable, writable, maker }) => {
    const r = spawnSync(process.execPath, ['-e', TAKEN_WHILE_STREAMING, DIST_SRC, String(readable), String(writable), maker], {
      encoding: 'utf8',
      timeout: scaled(30_000),
    });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const report = JSON.parse(r.stdout) as { events: string[]; wrote: string | null; madeKept: boolean; moved: boolean; tableSame: boolean };
    expect(report).toEqual({
      events: writable ? ['error EPIPE'] : ['end'],
      wrote: writable ? 'EPIPE' : null,
      madeKept: true,
      moved: true,
      tableSame: true,
    });
  },
  scaled(60_000),
);

// Its fd closed behind fdbridge's back and the number taken by a file of the
// program's own (not fdbridge's, so not moved off it): libuv's close, by
// number, closes that file. A leak check must blame the stream's fd on the
// code under test, whatever file took the number: another socket (the same
// filesystem as the stream's) or a memfd. In a process of its own with a low
// fd limit, so that the program's next fd reaches the stream's number (ours
// are at or above half the limit). argv: dist/src, what takes the number.
const TAKEN_BY_THE_PROGRAM = String.raw`
const { closeSync } = require('node:fs');
const dist = process.argv[1];
const { native } = require(dist + '/native.js');
const { checkFdLeaks } = require(dist + '/index.js');
const { ownedStream } = require(dist + '/transports/owned-stream.js');
const STREAM = native.constants.SOCK_STREAM;
(async () => {
  const [ours, peer] = native.socketpair(STREAM, true);
  const [mineA, mineB] = native.socketpair(STREAM, false);
  const memfd = native.memfd('taken-by-the-program');
  const source = process.argv[2] === 'socket' ? mineA : memfd;
  const stream = ownedStream(ours, { readable: true, writable: true });
  const closed = new Promise((resolve) => stream.once('close', resolve));
  let taken = -1;
  const report = await checkFdLeaks(async () => {
    closeSync(ours); // the program's close, behind fdbridge's back
    const extra = [];
    for (;;) {
      const fd = native.dup(source);
      if (fd === ours) break;
      if (fd > ours) throw new Error('the number was skipped: ' + fd);
      extra.push(fd);
    }
    taken = ours;
    for (const fd of extra) closeSync(fd);
    stream.destroy();
    await closed;
  });
  let takenOpen = true;
  try { require('node:fs').fstatSync(taken); } catch { takenOpen = false; }
  native.closeAll([peer, mineA, mineB, memfd]);
  console.log(JSON.stringify({
    closed: report.closed.map((e) => ({ fd: e.fd === ours ? 'ours' : e.fd, fdbridgeOwn: e.fdbridgeOwn })),
    leaks: report.leaks.length,
    takenOpen,
    registered: native.registration(ours) !== 0,
  }));
})().catch((err) => { console.error(String(err)); process.exit(1); });
`;

test.each(['socket', 'memfd'] as const)(
  "its fd closed behind fdbridge's back and the number taken by a %s of the program's: libuv's close closes that file, and a leak check blames the stream's fd on the code under test",
  (takenBy) => {
    const r = spawnSync('/bin/sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, '-e', TAKEN_BY_THE_PROGRAM, DIST_SRC, takenBy], {
      encoding: 'utf8',
      timeout: scaled(30_000),
    });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(JSON.parse(r.stdout)).toEqual({ closed: [{ fd: 'ours', fdbridgeOwn: true }], leaks: 0, takenOpen: false, registered: false });
  },
  scaled(60_000),
);
