/**
 * A relayed pipe's fd of fdbridge's, here on the client, closed behind its
 * back (the program's bug: README, "Closing an fd fdbridge made is the
 * program's bug"), its number then taken by fdbridge's next fd (the next
 * relayed stream's, made at the lowest free number above the floor). The
 * relay lets go of the number, and the command over there must not wait
 * on the stream for ever: its writes fail with EPIPE (the stream's sink
 * here stopped, even with bytes it had not yet written into the client's
 * full pipe), its reads see end of file (the source here ended). The
 * connection goes on, and both fd tables come back.
 *
 * Generated: which way the stream goes, how many 10,000-byte writes the
 * command made before the close (0: nothing left to write here; past the
 * client's pipe buffer, 64 KiB: bytes pending in the relay).
 */
import { closeSync } from 'node:fs';

import fc from 'fast-check';

import { connect, PROBE_COMMAND } from '../../src';
import { closeFds, formatFdTableDiff, makePipe, openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { registeredFds } from '../util/registered-fds';
import { expectWritesRefused, relay } from '../util/relay-taken';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const CHUNK = 10_000;

test('generated: a relayed pipe whose fd here was closed behind fdbridge\'s back and its number taken ends on the command\'s side', async () => {
  const guard = new HangGuard(scaled(40_000));
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  try {
    await conn.call('where');
    const serverBaseline = openFdTable(conn.location.pid);
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 30 }), async (commandWrites, writesBefore) => {
        const [r, w] = makePipe();
        const [r2, w2] = makePipe();
        const baseline = openFdTable();
        try {
          const { far, relayFd } = await relay(conn, commandWrites ? w : r);
          if (commandWrites) for (let i = 0; i < writesBefore; i++) await conn.call('write', far, 'p'.repeat(CHUNK));
          await conn.call('adopt', [far]);
          closeSync(relayFd); // behind fdbridge's back
          const [far2] = await conn.dupFileDescriptors([r2]);
          expect(registeredFds().has(relayFd)).toBe(true); // the new stream's fd took the number
          if (commandWrites) {
            await expectWritesRefused(conn, far, 'z', guard);
          } else {
            expect(await guard.within(conn.call('read', far, 10), 'the command reading the stream let go of')).toBe('');
          }
          await conn.call('adopt', [far2]);
          await conn.call('closeAdopted', [far, far2]);
          expect(await conn.call('echo', 'alive')).toBe('alive');
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
        } finally {
          closeFds([r, w, r2, w2]);
        }
      }),
      { numRuns: 12, endOnFailure: true },
    );
  } finally {
    await conn.close();
  }
}, scaled(70_000));
