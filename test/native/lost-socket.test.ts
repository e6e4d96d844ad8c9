/**
 * A socket of fdbridge's own whose fd the program closes behind its back,
 * the number then taken by another file: a socket fdbridge makes there, a
 * socket the program makes there and wraps, or an fd of fdbridge's that
 * nobody polls. The lost socket lets go of the number: the new socket is
 * made (libuv's uv_poll_init would fail with EEXIST while the lost one's
 * poll still held the number) and gets its messages, the lost one never
 * reads, writes or polls there, and its close neither closes the new file
 * nor takes the new socket's epoll entry with it. Events of the lost
 * socket's file can still come under the number while that file is open
 * elsewhere (a copy the test keeps): they are never acted on.
 */
import { closeSync } from 'node:fs';

import fc from 'fast-check';

import { closeFds, fdIdentity, makeMemfd } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { scaled } from '../util/time-scale';
import { constants, native } from './binding';

const SEQPACKET = constants.SOCK_SEQPACKET;

/** Who takes the number: a socket fdbridge makes and wraps, one the program makes and wraps, an fd of fdbridge's nobody polls. */
type Taker = 'fdbridge-socket' | 'program-socket' | 'fdbridge-fd';
/** When the lost socket is closed: before the new one polls, once it polls, or after the messages were sent. */
type CloseAt = 'first' | 'middle' | 'last';

interface Case {
  oldReading: boolean;
  keptElsewhere: boolean;
  taker: Taker;
  closeAt: CloseAt;
}

/** Socket pairs (fdbridge's own when `own`) made until one end lands on `fd`: [that end, its peer], the others closed. */
function pairAt(fd: number, own: boolean): [number, number] {
  const spare: number[] = [];
  try {
    for (;;) {
      const [x, y] = native.socketpair(SEQPACKET, own);
      if (x === fd) return [x, y];
      if (y === fd) return [y, x];
      spare.push(x, y);
      if (x > fd && y > fd) throw new Error(`socket pairs skipped fd ${fd} (got ${x}, ${y})`);
    }
  } finally {
    closeFds(spare);
  }
}

/** A few turns of the event loop (each setImmediate runs after a poll phase). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

const sameIdentity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

async function runCase(c: Case): Promise<void> {
  const [a, b] = native.socketpair(SEQPACKET, true);
  const old = new UnixSocket(a, 'seqpacket');
  const oldPeer = new UnixSocket(b, 'seqpacket');
  const oldGot: string[] = [];
  const cleanups: Array<() => void> = [() => old.close(), () => oldPeer.close()];
  try {
    if (c.oldReading) {
      old.setMessageHandler((err, data, fds) => {
        oldGot.push(err ? `error ${err.message}` : String(data));
        if (fds && fds.length > 0) closeFds(fds);
      });
    }
    await turns(2); // its poll is in epoll
    if (c.keptElsewhere) {
      const keep = native.dup(a);
      cleanups.push(() => closeFds([keep]));
    }
    closeSync(a); // behind fdbridge's back
    const [n, np] = pairAt(a, c.taker !== 'program-socket');
    let fresh: UnixSocket | undefined;
    let freshPeer: UnixSocket | undefined;
    if (c.taker === 'fdbridge-fd') {
      cleanups.push(() => closeFds([n, np]));
      freshPeer = undefined;
    } else {
      try {
        fresh = new UnixSocket(n, 'seqpacket');
      } catch (err) {
        closeFds([n, np]);
        throw err;
      }
      const made = fresh;
      cleanups.push(() => made.close());
    }
    if (c.taker !== 'fdbridge-fd') {
      freshPeer = new UnixSocket(np, 'seqpacket');
      const peer = freshPeer;
      cleanups.push(() => peer.close());
    }
    const newFile = sameIdentity(n);
    if (c.closeAt === 'first') old.close();
    const arriving = fresh?.receive({ timeoutMs: scaled(5000) });
    await turns(2); // the new socket's poll is in epoll
    if (c.closeAt === 'middle') old.close();
    const memfd = makeMemfd('lost-socket');
    try {
      // Reaches the lost socket's file only while a copy keeps it open.
      await oldPeer.send(Buffer.from('to-old'), [memfd]).catch(() => undefined);
      if (freshPeer) await freshPeer.send(Buffer.from('to-new'), [memfd]);
      else native.sendNow(np, Buffer.from('to-new'), [memfd]);
    } finally {
      closeFds([memfd]);
    }
    await turns(3);
    if (c.closeAt === 'last') old.close();
    // The new file is still there, and still the new file.
    expect(sameIdentity(n)).toBe(newFile);
    if (arriving) {
      const m = await arriving;
      closeFds(m.fds);
      expect([String(m.data), m.fds.length]).toEqual(['to-new', 1]);
    } else {
      const m = native.recvNow(n, 64, 4);
      if (m) closeFds(m.fds);
      expect(m && [Buffer.from(m.data).toString(), m.fds.length]).toEqual(['to-new', 1]);
    }
    // The lost socket read nothing from the number, neither its own file's message nor the new one's.
    expect(oldGot).toEqual([]);
  } finally {
    for (const cleanup of cleanups.reverse()) cleanup();
  }
}

const cases = fc.record({
  oldReading: fc.boolean(),
  keptElsewhere: fc.boolean(),
  taker: fc.constantFrom<Taker>('fdbridge-socket', 'program-socket', 'fdbridge-fd'),
  closeAt: fc.constantFrom<CloseAt>('first', 'middle', 'last'),
});

test('generated: a socket closed behind fdbridge\'s back lets go of its number: the file that takes it gets its messages, the lost socket reads none, and its close leaves the new one polled', async () => {
  await fc.assert(fc.asyncProperty(cases, runCase), {
    seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261201),
    numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 40),
  });
});

test.each([
  [{ oldReading: true, keptElsewhere: false, taker: 'fdbridge-socket', closeAt: 'last' }],
  [{ oldReading: true, keptElsewhere: false, taker: 'program-socket', closeAt: 'last' }],
  [{ oldReading: true, keptElsewhere: true, taker: 'fdbridge-fd', closeAt: 'last' }],
  [{ oldReading: false, keptElsewhere: false, taker: 'fdbridge-socket', closeAt: 'middle' }],
] as Array<[Case]>)('%o', async (c) => {
  await runCase(c);
});
