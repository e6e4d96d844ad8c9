/**
 * DatagramSocket's options and its streaming receive, generated: the socket
 * file's mode (every mask 0..0o7777 taken as given, anything else refused
 * with nothing bound), options the socket refuses after bind (nothing left:
 * no fd, no file, the name free again), `own` (fdbridge's numbering and
 * registration), `whenFull` per socket and per datagram, and
 * setMessageHandler's datagrams (data, fds, sender, credentials, truncation).
 * Each generated case checks the open-fd table before and after it; the jest
 * setup checks it after every test.
 */
import { existsSync, lstatSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, type Datagram } from '../../src/datagram';
import { TruncatedError } from '../../src/errors';
import { formatFdTableDiff, openFdTable, sameFile } from '../../src/fd';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';
import { native } from './binding';
import { abstractName, expectFdTable, expectSystemError, openBackgroundClosesDone, rejection, settledFdTableDiff, thrown, withScope } from './helpers';

const me = { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() };

describe('the socket file', () => {
  test('generated: a mode 0..0o7777 is the file\'s permission bits; any other value is a RangeError naming it, nothing bound', () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'private');
      const good = fc.oneof(fc.constantFrom(0, 0o7777, 0o600, 0o666), fc.integer({ min: 0, max: 0o7777 }));
      const bad = fc.oneof(
        fc.integer({ max: -1 }),
        fc.constantFrom(-1, 0o10000, 0.5, -0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
        fc.integer({ min: 0o10000 }),
        fc.double({ noInteger: true }),
      );
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.oneof(good.map((mode) => ({ mode, ok: true })), bad.map((mode) => ({ mode, ok: false }))), async ({ mode, ok }) => {
          const path = join(dir, `m${n++}.sock`);
          const before = openFdTable();
          if (ok) {
            const rx = DatagramSocket.bind(path, { mode });
            try {
              expect(lstatSync(path).mode & 0o777).toBe(mode & 0o777);
            } finally {
              rx.close();
            }
          } else {
            const err = thrown(() => DatagramSocket.bind(path, { mode }));
            expect(err).toBeInstanceOf(RangeError);
            expect((err as Error).message).toContain(String(mode));
          }
          expect(existsSync(path)).toBe(false);
          expectFdTable(before);
        }),
        { numRuns: 60 },
      );
    }));

  test('generated: options the socket refuses throw after bind with nothing left: no fd, no file, the name free', () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'private');
      const refused = fc.oneof(
        fc.integer({ min: 254, max: 10_000 }).map((maxFds) => ({ maxFds })),
        fc.integer({ min: -10_000, max: -1 }).map((maxFds) => ({ maxFds })),
        fc.integer({ min: -10_000, max: 0 }).map((bufferSize) => ({ bufferSize })),
        fc.integer({ min: -10_000, max: -1 }).map((sendQueueLimit) => ({ sendQueueLimit })),
      );
      let n = 0;
      await fc.assert(
        fc.asyncProperty(refused, fc.constantFrom('path', 'abstract', 'unbound'), async (options, where) => {
          const before = openFdTable();
          const path = join(dir, `o${n}.sock`);
          const name = abstractName(`opt${n++}`);
          const make = (): DatagramSocket =>
            where === 'path' ? DatagramSocket.bind(path, options) : where === 'abstract' ? DatagramSocket.bind({ abstract: name }, options) : DatagramSocket.open(options);
          // (thrown by the addon, from another realm than jest's: compare names)
          const err = thrown(make) as Error;
          expect(err.name).toBe('RangeError');
          expect(err.message).toContain(Object.keys(options)[0]!);
          expectFdTable(before);
          expect(existsSync(path)).toBe(false);
          // Nobody is bound at the name: binding it again takes it.
          if (where !== 'unbound') (where === 'path' ? DatagramSocket.bind(path) : DatagramSocket.bind({ abstract: name })).close();
          expectFdTable(before);
        }),
        { numRuns: 40 },
      );
    }));
});

