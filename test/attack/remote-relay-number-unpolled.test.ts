/**
 * A relayed pipe's fd of fdbridge's, here on the client, closed behind its
 * back (the program's bug: README, "Closing an fd fdbridge made is the
 * program's bug"), its number then taken by a new fd of fdbridge's that no
 * relay polls (a direct connection's copy of a memfd) while the relay
 * neither reads nor writes there: the closed fd gets no more poll events,
 * so only the take-over itself can tell the relay. The stream ends on the
 * command's side all the same: its reads see end of file, its writes fail
 * with EPIPE, without waiting for the connection's close; nothing is read
 * from or written into the new fd's file, and both fd tables come back.
 *
 * Generated: which way the stream goes, whether bytes were written into
 * the client's end of the pipe after the close (the relay's fd is gone:
 * they stay there).
 */
import { closeSync, fstatSync, readSync, writeSync } from 'node:fs';

import fc from 'fast-check';

import { closeFds, formatFdTableDiff, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { assertWithRelayConnections, expectWritesRefused, relay } from '../util/relay-taken';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

test('generated: a relayed pipe whose fd here was closed behind fdbridge\'s back and its number taken by an unpolled fd of ours ends at once on the command\'s side', async () => {
  const guard = new HangGuard(scaled(20_000));
  await assertWithRelayConnections(
    ({ conn, direct, serverBaseline }) =>
      fc.asyncProperty(fc.boolean(), fc.boolean(), async (commandWrites, bytesAfter) => {
        const [r, w] = makePipe();
        const memfd = makeMemfd();
        const baseline = openFdTable();
        let copy: number | undefined;
        try {
          const { far, relayFd } = await relay(conn, commandWrites ? w : r);
          await conn.call('adopt', [far]);
          closeSync(relayFd); // behind fdbridge's back
          [copy] = await direct.dupFileDescriptors([memfd]);
          expect(copy).toBe(relayFd); // the direct command's copy took the number
          await direct.call('adopt', [copy]);
          if (bytesAfter) writeSync(commandWrites ? memfd : w, 'hello');
          if (commandWrites) {
            await expectWritesRefused(conn, far, 'SECRET', guard);
          } else {
            expect(await guard.within(conn.call('read', far, 64), 'the command reading the stream let go of')).toBe('');
          }
          // The new fd's file was neither read nor written by the relay; the client's pipe keeps its bytes.
          expect(fstatSync(memfd).size).toBe(bytesAfter && commandWrites ? 5 : 0);
          if (bytesAfter && !commandWrites) {
            const got = Buffer.alloc(64);
            expect(got.subarray(0, readSync(r, got, 0, got.length, null)).toString()).toBe('hello');
          }
          await conn.call('closeAdopted', [far]);
          expect(await conn.call('echo', 'alive')).toBe('alive');
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          await direct.call('closeAdopted', [copy]);
          copy = undefined;
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
        } finally {
          if (copy !== undefined) await direct.call('closeAdopted', [copy]).catch(() => undefined);
          closeFds([r, w, memfd]);
        }
      }),
    8,
  );
}, scaled(90_000));
