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
 * Generated: a file of 1 B-64 KiB, grown (sparse, truncate(2)) right after
 * dupFileDescriptor is called to a size a few bytes under, at or over the
 * limit; the server's and this process's fd tables are back to their
 * baselines after each. Not an empty file: the copy's first read is asked
 * for inside dupFileDescriptor, and a thread-pool thread may do it before
 * truncate(2) runs; for an empty file that read (end of file) is the last,
 * and a copy of the empty file is right. A file with bytes gets them from
 * that read, and the next one is asked for from its callback, after the
 * growth.
 *
 * And copies one after another, each closed over there before the next
 * (adopted and closed, released by a failed batch, or left to the
 * connection's close): the server made each command's fd with fs.openSync
 * in its relay thread, which Node tracks as that thread's, so every copy
 * that came back to a number printed "File descriptor N opened in
 * unmanaged mode twice" on the server's stderr, relayed to the client's.
 */
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, UnsupportedError } from '../../src';
import { makeEventfd } from '../../src/fd';
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
        fc.asyncProperty(fc.integer({ min: 1, max: 64 * 1024 }), fc.integer({ min: -3, max: 3 }), fc.boolean(), async (initial, past, batch) => {
          const baseline = openFdTable();
          const path = join(dir, 'growing');
          writeFileSync(path, Buffer.alloc(initial, 'x'));
          const fd = openSync(path, 'r');
          try {
            const grown = MAX_COPY_BYTES + past;
            // dupFileDescriptors asks for the copy's first read before it returns, as dupFileDescriptor does.
            const given = batch ? conn.dupFileDescriptors([fd]).then(([far]) => far as number) : conn.dupFileDescriptor(fd);
            truncateSync(path, grown); // before the copy's second read: each is asked for from the one before's callback
            if (grown > MAX_COPY_BYTES) {
              await expect(given).rejects.toThrow(UnsupportedError);
              // Named as the caller asked for it.
              const call = batch ? `dupFileDescriptors \\(fd ${fd}\\)` : `dupFileDescriptor\\(${fd}\\)`;
              await expect(given).rejects.toThrow(new RegExp(`^${call} failed on the remote transport: a regular file that grew past 268435456 bytes while it was copied`));
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

test('generated: copies one after another, each closed over there before the next, print nothing on stderr and each reads its file', async () => {
  const path = join(dir, 'copied');
  writeFileSync(path, 'copied bytes');
  const fd = openSync(path, 'r');
  const eventfd = makeEventfd();
  const written: string[] = [];
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom('adopted and closed', 'released', 'left'), { minLength: 2, maxLength: 8 }), async (ends) => {
        for (const end of ends) {
          if (end === 'released') {
            // A batch of two messages: the copy in one, an eventfd (no byte stream) in the other.
            await expect(conn.dupFileDescriptors([...Array.from({ length: 253 }, () => fd), eventfd])).rejects.toThrow(UnsupportedError);
            continue;
          }
          const far = await conn.dupFileDescriptor(fd);
          expect(await conn.call('read', far, 64)).toBe('copied bytes');
          if (end === 'adopted and closed') {
            await conn.call('adopt', [far]);
            await conn.call('closeAdopted', [far]);
          }
        }
      }),
      { numRuns: 5 },
    );
  } finally {
    await conn.close();
    spy.mockRestore();
    closeSync(fd);
    closeSync(eventfd);
  }
  expect(written.filter((w) => /unmanaged mode|Warning/.test(w))).toEqual([]);
}, scaled(120_000));
