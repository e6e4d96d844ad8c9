/**
 * A relayed pipe's fd of fdbridge's, here on the client, closed behind its
 * back (the program's bug: README, "Closing an fd fdbridge made is the
 * program's bug"), its number then taken by a new fd of fdbridge's that
 * its relay's poll does not tell apart by file alone: a copy of the same
 * pipe end relayed again on the same connection (the same file at the
 * number), or a copy that no relay polls (a direct connection's copy of a
 * memfd). The old stream lets go of the number: the new relay is made
 * (no EEXIST), the command's writes into the old stream fail with EPIPE
 * instead of landing in the new fd's file, and both fd tables come back.
 *
 * Generated: which new fd takes the number, how many 10,000-byte writes
 * the command made into the stream before the close.
 */
import { closeSync, fstatSync, readSync } from 'node:fs';

import fc from 'fast-check';

import { closeFds, formatFdTableDiff, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { registeredFds } from '../util/registered-fds';
import { assertWithRelayConnections, expectWritesRefused, relay } from '../util/relay-taken';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const CHUNK = 10_000;

test('generated: a relayed pipe whose fd here was closed behind fdbridge\'s back and its number taken by a new fd of ours of any file ends on the command\'s side', async () => {
  const guard = new HangGuard(scaled(40_000));
  await assertWithRelayConnections(
    ({ conn, direct, serverBaseline }) =>
      fc.asyncProperty(fc.constantFrom('same pipe relayed again', 'direct copy of a memfd'), fc.integer({ min: 0, max: 3 }), async (taker, writesBefore) => {
        const [r, w] = makePipe();
        const memfd = makeMemfd();
        const baseline = openFdTable();
        let copy: number | undefined;
        try {
          const { far, relayFd } = await relay(conn, w);
          for (let i = 0; i < writesBefore; i++) await conn.call('write', far, 'p'.repeat(CHUNK));
          if (writesBefore > 0) {
            const got = Buffer.alloc(writesBefore * CHUNK);
            let n = 0;
            while (n < got.length) n += readSync(r, got, n, got.length - n, null);
          }
          await conn.call('adopt', [far]);
          closeSync(relayFd); // behind fdbridge's back
          let far2: number | undefined;
          if (taker === 'same pipe relayed again') {
            [far2] = await conn.dupFileDescriptors([w]);
            expect(registeredFds().has(relayFd)).toBe(true); // the new stream's fd took the number
            await conn.call('adopt', [far2]);
          } else {
            [copy] = await direct.dupFileDescriptors([memfd]);
            expect(copy).toBe(relayFd); // the direct command's copy took the number
            await direct.call('adopt', [copy]);
          }
          // A write the relay did not refuse would land in the memfd.
          await expectWritesRefused(conn, far, 'SECRET', guard);
          expect(fstatSync(memfd).size).toBe(0);
          if (far2 !== undefined) {
            // The new stream is the number's: its bytes, and only those, reach the pipe.
            await conn.call('write', far2, 'hello');
            const got = Buffer.alloc(64);
            const n = readSync(r, got, 0, got.length, null);
            expect(got.subarray(0, n).toString()).toBe('hello');
          }
          await conn.call('closeAdopted', far2 === undefined ? [far] : [far, far2]);
          expect(await conn.call('echo', 'alive')).toBe('alive');
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          if (copy !== undefined) await direct.call('closeAdopted', [copy]);
          copy = undefined;
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
        } finally {
          if (copy !== undefined) await direct.call('closeAdopted', [copy]).catch(() => undefined);
          closeFds([r, w, memfd]);
        }
      }),
    10,
  );
}, scaled(90_000));
