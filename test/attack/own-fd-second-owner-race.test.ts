/**
 * `new UnixSocket(fd)` and `UnixServer.fromListeningFd(fd)` check that the
 * caller's number is not one fdbridge holds for itself, and take it and
 * start polling it, in one step: a socket another thread of fdbridge's
 * makes at the number after the look (the caller's number closed, and
 * taken again) never gets a second owner, which would poll it and close it
 * again. Two threads: a worker opens sockets of fdbridge's own (socket
 * pairs; for fromListeningFd listening sockets too: at or above the fd
 * floor, registered, as connections are) and checks each works, while the
 * main thread names the numbers they take over and over
 * (test/util/own-socket-race.ts). Every attempt is refused (EBADF: not
 * open, or fdbridge's own; fromListeningFd: or a TypeError for a socket
 * that is not listening), every socket of the worker's works, and the fd
 * table is as before. Generated: the operation, the sockets' kind, how
 * many numbers from the floor the main thread names, and how many rounds
 * the worker opens.
 */
import fc from 'fast-check';

import { SystemError } from '../../src';
import { openFdTable } from '../../src/fd';
import { UnixServer, UnixSocket } from '../../src/socket';
import { raceOwnSockets } from '../util/own-socket-race';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

type Kind = 'seqpacket' | 'stream' | 'dgram';

/** Each operation: what it does with a number (closing what it took), whether its kind is only a listening one, and what it is refused with. */
const OPERATIONS = {
  'new UnixSocket (its kind found)': { listen: false, act: () => (fd: number) => new UnixSocket(fd).close() },
  'new UnixSocket (its kind given)': { listen: false, act: (kind: Kind) => (fd: number) => new UnixSocket(fd, kind).close() },
  fromListeningFd: { listen: true, act: (kind: Kind) => (fd: number) => UnixServer.fromListeningFd(fd, 'taken', { kind }).close() },
} as const;

function refused(err: unknown): boolean {
  if (err instanceof SystemError) return err.code === 'EBADF';
  return err instanceof TypeError && (err as { code?: string }).code === 'ERR_INVALID_ARG_VALUE';
}

test(
  "generated: new UnixSocket and fromListeningFd racing another thread's own sockets at the same numbers never take one",
  async () => {
    const before = openFdTable();
    const operation = fc.constantFrom(...(Object.keys(OPERATIONS) as Array<keyof typeof OPERATIONS>));
    await fc.assert(
      fc.asyncProperty(
        operation.chain((op) => fc.tuple(fc.constant(op), OPERATIONS[op].listen ? fc.constantFrom<Kind>('seqpacket', 'stream') : fc.constantFrom<Kind>('seqpacket', 'stream', 'dgram'))),
        fc.integer({ min: 2, max: 4 }),
        fc.integer({ min: 500, max: 1500 }),
        async ([op, kind], width, rounds) => {
          const { listen, act } = OPERATIONS[op];
          const seen = await raceOwnSockets({ kind, rounds, width, listen }, act(kind), refused);
          expect(seen).toEqual({ taken: [], otherErrors: [], failures: [], raced: { tries: true, overlap: true } });
        },
      ),
      { numRuns: 6, examples: [[['new UnixSocket (its kind given)', 'seqpacket'], 2, 1000], [['fromListeningFd', 'stream'], 2, 1000]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(900_000),
);
