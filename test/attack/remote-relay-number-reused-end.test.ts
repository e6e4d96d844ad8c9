/**
 * A relayed stream's fd of fdbridge's, here on the client, closed behind
 * its back (the program's bug: README, "Closing an fd fdbridge made is the
 * program's bug"), its number then taken by a new fd of fdbridge's that no
 * relay polls (a direct connection's copy), and then the stream ends (the
 * command closes its end). The stream's end must not reach the new fd:
 * neither closed (the same pipe end at the number: the same file is not
 * the same fd) nor, a socket, shut down for writing (another socket there:
 * its peer would read end of file).
 *
 * Generated: which new fd takes the number.
 */
import { closeSync, fstatSync, readSync } from 'node:fs';

import fc from 'fast-check';

import { closeFds, formatFdTableDiff, makePipe, openFdTable } from '../../src/fd';
import { rawSocketPair } from '../../src/testing';
import { setTimeout as delay } from 'node:timers/promises';
import { fdTableSettles } from '../util/processes';
import { assertWithRelayConnections, relay } from '../util/relay-taken';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';

/** What errno `readSync` of `fd` (non-blocking) fails with, or the bytes it read. */
function readNow(fd: number): string | number {
  try {
    return readSync(fd, Buffer.alloc(16), 0, 16, null);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unknown';
  }
}

test("generated: a relayed stream whose fd here was closed behind fdbridge's back ends without closing or shutting down the new fd of ours at its number", async () => {
  await assertWithRelayConnections(
    ({ conn, direct, serverBaseline }) =>
      fc.asyncProperty(fc.constantFrom('the same pipe end', 'another stream socket'), async (taker) => {
        const [r, w] = makePipe();
        const [a1, a2] = rawSocketPair('stream');
        const [b1, b2] = rawSocketPair('stream');
        const baseline = openFdTable();
        let copy: number | undefined;
        try {
          const { far, relayFd } = await relay(conn, taker === 'the same pipe end' ? w : a1);
          await conn.call('adopt', [far]);
          closeSync(relayFd); // behind fdbridge's back
          const taken = (await direct.dupFileDescriptors([taker === 'the same pipe end' ? w : b1]))[0] as number;
          copy = taken;
          expect(taken).toBe(relayFd); // the direct command's copy took the number
          await direct.call('adopt', [taken]);
          // The command closes its end: the stream ends here (end of file to its sink).
          await conn.call('closeAdopted', [far]);
          expect(await conn.call('echo', 'alive')).toBe('alive');
          // Time for the stream's end to reach the client's relay (it follows closeAdopted's reply at once).
          await delay(scaled(500));
          // The copy at the number is the direct command's still: open, holding its file, not shut down.
          expect(fstatSync(taken).ino).toBe(fstatSync(taker === 'the same pipe end' ? w : b1).ino);
          if (taker === 'another stream socket') expect(readNow(b2)).toBe('EAGAIN');
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          await direct.call('closeAdopted', [taken]);
          copy = undefined;
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
        } finally {
          if (copy !== undefined) await direct.call('closeAdopted', [copy]).catch(() => undefined);
          closeFds([r, w, a1, a2, b1, b2]);
        }
      }),
    6,
  );
}, scaled(90_000));
