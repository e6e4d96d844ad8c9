/**
 * ownedStream (src/transports/owned-stream.ts): a net.Socket on an fd
 * fdbridge registered as its own. libuv closes the fd, and it leaves the
 * registry once closed, however the stream ends; and only its own
 * registration does: a new fd of ours that takes the freed number before
 * the stream's 'close' keeps its own, and a caller naming that number is
 * still refused.
 */
import { once } from 'node:events';

import { openFdTable } from '../../src/fd';
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
});
