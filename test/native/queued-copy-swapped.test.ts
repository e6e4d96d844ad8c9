/**
 * A send waiting in a socket's queue holds fdbridge's own copies of its fds
 * (above the floor, so the caller may close its numbers at once). A program
 * that closes one of those copies' numbers behind fdbridge's back, a bug
 * fdbridge survives, and opens another file there, must not have that file
 * sent to the peer, nor closed by fdbridge afterwards: the message fails
 * (EBADF, as for a closed fd), the messages queued behind it still go, and
 * the copies it still held are closed.
 */
import { closeSync, openSync } from 'node:fs';

import fc from 'fast-check';

import { fdIdentity, openFdTable } from '../../src/fd';
import { UnixSocket, type SocketKind } from '../../src/socket';
import { openAt } from '../util/open-at';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { expectFdTable, expectSystemError, openBackgroundClosesDone, withScope } from './helpers';

const CHUNK = Buffer.alloc(32 * 1024, 0x2e);

/** Writes CHUNKs until one is queued; the outcomes of the sends. */
function fill(sock: UnixSocket): Array<Promise<unknown>> {
  const sends: Array<Promise<unknown>> = [];
  for (let i = 0; i < 10000; i++) {
    sends.push(sock.send(CHUNK).then(() => null, (err: unknown) => err));
    if (sock.queuedSends > 0) return sends;
  }
  throw new Error('the socket never filled up');
}

interface Received {
  text: string;
  fds: number[];
}

/** Reads until the data received ends with `last`. */
function drainUntil(sock: UnixSocket, last: string): Promise<Received> {
  return new Promise((resolve, reject) => {
    const got: Received = { text: '', fds: [] };
    sock.setMessageHandler((err, data, fds) => {
      if (err) return reject(err);
      got.fds.push(...fds!);
      got.text = (got.text + data!.toString()).slice(-256);
      if (got.text.endsWith(last)) resolve(got);
    });
  });
}

const identity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

type Swap = 'freed' | 'program-file';

describe('a queued send whose copy was closed behind fdbridge back', () => {
  test('fails with EBADF, sends no file of the program, closes none, and the queue goes on', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<SocketKind>('stream', 'seqpacket', 'dgram'),
        fc.oneof(fc.integer({ min: 1, max: 8 }), fc.constant(253), fc.integer({ min: 9, max: 253 })),
        fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
        fc.constantFrom<Swap>('freed', 'program-file'),
        fc.boolean(),
        (kind, nfds, picks, swap, behindWithFd) =>
          withScope(async (s) => {
            const [a, b] = UnixSocket.pair(kind).map((x) => s.add(x)) as [UnixSocket, UnixSocket];
            const fileA = s.file('a');
            const fileB = s.file('b').path;
            const fileC = s.file('c');
            const idA = identity(fileA.fd.fd);
            const filled = fill(a);
            const before = openFdTable();
            const had = registeredFds();
            // nfds distinct fds of file A, the caller's, closed once queued.
            const callers = Array.from({ length: nfds }, () => openSync(fileA.path, 'r'));
            const target = a.send(Buffer.from('target'), callers).then(
              () => null,
              (err: unknown) => err,
            );
            for (const fd of callers) closeSync(fd);
            const copies = [...registeredSince(had).keys()].sort((x, y) => x - y);
            expect(copies).toHaveLength(nfds);
            for (const fd of copies) expect(identity(fd)).toBe(idA);
            const swapped = [...new Set(picks.map((p) => copies[p % nfds]!))];
            const programFds: number[] = [];
            for (const fd of swapped) {
              closeSync(fd); // behind fdbridge's back
              if (swap === 'program-file') programFds.push(openAt(fileB, fd));
            }
            const idB = programFds.length > 0 ? identity(programFds[0]!) : '';
            const behind = a.send(Buffer.from('after'), behindWithFd ? [fileC.fd.fd] : undefined).then(
              () => null,
              (err: unknown) => err,
            );
            const got = await drainUntil(b, 'after');
            const received = s.ownAll(got.fds);
            expect(got.text).not.toContain('target');
            // Only the message behind brought an fd, file C's.
            expect(got.fds.map(identity)).toEqual(behindWithFd ? [identity(fileC.fd.fd)] : []);
            expectSystemError(await target, 'EBADF', 'sendmsg');
            expect(await behind).toBeNull();
            expect(await Promise.all(filled)).toEqual(filled.map(() => null));
            await openBackgroundClosesDone();
            // The program's files are still open at their numbers, untouched.
            for (const fd of programFds) expect(identity(fd)).toBe(idB);
            for (const fd of programFds) closeSync(fd);
            for (const fd of received) fd.close();
            expect([...registeredSince(had).keys()]).toEqual([]);
            expectFdTable(before);
          }),
      ),
      { numRuns: 24 },
    );
  });
});
