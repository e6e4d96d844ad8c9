/**
 * On remote a regular file open for reading is given as a copy, "at most
 * 256 MiB" (README, Remote commands): a larger one is refused with an
 * UnsupportedError. Its size is looked at when the duplication is asked
 * for, and the copy is then read to the file's end: a file that grows past
 * the limit in between (a log being written, a file extended with
 * truncate) was copied whole into the server's memory (measured: 600 MiB).
 * The copy must stop at the limit and the duplication fail, with nothing
 * of it left over there; a file that grows and stays within it is copied
 * whole.
 *
 * Generated: a file of 0-64 KiB, grown (sparse, truncate(2)) right after
 * dupFileDescriptor is called to a size a few bytes under, at or over the
 * limit; the server's and this process's fd tables are back to their
 * baselines after each.
 */
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, UnsupportedError } from '../../src';
import { formatFdTableDiff, openFdTable } from '../../src/fd';
import { MAX_COPY_BYTES } from '../../src/transports/remote-kinds';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-remote-copy-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(
  'generated: a file that grows past the copy limit while it is copied is refused (UnsupportedError), nothing left over there; one that stays within it is copied whole',
  async () => {
    const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
    try {
      // The server's table once its runtime has settled (the first call opens what it opens lazily).
      await conn.call('where');
      const serverBaseline = openFdTable(conn.location.pid);
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 64 * 1024 }), fc.integer({ min: -3, max: 3 }), async (initial, past) => {
          const baseline = openFdTable();
          const path = join(dir, 'growing');
          writeFileSync(path, Buffer.alloc(initial, 'x'));
          const fd = openSync(path, 'r');
          try {
            const grown = MAX_COPY_BYTES + past;
            const given = conn.dupFileDescriptor(fd);
            truncateSync(path, grown); // before the copy's next read: each is asked for from the one before's callback
            if (grown > MAX_COPY_BYTES) {
              await expect(given).rejects.toThrow(UnsupportedError);
              await expect(given).rejects.toThrow(/grew past 268435456 bytes while it was copied/);
            } else {
              const far = await given;
              expect(statSync(`/proc/${conn.location.pid}/fd/${far}`).size).toBe(grown);
              await conn.call('adopt', [far]);
              await conn.call('closeAdopted', [far]);
            }
          } finally {
            closeSync(fd);
            rmSync(path);
          }
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
        }),
        { numRuns: 6, endOnFailure: true },
      );
    } finally {
      await conn.close();
    }
  },
  scaled(240_000),
);
