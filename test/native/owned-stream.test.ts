/**
 * ownedStream (src/transports/owned-stream.ts): a net.Socket on an fd
 * fdbridge registered as its own. libuv closes the fd, and it leaves the
 * registry once closed, however the stream ends; and only its own
 * registration does: a new fd of ours that takes the freed number before
 * the stream's 'close' keeps its own, and a caller naming that number is
 * still refused.
 */
import { once } from 'node:events';
import { closeSync, fstatSync } from 'node:fs';

import fc from 'fast-check';

import { checkFdLeaks, type FdLeakReport } from '../../src';
import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { ownedStream } from '../../src/transports/owned-stream';
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

  test("generated: its fd closed behind fdbridge's back and the number taken by a new fd of ours, the stream's close (libuv's, by number) never closes that fd; a leak check blames the stream's fd", async () => {
    const before = openFdTable(process.pid);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('dup' as const, 'socketpair' as const), fc.integer({ min: 1, max: 3 }), fc.boolean(), async (maker, count, inCheck) => {
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
      }),
      { numRuns: 8, examples: [['dup', 1, false], ['socketpair', 1, true]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 60000);

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
