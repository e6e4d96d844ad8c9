/**
 * A closed socket is garbage like any other object: the native side drops
 * its references to the JS callbacks and the receive buffer on close (they
 * are GC roots whose closures lead back to the socket, so kept, they pinned
 * every closed socket and its receive buffer forever).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { constants, native } from './binding';
import { FRAME_SOCKET_OPTIONS } from '../../src/protocol';
import { UnixServer, UnixSocket } from '../../src/socket';
import { withScope } from './helpers';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Collects until every WeakRef is empty, or gives up after a bounded number of full GCs. */
async function collected(refs: WeakRef<object>[]): Promise<number> {
  for (let i = 0; i < 10 && refs.some((r) => r.deref() !== undefined); i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return refs.filter((r) => r.deref() !== undefined).length;
}

test('closed sockets that received messages into a reused buffer are collected, native objects included', async () => {
  const aliveBefore = native.socketsAlive();
  const refs: WeakRef<object>[] = [];
  // In a function of its own: no strong reference survives in this frame.
  const churn = async (): Promise<void> => {
    for (let i = 0; i < 20; i++) {
      const [a, b] = native.socketpair(constants.SOCK_SEQPACKET);
      const left = new UnixSocket(a as number, 'seqpacket', FRAME_SOCKET_OPTIONS);
      const right = new UnixSocket(b as number, 'seqpacket', FRAME_SOCKET_OPTIONS);
      const got = new Promise<void>((resolve) => right.setMessageHandler(() => resolve()));
      await left.send(Buffer.from('hello'));
      await got;
      left.close();
      right.close();
      refs.push(new WeakRef(left), new WeakRef(right));
    }
  };
  await churn();
  expect(await collected(refs)).toBe(0);
  // The native halves go with them (their destructors ran).
  for (let i = 0; i < 10 && native.socketsAlive() > aliveBefore; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  expect(native.socketsAlive()).toBeLessThanOrEqual(aliveBefore);
});

test('a closed listening socket is collected too', () =>
  withScope(async (s) => {
    const refs: WeakRef<object>[] = [];
    const make = (): void => {
      for (let i = 0; i < 5; i++) {
        const server = UnixServer.listen({ abstract: `fdbridge-release-${process.pid}-${i}` });
        server.onConnection(() => undefined);
        server.close();
        refs.push(new WeakRef(server));
      }
    };
    make();
    void s;
    expect(await collected(refs)).toBe(0);
  }));