test("open({ own: true }) is fdbridge's: numbered at or above the floor and registered until closed; open() is the caller's", () =>
  withScope(() => {
    const count = native.ownedFdCount();
    const before = openFdTable();
    const lowest = native.dup(0);
    native.close(lowest);
    const own = DatagramSocket.open({ own: true });
    const theirs = DatagramSocket.open();
    try {
      expect(own.fd).toBeGreaterThanOrEqual(native.fdFloor());
      expect(theirs.fd).toBe(lowest);
      expect(native.ownedFdCount()).toBe(count + 1);
      expectSystemError(thrown(() => native.dupHigh(own.fd)), 'EBADF', 'dup');
      native.close(native.dupHigh(theirs.fd));
    } finally {
      own.close();
      theirs.close();
    }
    expect(native.ownedFdCount()).toBe(count);
    expectFdTable(before);
  }));

test.each([true, false])('an unbound socket with credentials: %s: autobound on its first send (answerable, its credentials read) only when true', (credentials) =>
  withScope(async (s) => {
    const before = openFdTable();
    const rx = s.add(DatagramSocket.bind(join(s.dir(), 'private', 'rx.sock')));
    const tx = s.add(DatagramSocket.open({ credentials }));
    await tx.sendTo(rx.address as string, Buffer.from('hello'));
    const got = await rx.receive();
    if (!credentials) {
      expect(got.from).toBeNull();
    } else {
      // The kernel's autobind: an abstract name of five hex digits.
      expect(got.from).toEqual({ abstract: expect.stringMatching(/^[0-9a-f]{5}$/) });
      await rx.sendTo(got.from as { abstract: string }, Buffer.from('answer'));
      const answer = await tx.receive();
      expect(answer.data.toString()).toBe('answer');
      expect(answer.credentials).toEqual(me);
    }
    rx.close();
    tx.close();
    expectFdTable(before);
  }));

describe('whenFull', () => {
  // unix_recvq_full: a receiver is full once it holds more than max_dgram_qlen.
  const CAPACITY = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim()) + 1;
  // Filled until a 'fail' send gives EAGAIN: how many it took.
  async function fill(tx: DatagramSocket, at: string): Promise<number> {
    for (let n = 0; ; n++) {
      try {
        await tx.sendTo(at, Buffer.from('x'), [], { whenFull: 'fail' });
      } catch (err) {
        expectSystemError(err, 'EAGAIN', 'sendto');
        return n;
      }
    }
  }

  test.each([
    ['fail', undefined, 'fail'],
    ['fail', 'wait', 'wait'],
    ['wait', 'fail', 'fail'],
    [undefined, undefined, 'wait'],
  ] as const)("the socket's %s and the datagram's %s: %s", (socketWhenFull, sendWhenFull, outcome) =>
    withScope(async (s) => {
      const rx = s.add(DatagramSocket.bind(join(s.dir(), 'private', 'rx.sock')));
      const tx = s.add(DatagramSocket.open({ whenFull: socketWhenFull }));
      const at = rx.address as string;
      const held = await fill(tx, at);
      expect(held).toBe(CAPACITY);
      const sent = tx.sendTo(at, Buffer.from('last'), [], sendWhenFull === undefined ? undefined : { whenFull: sendWhenFull });
      if (outcome === 'fail') {
        expectSystemError(await rejection(sent), 'EAGAIN', 'sendto');
        expect(tx.queuedSends).toBe(0);
      } else {
        expect(tx.queuedSends).toBe(1);
        await rx.receive();
        await sent;
        expect(tx.queuedSends).toBe(0);
      }
    }));
});

