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
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { TimeoutError } from '../../src/errors';
import { closeFds, closeOwnFds, closesSettled, fdIdentity, makeMemfd } from '../../src/fd';
import { nativeSocketOf, UnixSocket, wrapOwnSocket } from '../../src/socket';
import { DIST_SRC } from '../util/nobody';
import { openAt } from '../util/open-at';
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
    closeOwnFds(spare);
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
  const old = wrapOwnSocket(a, 'seqpacket');
  const oldPeer = wrapOwnSocket(b, 'seqpacket');
  const oldGot: string[] = [];
  const cleanups: Array<() => void> = [() => old.close(), () => oldPeer.close()];
  try {
    if (c.oldReading) {
      old.setMessageHandler((err, data, fds) => {
        oldGot.push(err ? `error ${err.message}` : String(data));
        if (fds && fds.length > 0) closeOwnFds(fds);
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
      cleanups.push(() => closeOwnFds([n, np]));
      freshPeer = undefined;
    } else {
      try {
        fresh = wrapOwnSocket(n, 'seqpacket');
      } catch (err) {
        closeOwnFds([n, np]);
        throw err;
      }
      const made = fresh;
      cleanups.push(() => made.close());
    }
    if (c.taker !== 'fdbridge-fd') {
      freshPeer = wrapOwnSocket(np, 'seqpacket');
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
      closeOwnFds(m.fds);
      expect([String(m.data), m.fds.length]).toEqual(['to-new', 1]);
    } else {
      const m = native.recvNow(n, 64, 4);
      if (m) closeOwnFds(m.fds);
      expect(m && [Buffer.from(m.data).toString(), m.fds.length]).toEqual(['to-new', 1]);
    }
    // The lost socket read nothing from the number, neither its own file's message nor the new one's.
    expect(oldGot).toEqual([]);
    // The lost socket says so (closed, what its close found); the others are not lost. Asked only
    // now: lost() looks at the file (an fstat) and lets go of the number itself, so asked before the
    // messages it would do what the checks above are about (for an fd of fdbridge's that nobody
    // polls, the take-over of the number by a new fd of fdbridge's is all that tells the socket).
    expect([old.lost(), oldPeer.lost(), fresh?.lost() ?? false, freshPeer?.lost() ?? false]).toEqual([true, false, false, false]);
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

// A socket of fdbridge's own reading, with sends waiting in its queue (its poll
// started, readable and writable); the program closes its number and a regular
// file takes it; then a change of that started poll with no call on the number
// in between: reading paused. In a process of its own: libuv aborts on an
// epoll_ctl of a regular file.
const PAUSE_AFTER_CLOSE = String.raw`
const { closeSync, openSync } = require('node:fs');
const { UnixSocket, nativeSocketOf } = require(process.argv[1]);
const path = process.argv[2];
const [a, b] = UnixSocket.pair('seqpacket', { own: true });
const receive = a.receive().catch((e) => e);
const big = Buffer.alloc(32 * 1024);
const sent = [];
while (nativeSocketOf(a).queuedSends === 0) sent.push(a.send(big).catch((e) => e));
const n = a.fd;
closeSync(n);
const others = [];
let file;
for (file = openSync(path, 'r'); file !== n; file = openSync(path, 'r')) {
  if (file > n) throw new Error('opening the file skipped fd ' + n);
  others.push(file);
}
for (const f of others) closeSync(f);
a.setSendQueueLimits({ pauseReadingAt: 0 });
setTimeout(async () => {
  a.close();
  b.close();
  const ended = await Promise.all([receive, ...sent]);
  closeSync(n);
  console.log(JSON.stringify({ lost: a.lost(), ended: ended.filter((e) => e instanceof Error).map((e) => e.name).sort()[0] }));
}, 100);
`;

test('a socket of fdbridge\'s own whose number the program closed and gave a regular file lets go of it at a pause of its started poll: the process lives on, the file left open', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-lost-'));
  try {
    const path = join(dir, 'file');
    writeFileSync(path, 'file\n');
    const r = spawnSync(process.execPath, ['-e', PAUSE_AFTER_CLOSE, join(DIST_SRC, 'socket.js'), path], { encoding: 'utf8', timeout: scaled(30_000) });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(JSON.parse(r.stdout)).toMatchObject({ lost: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a socket of fdbridge\'s own that starts reading after its number was closed and a regular file took it lets go of the number (libuv aborts on an epoll_ctl of a regular file)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-lost-'));
  const path = join(dir, 'file');
  writeFileSync(path, 'file\n');
  const [a, b] = UnixSocket.pair('seqpacket', { own: true });
  const n = a.fd;
  let file: number | undefined;
  try {
    closeSync(n); // behind fdbridge's back
    file = openAt(path, n);
    const identity = sameIdentity(n);
    // Nothing can arrive at a socket that is gone: the receive's own deadline ends it.
    await expect(a.receive({ timeoutMs: 200 })).rejects.toBeInstanceOf(TimeoutError);
    a.close();
    expect(sameIdentity(n)).toBe(identity);
  } finally {
    a.close();
    b.close();
    if (file === n) closeSync(n);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a closed socket that goes on handing fds to the background closer keeps only the tickets of closes not done', async () => {
  const [a, b] = UnixSocket.pair('seqpacket');
  const raw = nativeSocketOf(a);
  a.close();
  b.close();
  let most = 0;
  for (let i = 0; i < 200; i++) {
    const ticket = raw.closeInBackground([makeMemfd('late-ticket')]);
    await closesSettled([ticket]);
    most = Math.max(most, raw.keptTickets);
  }
  // Each close is done before the next is handed over, so at most one is not done at a drop, which
  // comes once the list holds twice what the last one kept plus 16: never more than 18.
  expect(most).toBeLessThanOrEqual(18);
  expect(raw.backgroundCloseTickets()).toEqual([]);
});
