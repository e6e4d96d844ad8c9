/**
 * The receive path is driven by uv_poll: a pending receive must never block
 * the event loop (no blocking recvmsg on the main thread).
 */
import { sameFile } from '../../src/fd';
import { UnixServer, UnixSocket, type SocketKind } from '../../src/socket';
import { abstractName, withScope } from './helpers';

/** Resolves once a setInterval has ticked `n` times, and reports how many ticks it saw. */
function ticks(n: number): { reached: Promise<void>; count(): number; stop(): void } {
  let count = 0;
  let resolve!: () => void;
  const reached = new Promise<void>((r) => (resolve = r));
  const timer = setInterval(() => {
    count += 1;
    if (count === n) resolve();
  }, 1);
  return { reached, count: () => count, stop: () => clearInterval(timer) };
}

describe.each<SocketKind>(['stream', 'dgram', 'seqpacket'])('%s', (kind) => {
  test('timers keep firing while a receive is pending; then a send resolves it', () =>
    withScope(async (s) => {
      const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
      let settled = false;
      const pending = b.receive().finally(() => (settled = true));
      const t = ticks(5);
      s.defer(t.stop);
      // Reaching 5 ticks is the check: a blocked loop never gets there (the test times out).
      await t.reached;
      expect(settled).toBe(false);
      const { fd } = s.file();
      await a.send(Buffer.from('late'), [fd.fd]);
      const m = await pending;
      const [got] = s.ownAll(m.fds);
      expect(m.data.toString()).toBe('late');
      expect(sameFile(got!.fd, fd.fd)).toBe(true);
    }));
});

test('timers keep firing while an accept is pending', () =>
  withScope(async (s) => {
    const name = abstractName('loop-accept');
    const server = s.add(UnixServer.listen({ abstract: name }));
    let settled = false;
    const pending = server.accept().finally(() => (settled = true));
    const t = ticks(5);
    s.defer(t.stop);
    await t.reached;
    expect(settled).toBe(false);
    const client = s.add(await UnixSocket.connect({ abstract: name }));
    const peer = s.add(await pending);
    await client.send(Buffer.from('hi'));
    expect((await peer.receive()).data.toString()).toBe('hi');
  }));

test('a message handler does not block the loop between messages', () =>
  withScope(async (s) => {
    const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
    const seen: string[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    b.setMessageHandler((err, data, fds) => {
      expect(err).toBeNull();
      expect(fds).toEqual([]);
      seen.push(data!.toString());
      if (seen.length === 2) done();
    });
    await a.send(Buffer.from('one'));
    const t = ticks(3);
    s.defer(t.stop);
    await t.reached;
    await a.send(Buffer.from('two'));
    await all;
    expect(seen).toEqual(['one', 'two']);
  }));
