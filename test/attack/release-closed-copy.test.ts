/**
 * A RELEASE naming copies a socket server's command closed itself
 * (fs.closeSync) is answered as serve --stdio answers it
 * (test/attack/remote-release-not-held): RESULT, those copies forgotten,
 * nothing closed for them, since they are still named in the ledger for the
 * client, not refused as "not held". Here each freed number may be taken by
 * a copy another client's DUP is given (an fd of fdbridge's own, which the
 * channel's ledger tells from the one it gave there): that copy stays open,
 * its client's to release. A helper daemon, in this process (its fds are in
 * this fd table): another client's copies land in the same process.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, makeMemfd, type Connection } from '../../src';
import { closeFds, openFdTable } from '../../src/fd';
import { daemonForSuite, fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

const FIXTURE = join(__dirname, 'fixtures', 'raw-close-command.js');

/** A hang guard for each reply, far above what one takes: a request left unanswered fails named, not at jest's limit. */
const GUARD_MS = scaled(20_000);

describe('a RELEASE naming copies the command closed itself, on the socket servers', () => {
  const suite = daemonForSuite('release-closed-copy', { commands: { rawclose: { module: FIXTURE, export: 'RawCloseCommand' } } });

  const open = (): Promise<Connection> => connect('helper', { command: { name: 'rawclose' }, socketPath: suite.daemon.socketPath });

  test(
    'generated: answered RESULT, the given ones closed, another client\'s copies that took the freed numbers left open and releasable',
    async () => {
      const before = openFdTable();
      const conn = await open();
      const other = await open();
      const releaseOn = (c: Connection, fds: number[]): Promise<void> =>
        within((c as unknown as { release(fds: number[]): Promise<void> }).release(fds), GUARD_MS, `the reply to RELEASE of ${fds.join(', ')}`);
      try {
        const { pid } = conn.location;
        // The server's table once its runtime has settled (the first call opens what it opens lazily).
        await within(conn.call('files', [0]), GUARD_MS, 'the reply to files()');
        const serverBaseline = openFdTable(pid);
        await assertGuarded(
          fc.asyncProperty(
            // Per copy: left as given, or closed by the command.
            fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }),
            async (closedMask) => {
              const files = closedMask.map((_, i) => makeMemfd(`closed-copy-${i}`));
              const takers = closedMask.map((_, i) => makeMemfd(`taker-${i}`));
              let taken: number[] = [];
              try {
                const copies = await within(conn.dupFileDescriptors(files), GUARD_MS, 'the reply to the DUP');
                const closedThere = copies.filter((_, i) => closedMask[i] === true);
                await within(conn.call('rawClose', closedThere), GUARD_MS, 'the reply to rawClose()');
                // As many of the other client's copies as numbers freed: received, they take the lowest free numbers.
                taken = closedThere.length > 0 ? await within(other.dupFileDescriptors(takers.slice(0, closedThere.length)), GUARD_MS, "the reply to the other client's DUP") : [];
                const targets = openFdTable(pid);
                await expect(releaseOn(conn, copies)).resolves.toBeUndefined();
                const after = openFdTable(pid);
                copies.forEach((fd, i) => {
                  // A given copy is closed by the release; a number the other client's copy took holds that copy still.
                  const open = after.has(fd) && after.get(fd) === targets.get(fd);
                  expect({ fd, closedByCommand: closedMask[i], open }).toEqual({ fd, closedByCommand: closedMask[i], open: taken.includes(fd) });
                });
                for (const fd of taken) expect({ fd, open: after.get(fd) === targets.get(fd) }).toEqual({ fd, open: true });
                await expect(releaseOn(other, taken)).resolves.toBeUndefined();
                taken = [];
              } finally {
                if (taken.length > 0) await releaseOn(other, taken).catch(() => undefined);
                closeFds([...files, ...takers]);
              }
              expect(await fdTableSettles(pid, serverBaseline)).toBe('');
            },
          ),
          { numRuns: 25, examples: [[[true]], [[false, true, false, true]]] },
        );
      } finally {
        await conn.close();
        await other.close();
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    },
    scaled(180_000),
  );
});