describe('setMessageHandler', () => {
  type Sent = { bound: boolean; bytes: number; fds: number };
  const BUFFER = 16;
  const MAX_FDS = 2;

  test('generated: every datagram reaches the handler in order, with its data, fds, sender and credentials; a truncated one as a TruncatedError, its fds closed', () =>
    withScope(async (s) => {
      const file = s.file('f').fd.fd;
      const dir = join(s.dir(), 'private');
      let n = 0;
      await assertGuarded(
        fc.asyncProperty(
          fc.boolean(),
          fc.array(fc.record({ bound: fc.boolean(), bytes: fc.integer({ min: 0, max: BUFFER + 4 }), fds: fc.integer({ min: 0, max: MAX_FDS + 1 }) }), { minLength: 1, maxLength: 8 }),
          async (credentials, sent: Sent[]) => {
            const before = openFdTable();
            const rx = DatagramSocket.bind<boolean>(join(dir, `rx${n}.sock`), { credentials, bufferSize: BUFFER, maxFds: MAX_FDS });
            const bound = DatagramSocket.bind(join(dir, `tx${n++}.sock`));
            const unbound = DatagramSocket.open();
            const got: Array<{ err: Error | null; d?: Datagram<boolean> }> = [];
            try {
              rx.setMessageHandler((err, d) => got.push({ err, d }));
              for (const [i, m] of sent.entries()) {
                const data = Buffer.alloc(m.bytes, i);
                await (m.bound ? bound : unbound).sendTo(rx.address as string, data, new Array<number>(m.fds).fill(file));
              }
              await new HangGuard(scaled(10_000)).until('every datagram handled', () => got.length, (k) => k >= sent.length);
              expect(got).toHaveLength(sent.length);
              for (const [i, m] of sent.entries()) {
                const { err, d } = got[i]!;
                if (m.bytes > BUFFER || m.fds > MAX_FDS) {
                  expect(err).toBeInstanceOf(TruncatedError);
                  expect(d).toBeUndefined();
                  continue;
                }
                expect(err).toBeNull();
                try {
                  expect(d!.data).toEqual(Buffer.alloc(m.bytes, i));
                  expect(d!.fds).toHaveLength(m.fds);
                  for (const fd of d!.fds) expect(sameFile(fd, file)).toBe(true);
                  expect(d!.from).toEqual(m.bound ? bound.address : null);
                  expect(d!.credentials).toEqual(credentials ? me : undefined);
                } finally {
                  for (const fd of d!.fds) native.close(fd);
                }
              }
            } finally {
              rx.close();
              bound.close();
              unbound.close();
            }
            await openBackgroundClosesDone();
            expect(formatFdTableDiff(await settledFdTableDiff(before))).toBe('');
          },
        ),
        { numRuns: 25 },
      );
    }));
});

test('a socket disposed of (using) is closed and its file removed', () =>
  withScope((s) => {
    const before = openFdTable();
    const path = join(s.dir(), 'private', 'rx.sock');
    let seen: DatagramSocket | undefined;
    {
      using rx = DatagramSocket.bind(path);
      seen = rx;
      expect(existsSync(path)).toBe(true);
    }
    expect(seen.closed).toBe(true);
    expect(seen.fd).toBe(-1);
    expect(existsSync(path)).toBe(false);
    expectFdTable(before);
  }));

test("close({ shutdown: false }) then close() again: the file stays for the socket's other holder, which is still sent to", () =>
  withScope(async (s) => {
    const before = openFdTable();
    const path = join(s.dir(), 'private', 'rx.sock');
    const rx = DatagramSocket.bind(path);
    const other = native.dup(rx.fd); // the socket's other holder (as if sent away or inherited)
    rx.close({ shutdown: false });
    rx.close(); // a second close (a scope's or `using`'s) is a no-op
    expect(existsSync(path)).toBe(true);
    const tx = DatagramSocket.open();
    await tx.sendTo(path, Buffer.from('still bound'));
    tx.close();
    native.close(other);
    rmSync(path);
    await openBackgroundClosesDone();
    expectFdTable(before);
  }));
