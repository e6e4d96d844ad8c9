/**
 * closeFd and closeFds (public) close the caller's own fds only. A number fdbridge
 * holds for itself (its registry: a connection's socket, a helper daemon's
 * listening socket, an `own` socket pair's end, a pin, a copy given to a
 * command and not adopted) is refused as every number of fdbridge's own is
 * where a caller names an fd: a SystemError EBADF naming it, the fd left as
 * it was and its owner still working. Closed, its owner would go on using
 * the number, another file's by then perhaps, and close it again. A
 * closeFds list naming one is refused before anything is closed: nothing
 * of the list closed, as closeClientFds refuses a list.
 */
import fc from 'fast-check';

import { closeFd, closeFds, SystemError } from '../../src';
import { fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { expectOwnFdRefused, OWN_KINDS, ownFd } from '../util/own-fds';
import { fdTableSettles } from '../util/processes';

test("generated: closeFd of one of fdbridge's own fds: SystemError EBADF naming it, the fd as it was and its owner working", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...OWN_KINDS), async (kind) => {
      const own = await ownFd(kind);
      try {
        const file = fdIdentity(own.fd);
        let err: unknown;
        try {
          closeFd(own.fd);
        } catch (e) {
          err = e;
        }
        expectOwnFdRefused(err, own.fd, file);
        await own.works();
      } finally {
        await own.end();
      }
    }),
    { numRuns: 12, examples: OWN_KINDS.map((k) => [k]) },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("generated: closeFds of a list naming one of fdbridge's own fds: SystemError EBADF naming it, nothing of the list closed, its owner working", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...OWN_KINDS), fc.nat({ max: 3 }), fc.nat(), fc.boolean(), async (kind, mine, at, asSet) => {
      const own = await ownFd(kind);
      const memfds = Array.from({ length: mine }, () => makeMemfd('close-fds-own'));
      try {
        const list = [...memfds];
        list.splice(at % (mine + 1), 0, own.fd);
        const files = list.map((fd) => fdIdentity(fd));
        let err: unknown;
        try {
          closeFds(asSet ? new Set(list) : list);
        } catch (e) {
          err = e;
        }
        expect({ systemError: err instanceof SystemError, code: (err as { code?: unknown }).code }).toEqual({ systemError: true, code: 'EBADF' });
        expect((err as Error).message).toContain(`closeFds: fd ${own.fd} is one of fdbridge's own`);
        expect(list.map((fd) => fdIdentity(fd))).toEqual(files);
        await own.works();
      } finally {
        expect(closeFds(memfds)).toBe(mine);
        await own.end();
      }
    }),
    { numRuns: 12, examples: OWN_KINDS.map((k) => [k, 1, 1, false]) },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
