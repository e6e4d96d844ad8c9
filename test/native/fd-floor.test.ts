/**
 * The fds fdbridge makes for itself are numbered at or above a floor (half
 * the soft RLIMIT_NOFILE, at most 8192) that the caller's fds, which take
 * the lowest free numbers, do not reach: a number the caller closed cannot
 * come back as one of ours. Also: what happens near and at the limit.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { closeFd, closeFds, closeOwnFd, closeOwnFds, dupFd, fdLimit, openFdTable } from '../../src/fd';
import { native } from './binding';
import { UnixServer, UnixSocket, wrapOwnSocket } from '../../src/socket';
import { expectSystemError, thrown, withScope } from './helpers';

const FIXTURE = join(__dirname, 'fd-floor-limits.js');

/** The lowest free fd number now. */
function lowestFree(): number {
  const fd = dupFd(0);
  closeFd(fd);
  return fd;
}

test('the floor is half the soft limit, at most 8192; dupHigh and dupAll stay at or above it', () => {
  const [soft] = fdLimit();
  const floor = native.fdFloor();
  expect(floor).toBe(Math.min(Math.floor(soft / 2), 8192));
  const one = native.dupHigh(0);
  const all = native.dupAll([0, 1, 2]);
  const above = native.dupAll([0], floor + 100);
  try {
    expect(one).toBeGreaterThanOrEqual(floor);
    for (const fd of all) expect(fd).toBeGreaterThanOrEqual(floor);
    expect(above[0]).toBeGreaterThanOrEqual(floor + 100);
  } finally {
    closeOwnFds([one, ...all, ...above]);
  }
});

test('a closed number stays closed: dupHigh of it is EBADF even right after dupHigh of another fd', () => {
  const b = dupFd(0);
  closeFd(b);
  expect(lowestFree()).toBe(b);
  const copy = native.dupHigh(1);
  try {
    expect(copy).not.toBe(b);
    expectSystemError(thrown(() => native.dupHigh(b)), 'EBADF', 'dup');
    expectSystemError(thrown(() => native.dupAll([1, b])), 'EBADF', 'dup');
  } finally {
    closeOwnFd(copy);
  }
});

test('an fd fdbridge holds for itself is refused as closed wherever a caller names one, until closed or disowned', () =>
  withScope(async (s) => {
    const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
    const count = native.ownedFdCount();
    const ours = native.dupHigh(1);
    const [ours2] = native.dupAll([1]) as [number];
    try {
      expect(native.ownedFdCount()).toBe(count + 2);
      // Open, but ours: what a caller gets for it is what a closed fd gets.
      expectSystemError(thrown(() => native.dupHigh(ours)), 'EBADF', 'dup');
      expectSystemError(thrown(() => native.dupAll([1, ours])), 'EBADF', 'dup');
      expectSystemError(thrown(() => a.write(Buffer.from('x'), [ours])), 'EBADF', 'sendmsg');
      // Sent as our own pin, it goes; and it is the first message: nothing
      // went for the refused write.
      expect(a.write(Buffer.from('y'), [ours], undefined, undefined, { ownFds: true })).toBe(true);
      const got = await b.receive();
      closeFds(got.fds);
      expect({ data: got.data.toString(), fds: got.fds.length }).toEqual({ data: 'y', fds: 1 });
      // Adopted by a command: a caller may name it.
      native.disown(ours2);
      expect(native.ownedFdCount()).toBe(count + 1);
      closeOwnFd(native.dupHigh(ours2));
    } finally {
      closeOwnFds([ours, ours2]);
    }
    // Closed: unregistered, and the number is a caller's to take again.
    expect(native.ownedFdCount()).toBe(count);
  }));

test('a queued send keeps its copies above the floor: a number closed just before stays EBADF', () =>
  withScope(async (s) => {
    const [a, b] = UnixSocket.pair('seqpacket').map((x) => s.add(x)) as [UnixSocket, UnixSocket];
    const chunk = Buffer.alloc(32 * 1024);
    const outcomes: Array<Promise<Error | null>> = [];
    const write = (fds?: number[]): boolean => {
      let settle!: (err: Error | null) => void;
      const outcome = new Promise<Error | null>((r) => (settle = r));
      const now = a.write(chunk, fds, settle);
      if (!now) outcomes.push(outcome); // only a queued write calls back
      return now;
    };
    for (let i = 0; i < 10000 && write(); i++);
    expect(a.queuedSends).toBeGreaterThan(0);
    const closed = dupFd(0);
    closeFd(closed);
    const before = openFdTable();
    expect(write([1])).toBe(false); // queued with its own copy of fd 1
    const added = [...openFdTable().keys()].filter((fd) => !before.has(fd));
    expect(added).toHaveLength(1);
    expect(added[0]).toBeGreaterThanOrEqual(native.fdFloor());
    expectSystemError(thrown(() => a.write(chunk, [closed])), 'EBADF');
    a.close();
    b.close();
    await Promise.all(outcomes);
  }));

