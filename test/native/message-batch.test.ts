/**
 * Batched sockets (UnixSocketOptions.batchMessages, native/message_batch.h):
 * the messages of every batched socket read in one turn of the event loop
 * reach their handlers in one callback, microtasks running once after all
 * of them; a socket's own messages keep their order, and its next message
 * is handed over only after the previous one's microtasks ran; each fd
 * arrives once, with its message, and a socket closed before its message
 * was handed over takes that message's fds with it.
 *
 * The sends are synchronous (write) and made before the test returns to
 * the event loop, so every receiving socket is readable when the loop
 * polls: which messages share a turn is decided by the kernel, not by time.
 */
import fc from 'fast-check';

import { makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { expectFdTable, openBackgroundClosesDone, withScope, type Scope } from './helpers';

type Pair = { client: UnixSocket; served: UnixSocket };

function pairs(s: Scope, n: number, batchMessages = true): Pair[] {
  return Array.from({ length: n }, () => {
    const [client, served] = UnixSocket.pair('seqpacket', { batchMessages, reuseBuffer: true }).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
    return { client, served };
  });
}

/** Resolves once `n` calls of the returned function have been made. */
function countdown(n: number): { tick: () => void; done: Promise<void> } {
  let left = n;
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  if (n === 0) resolve();
  return {
    tick: () => {
      if (--left === 0) resolve();
    },
    done,
  };
}

test('the messages of many batched sockets read in one turn reach their handlers before any of their microtasks run', () =>
  withScope(async (s) => {
    const ps = pairs(s, 6);
    let microtaskRan = false;
    const seen: Array<{ socket: number; text: string; microtaskRan: boolean }> = [];
    const all = countdown(ps.length);
    ps.forEach(({ served }, i) =>
      served.setMessageHandler((err, data) => {
        expect(err).toBeNull();
        seen.push({ socket: i, text: data!.toString(), microtaskRan });
        queueMicrotask(() => (microtaskRan = true));
        all.tick();
      }),
    );
    ps.forEach(({ client }, i) => expect(client.write(Buffer.from(`to ${i}`))).toBe(true));
    await all.done;
    expect(seen.map((m) => m.microtaskRan)).toEqual(ps.map(() => false));
    expect(seen.map((m) => m.text).sort()).toEqual(ps.map((_, i) => `to ${i}`).sort());
    expect(seen.every((m) => m.text === `to ${m.socket}`)).toBe(true);
    expect(microtaskRan).toBe(true);
  }));

test("a socket's next message is handed over only after the previous one's microtasks ran, in order", () =>
  withScope(async (s) => {
    const [{ client, served }] = pairs(s, 1) as [Pair];
    const texts = ['one', 'two', 'three', 'four'];
    const seen: string[] = [];
    let previousSettled = true;
    const all = countdown(texts.length);
    served.setMessageHandler((err, data) => {
      expect(err).toBeNull();
      expect(previousSettled).toBe(true);
      seen.push(data!.toString());
      previousSettled = false;
      // Two hops: the whole chain of the previous message's reactions runs first.
      void Promise.resolve()
        .then(() => undefined)
        .then(() => (previousSettled = true));
      all.tick();
    });
    for (const t of texts) expect(client.write(Buffer.from(t))).toBe(true);
    await all.done;
    expect(seen).toEqual(texts);
  }));

test('receive() on a batched socket keeps its own copy of each message', () =>
  withScope(async (s) => {
    const ps = pairs(s, 2);
    const round = async (tag: string): Promise<string[]> => {
      ps.forEach(({ client }, i) => client.write(Buffer.from(`${tag} ${i} `.repeat(40))));
      return Promise.all(ps.map(async ({ served }) => (await served.receive()).data.toString()));
    };
    const first = await round('first');
    const firstAgain = [...first];
    const second = await round('second');
    expect(first).toEqual(firstAgain);
    expect(first).toEqual(ps.map((_, i) => `first ${i} `.repeat(40)));
    expect(second).toEqual(ps.map((_, i) => `second ${i} `.repeat(40)));
  }));

test('every fd arrives once, with its own message, on the socket it was sent to (generated)', async () => {
  // Per socket, the fd count of each message it is sent.
  const plan = fc.array(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 5 });
  await fc.assert(
    fc.asyncProperty(plan, (perSocket) =>
      withScope(async (s) => {
        const before = openFdTable();
        const ps = pairs(s, perSocket.length);
        const total = perSocket.reduce((n, msgs) => n + msgs.length, 0);
        const sent: number[][][] = perSocket.map((msgs) => msgs.map((k) => Array.from({ length: k }, () => s.own(makeMemfd('batch')).fd)));
        const got: Array<Array<{ text: string; fds: number[] }>> = perSocket.map(() => []);
        const all = countdown(total);
        ps.forEach(({ served }, i) =>
          served.setMessageHandler((err, data, fds) => {
            expect(err).toBeNull();
            got[i]!.push({ text: data!.toString(), fds: s.ownAll(fds ?? []).map((o) => o.fd) });
            all.tick();
          }),
        );
        ps.forEach(({ client }, i) => sent[i]!.forEach((fds, m) => expect(client.write(Buffer.from(`${i}.${m}`), fds)).toBe(true)));
        await all.done;
        got.forEach((messages, i) => {
          expect(messages.map((m) => m.text)).toEqual(sent[i]!.map((_, m) => `${i}.${m}`));
          messages.forEach((m, k) => {
            const want = sent[i]![k]!;
            expect(m.fds).toHaveLength(want.length);
            m.fds.forEach((fd, j) => expect(sameFile(fd, want[j]!)).toBe(true));
          });
        });
        s.dispose();
        expectFdTable(before);
      }),
    ),
    { numRuns: 25 },
  );
});

test("a batched socket closed by another socket's handler before its message was handed over: the message's fds are closed, nobody's else", () =>
  withScope(async (s) => {
    const before = openFdTable();
    const [victim] = pairs(s, 1) as [Pair];
    const [closer] = pairs(s, 1, false) as [Pair];
    const kept = s.own(makeMemfd('kept'));
    let victimHandled = 0;
    victim.served.setMessageHandler(() => victimHandled++);
    const closed = new Promise<void>((resolve) =>
      closer.served.setMessageHandler((err) => {
        expect(err).toBeNull();
        victim.served.close();
        resolve();
      }),
    );
    // The victim's message is read first (epoll reports in readiness order)
    // and waits in the batch; the unbatched closer's handler runs in the
    // same poll phase and closes the victim before the batch is handed over.
    expect(victim.client.write(Buffer.from('never handled'), [kept.fd])).toBe(true);
    expect(closer.client.write(Buffer.from('close it'))).toBe(true);
    await closed;
    await new Promise((r) => setImmediate(r));
    expect(victimHandled).toBe(0);
    s.dispose();
    await openBackgroundClosesDone(); // a peer's fds go to the background closer
    expectFdTable(before);
  }));
