/**
 * An fd argument that is not a non-negative integer is a bad argument
 * wherever fds are sent: UnixSocket.send and write, DatagramSocket.sendTo
 * and a connection's dupFileDescriptor(s) all throw the same TypeError at
 * once, before any syscall, and nothing of that message leaves: the peer's
 * next message is the next good one, and the good fds named beside the bad
 * one are untouched. (A closed fd, which only the kernel can tell, is still
 * EBADF from sendmsg.) The jest setup checks the open-fd table after each test.
 */
import fc from 'fast-check';

import { connect, DatagramSocket, PROBE_COMMAND, UnixSocket } from '../../src';
import { closeFd, closeFds, fdFlags, makeMemfd, sameFile } from '../../src/fd';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { abstractName } from './helpers';

/** Anything but a non-negative integer. */
const badFd = fc.oneof(
  fc.integer({ min: -0x80000000, max: -1 }),
  fc.double({ noInteger: true }),
  fc.constantFrom(Number.NaN, Infinity, -Infinity, -0.5),
  fc.constantFrom<unknown>('3', null, undefined, {}, [3], 3n),
);

/** A list of good fds (indices into `good`) with one bad fd somewhere in it. */
const fdListWithBad = fc.tuple(fc.array(fc.nat(2), { maxLength: 5 }), fc.nat(5), badFd).map(([goods, at, bad]) => ({ goods, at: Math.min(at, goods.length), bad }));

function withBad(good: readonly number[], list: { goods: number[]; at: number; bad: unknown }): number[] {
  const fds: unknown[] = list.goods.map((i) => good[i]);
  fds.splice(list.at, 0, list.bad);
  return fds as number[];
}

function thrownAtOnce(f: () => unknown): unknown {
  try {
    const p = f();
    // A promise means it did not throw: keep its rejection from going unhandled.
    if (p instanceof Promise) p.catch(() => undefined);
  } catch (err) {
    return err;
  }
  return undefined;
}

test('UnixSocket.send and write: a bad fd is a TypeError at once, and nothing of that message is sent', async () => {
  const [a, b] = rawSocketPair('seqpacket');
  const s = new UnixSocket(a, 'seqpacket');
  const good = [makeMemfd('good-0'), makeMemfd('good-1'), makeMemfd('good-2')];
  try {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fdListWithBad, fc.boolean(), async (list, viaWrite) => {
        const fds = withBad(good, list);
        const err = thrownAtOnce(() => (viaWrite ? s.write(Buffer.from('bad'), fds) : s.send(Buffer.from('bad'), fds)));
        expect(err).toBeInstanceOf(TypeError);
        expect((err as Error).message).toBe(`fds[${list.at}] must be a non-negative integer, not ${String(list.bad)}`);
        const tag = `good ${n++}`;
        await s.send(Buffer.from(tag), [good[0] as number]);
        const m = receiveNow(b, 64, 4);
        expect(m?.data.toString()).toBe(tag);
        expect(m?.fds.length).toBe(1);
        const same = sameFile(m?.fds[0] as number, good[0] as number);
        closeFds(m?.fds ?? []);
        expect(same).toBe(true);
        // Nothing else was queued behind it.
        expect(receiveNow(b, 64, 4)).toBeNull();
      }),
      { numRuns: 100 },
    );
    // The good fds were borrowed, never closed (fdFlags is EBADF on a closed one).
    good.forEach((fd) => expect(fdFlags(fd).cloexec).toBe(true));
  } finally {
    s.close();
    closeFd(b);
    closeFds(good);
  }
});

test('DatagramSocket.sendTo: a bad fd is a TypeError at once, and nothing of that datagram is sent', async () => {
  const name = abstractName('fd-args');
  const rx = DatagramSocket.bind({ abstract: name });
  const tx = DatagramSocket.open();
  const good = [makeMemfd('good-0'), makeMemfd('good-1'), makeMemfd('good-2')];
  try {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fdListWithBad, async (list) => {
        const fds = withBad(good, list);
        const err = thrownAtOnce(() => tx.sendTo({ abstract: name }, Buffer.from('bad'), fds));
        expect(err).toBeInstanceOf(TypeError);
        expect((err as Error).message).toBe(`fds[${list.at}] must be a non-negative integer, not ${String(list.bad)}`);
        const tag = `good ${n++}`;
        await tx.sendTo({ abstract: name }, Buffer.from(tag), [good[1] as number]);
        const d = await rx.receive();
        const same = d.fds.length === 1 && sameFile(d.fds[0] as number, good[1] as number);
        closeFds(d.fds);
        expect(d.data.toString()).toBe(tag);
        expect(same).toBe(true);
      }),
      { numRuns: 100 },
    );
  } finally {
    tx.close();
    rx.close();
    closeFds(good);
  }
});

test('the message is the one dupFileDescriptor(s) give for the same fd', async () => {
  const conn = await connect('direct', { command: PROBE_COMMAND });
  const [a, b] = rawSocketPair('seqpacket');
  const s = new UnixSocket(a, 'seqpacket');
  try {
    for (const bad of [-1, 1.5, Number.NaN]) {
      const viaSend = thrownAtOnce(() => s.send(Buffer.from('x'), [bad])) as Error;
      const viaDup = thrownAtOnce(() => conn.dupFileDescriptors([bad])) as Error;
      expect(viaSend).toBeInstanceOf(TypeError);
      expect(viaDup).toBeInstanceOf(TypeError);
      expect(viaSend.message).toBe(viaDup.message);
    }
  } finally {
    s.close();
    closeFd(b);
    await conn.close();
  }
});