test("the library's own sockets (own: true) are numbered above the floor and registered until closed; a caller's are not", () =>
  withScope(async (s) => {
    const count = native.ownedFdCount();
    const floor = native.fdFloor();
    const b = dupFd(0);
    closeFd(b);
    expect(lowestFree()).toBe(b);
    // A caller's pair takes the lowest free numbers, and the caller may send them.
    const [c1, c2] = native.socketpair(native.constants.SOCK_SEQPACKET);
    closeFds([c1 as number, c2 as number]);
    expect(c1).toBe(b);
    const [o1, o2] = native.socketpair(native.constants.SOCK_SEQPACKET, true) as [number, number];
    const [p1, p2] = native.socketpair(native.constants.SOCK_SEQPACKET, false) as [number, number];
    const unbound = native.dgramSocket(true);
    // An own pair's end: fdbridge's wrap of it (wrapOwnSocket), the one owner its registration is for.
    const mine = s.add(wrapOwnSocket(o1, 'seqpacket'));
    const theirs = s.add(new UnixSocket(p1, 'seqpacket'));
    try {
      expect([o1, o2, unbound].filter((fd) => fd < floor)).toEqual([]);
      expect(native.ownedFdCount()).toBe(count + 3);
      expect(p1).toBe(b); // the lowest free number is still free: none of ours took it
      for (const fd of [o1, o2, unbound]) expectSystemError(thrown(() => native.dupHigh(fd)), 'EBADF', 'dup');
      closeOwnFd(native.dupHigh(p1));
      // What arrives on a socket of ours is ours, from the moment it is
      // received (registered in the same step as the recvmsg).
      native.sendNow(o2, Buffer.from('fds'), [0, 1]);
      const got = await mine.receive();
      try {
        expect(got.fds).toHaveLength(2);
        expect(native.ownedFdCount()).toBe(count + 5);
        for (const fd of got.fds) expectSystemError(thrown(() => native.dupHigh(fd)), 'EBADF', 'dup');
      } finally {
        closeOwnFds(got.fds);
      }
      // And on a caller's socket, the caller's.
      native.sendNow(p2, Buffer.from('fds'), [0]);
      const plain = await theirs.receive();
      closeOwnFd(native.dupHigh(plain.fds[0] as number));
      closeFds(plain.fds);
    } finally {
      mine.close();
      theirs.close();
      closeOwnFds([o2, p2, unbound]);
    }
    expect(native.ownedFdCount()).toBe(count);
  }));

test('a connection accepted on a listening socket of ours is ours; on a caller\'s, the caller\'s', () =>
  withScope(async (s) => {
    const count = native.ownedFdCount();
    const floor = native.fdFloor();
    for (const own of [true, false]) {
      const name = `fdbridge-floor-accept-${process.pid}-${own}`;
      const server = s.add(UnixServer.listen({ abstract: name }, { own }));
      const accepted = server.accept();
      const client = s.add(await UnixSocket.connect({ abstract: name }));
      const socket = s.add(await accepted);
      expect({ own, listening: server.fd >= floor, accepted: socket.fd >= floor }).toEqual({ own, listening: own, accepted: own });
      expect(native.ownedFdCount()).toBe(count + (own ? 2 : 0));
      socket.close();
      client.close();
      server.close();
      expect(native.ownedFdCount()).toBe(count);
    }
  }));

test.each([1024, 64])('near a soft limit of %i (lowered after the floor was read)', (limit) => {
  const report = JSON.parse(execFileSync(process.execPath, [FIXTURE, String(limit)], { encoding: 'utf8' })) as {
    floorBefore: number;
    first: number;
    floorAfter: number;
    whenFull: string;
    ours: { count: number; lowest: number; highest: number };
    callersDup: number;
    topFd: number;
    topCopies: number[];
    withClosed: string;
    floorRaised: number;
  };
  const floor = limit / 2;
  expect(report.floorBefore).toBeGreaterThanOrEqual(limit); // the limit really moved under it
  // The limit went below the floor read before: it is read again.
  expect(report.floorAfter).toBe(floor);
  expect(report.first).toBeGreaterThanOrEqual(floor);
  expect(report.first).toBeLessThan(limit);
  // Our numbers fill [floor, limit); then EMFILE, although the caller's
  // own dup still finds a lower number.
  expect(report.ours.lowest).toBeGreaterThanOrEqual(floor);
  expect(report.ours.highest).toBe(limit - 1);
  expect(report.whenFull).toBe('EMFILE');
  expect(report.callersDup).toBeLessThan(floor);
  // An fd at limit - 1 leaves no room above the list: checked, then from the floor.
  expect(report.topFd).toBe(limit - 1);
  expect(report.topCopies).toHaveLength(2);
  for (const fd of report.topCopies) {
    expect(fd).toBeGreaterThanOrEqual(floor);
    expect(fd).toBeLessThan(limit);
  }
  expect(report.withClosed).toBe('EBADF');
  // Raised again, the limit brings the floor back up.
  expect(report.floorRaised).toBe(report.floorBefore);
});
