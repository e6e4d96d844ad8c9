/**
 * closeFd and closeFds (public) close the caller's own fds only. A number fdbridge
 * holds for itself (its registry: a connection's socket, a helper daemon's
 * listening socket, an `own` socket pair's end, a pin, a copy given to a
 * command and not adopted) is refused as every number of fdbridge's own is
 * where a caller names an fd: a SystemError EBADF naming it, the fd left as
 * it was and its owner still working. Closed, its owner would go on using
 * the number, another file's by then perhaps, and close it again. A
 * closeFds list naming one is refused before anything is closed: nothing
 * of the list closed, as closeClientFds refuses a list. An OwnedFd owns
 * the caller's fds only: one of such a number is refused at construction,
 * and its close() of a number that one of fdbridge's own fds took since
 * (the caller closed it behind the object's back) is refused as closeFd's.
 */
import fc from 'fast-check';

import { closeFd, closeFds, OwnedFd } from '../../src';
import { fdFloor, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';
import { openAt } from '../util/open-at';
import { checkOwnFdsRefused, expectOwnFdRefused, OWN_KINDS, ownFd, type OwnKind } from '../util/own-fds';
import { fdTableSettles } from '../util/processes';

test("generated: closeFd of one of fdbridge's own fds: SystemError EBADF naming it, the fd as it was and its owner working", () =>
  checkOwnFdsRefused(OWN_KINDS, 'closeFd', (fd) => closeFd(fd), 12));

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
        expectOwnFdRefused(err, 'closeFds', own.fd, files[list.indexOf(own.fd)]!);
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

/** What `fn` throws (undefined for nothing). */
function thrownBy(fn: () => void): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

test("generated: new OwnedFd of one of fdbridge's own fds: SystemError EBADF naming it, the fd as it was and its owner working", () =>
  checkOwnFdsRefused(OWN_KINDS, 'new OwnedFd', (fd) => new OwnedFd(fd), 10));

/** The kinds whose fd takes the lowest free number at or above the fd floor. */
const AT_FLOOR: readonly OwnKind[] = ['pin', 'own socket pair end', "direct command's copy"];

test("generated: an OwnedFd's close of its number, closed behind its back and taken by one of fdbridge's own fds: SystemError EBADF naming it, that fd open, its owner working", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...AT_FLOOR), fc.boolean(), async (kind, disposed) => {
      // The caller's fd at the number fdbridge's next fd of its own takes: the lowest free one at or above the floor.
      const table = openFdTable();
      let n = fdFloor();
      while (table.has(n)) n++;
      const owned = new OwnedFd(openAt('/dev/null', n));
      closeFd(n); // behind the OwnedFd's back: the caller's double close to come
      const own = await ownFd(kind);
      try {
        expect({ at: own.fd, registered: fdRegistration(n) !== 0 }).toEqual({ at: n, registered: true });
        const file = fdIdentity(n);
        const err = thrownBy(() => (disposed ? owned[Symbol.dispose]() : owned.close()));
        expectOwnFdRefused(err, 'OwnedFd.close', n, file);
        // The number is forgotten: a second close does nothing.
        expect(owned.closed).toBe(true);
        owned.close();
        expect(fdIdentity(n)).toEqual(file);
        await own.works();
      } finally {
        await own.end();
      }
    }),
    { numRuns: 8, examples: AT_FLOOR.map((k) => [k, false]) },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
