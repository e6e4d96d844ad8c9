/**
 * Test utilities: one fd of each kind fdbridge holds for itself (its
 * registry), with what shows its owner still works, and its end: for the
 * tests that name such a number where a caller names its own fds.
 */
import fc from 'fast-check';

import { connect, HelperDaemon, PROBE_COMMAND, SystemError, type Connection } from '../../src';
import { closeFds, closeOwnFd, fdIdentity, makeMemfd, openFdTable, type FdIdentity } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';
import { UnixSocket } from '../../src/socket';
import { fdTableSettles } from './processes';
import { registeredFds, registeredSince } from './registered-fds';

/** The kinds of fd fdbridge holds for itself that ownFd makes. */
export const OWN_KINDS = ['child connection socket', 'helper daemon listening socket', 'own socket pair end', 'pin', "direct command's copy"] as const;
export type OwnKind = (typeof OWN_KINDS)[number];

/** One fd of fdbridge's own of `kind`, with what shows its owner still works, and its end. */
export async function ownFd(kind: OwnKind): Promise<{ fd: number; works(): Promise<void>; end(): Promise<void> }> {
  const had = registeredFds();
  switch (kind) {
    case 'child connection socket': {
      const conn: Connection = await connect('child', { command: PROBE_COMMAND });
      const fd = [...registeredSince(had)].find(([, target]) => target.startsWith('socket:'))?.[0];
      if (fd === undefined) throw new Error('the child connection registered no socket');
      return { fd, works: async () => void expect(await conn.call('echo', 'still')).toBe('still'), end: () => conn.close() };
    }
    case 'helper daemon listening socket': {
      const daemon = HelperDaemon.start({ diagnostics: true, socketPath: `@fdbridge-own-fd-second-owner-${process.pid}` });
      const fd = [...registeredSince(had)].find(([, target]) => target.startsWith('socket:'))?.[0];
      if (fd === undefined) throw new Error('the daemon registered no listening socket');
      return {
        fd,
        works: async () => {
          const c = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath });
          expect(await c.call('echo', 'served')).toBe('served');
          await c.close();
        },
        end: () => daemon.close(),
      };
    }
    case 'own socket pair end': {
      const [a, b] = UnixSocket.pair('seqpacket', { own: true });
      return {
        fd: a.fd,
        works: async () => {
          await a.send(Buffer.from('x'));
          expect((await b.receive()).data.toString()).toBe('x');
        },
        end: async () => {
          a.close();
          b.close();
        },
      };
    }
    case "direct command's copy": {
      // Given to the command and not adopted: the connection's, which closes it.
      const memfd = makeMemfd('own-fd-given-copy');
      const conn: Connection = await connect('direct', { command: PROBE_COMMAND });
      const copy = await conn.dupFileDescriptor(memfd);
      return {
        fd: copy,
        works: async () => void expect(await conn.call('identities', [copy])).toEqual(await conn.call('identities', [memfd])),
        end: async () => {
          await conn.close();
          closeFds([memfd]);
        },
      };
    }
    case 'pin': {
      const memfd = makeMemfd('own-fd-second-owner');
      const pin = holdOwnCopy(memfd);
      return {
        fd: pin,
        works: async () => void expect(fdIdentity(pin)).toEqual(fdIdentity(memfd)),
        end: async () => {
          closeOwnFd(pin);
          closeFds([memfd]);
        },
      };
    }
  }
}

/**
 * The checks of one of fdbridge's own fds, `fd`, refused where a caller
 * named it to `operation`: `err` a SystemError EBADF whose message names
 * the operation and the fd, and `fd` still `file`.
 */
export function expectOwnFdRefused(err: unknown, operation: string, fd: number, file: FdIdentity): void {
  expect({ systemError: err instanceof SystemError, code: (err as { code?: unknown }).code }).toEqual({ systemError: true, code: 'EBADF' });
  expect((err as Error).message).toContain(`${operation}: fd ${fd} is one of fdbridge's own`);
  expect(fdIdentity(fd)).toEqual(file);
}

/**
 * Checks, generated over `kinds` (`numRuns` runs, the first of each kind),
 * that `act`, which names one of fdbridge's own fds of the run's kind to
 * `operation`, is refused: what it throws or rejects with passes
 * expectOwnFdRefused, and the fd's owner still works. This process's fd
 * table is the same afterwards.
 */
export async function checkOwnFdsRefused(kinds: readonly OwnKind[], operation: string, act: (fd: number) => unknown, numRuns: number): Promise<void> {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...kinds), async (kind) => {
      const own = await ownFd(kind);
      try {
        const file = fdIdentity(own.fd);
        const err = await (async () => act(own.fd))().catch((e: unknown) => e);
        expectOwnFdRefused(err, operation, own.fd, file);
        await own.works();
      } finally {
        await own.end();
      }
    }),
    { numRuns, examples: kinds.map((k) => [k]) },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}
