/**
 * A batch past 253 fds on the remote transport goes as several messages;
 * when one fails (an entry of a kind that has no byte stream: an
 * UnsupportedError), the messages that did arrive are released (README,
 * dupFileDescriptors: "all or nothing ... nothing of the batch stays given
 * over there or open here, and the connection goes on"). On remote each fd
 * given is a relayed stream: the release must end those streams too, on
 * both sides. A pipe's read end (bytes client -> command) is the one its
 * own bytes never end: with nothing written into it, its relay's copy here
 * and its pipe over there stayed open until the connection closed.
 *
 * Generated: batches of 254-800 entries (pipe ends either way, a stream
 * socket, a file open for appending, one open for reading), with one entry
 * of a kind that cannot be relayed at a generated index; after each, both
 * fd tables (this process's and the server's) are back to their baseline,
 * and the connection still carries a pipe's bytes.
 */
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, UnsupportedError } from '../../src';
import { closeFds, formatFdTableDiff, makeEventfd, makePipe, openFdTable } from '../../src/fd';
import { rawSocketPair } from '../../src/testing';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';

type Entry = 'pipe read end' | 'pipe write end' | 'stream socket' | 'file (append)' | 'file (read)';
const ENTRIES: Entry[] = ['pipe read end', 'pipe write end', 'stream socket', 'file (append)', 'file (read)'];
type Unrelayable = 'character device (read)' | 'directory' | 'eventfd';
const UNRELAYABLE: Unrelayable[] = ['character device (read)', 'directory', 'eventfd'];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-remote-batch-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(
  'generated: a batch past 253 fds with an entry that cannot be relayed fails whole, and no relayed stream of its other messages stays open on either side',
  async () => {
    const before = openFdTable();
    const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
    const [r, w] = makePipe();
    const [s1, s2] = rawSocketPair('stream');
    const logPath = join(dir, 'append.log');
    const readPath = join(dir, 'read.txt');
    const appending = openSync(logPath, 'a');
    writeFileSync(readPath, 'read me');
    const reading = openSync(readPath, 'r');
    const eventfd = makeEventfd();
    const devnull = openSync('/dev/null', 'r');
    const directory = openSync(dir, 'r');
    const fdOf: Record<Entry | Unrelayable, number> = {
      'pipe read end': r,
      'pipe write end': w,
      'stream socket': s1,
      'file (append)': appending,
      'file (read)': reading,
      'character device (read)': devnull,
      directory,
      eventfd,
    };
    try {
      // The server's table once its runtime has settled (the first call opens what it opens lazily).
      await conn.call('where');
      const serverBaseline = openFdTable(conn.location.pid);
      const baseline = openFdTable();
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 254, max: 800 }).chain((length) =>
            fc.tuple(
              fc.array(fc.constantFrom(...ENTRIES), { minLength: length, maxLength: length }),
              fc.integer({ min: 0, max: length - 1 }),
              fc.constantFrom(...UNRELAYABLE),
            ),
          ),
          async ([entries, at, bad]) => {
            const fds = entries.map((e) => fdOf[e]);
            fds[at] = fdOf[bad];
            const err = await conn.dupFileDescriptors(fds).catch((e: unknown) => e);
            expect(err).toBeInstanceOf(UnsupportedError);
            // Named as the caller asked for it: the batch, and the entry refused.
            expect((err as Error).message).toMatch(new RegExp(`^dupFileDescriptors \\(fd ${fdOf[bad]}\\) failed on the remote transport: .* cannot be relayed`));
            expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
            expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
          },
        ),
        // A failure is a leak, each look at it seconds of settling: shown as found, not shrunk.
        { numRuns: 12, endOnFailure: true },
      );
      // The connection goes on: a pipe's bytes reach the command.
      const far = await conn.dupFileDescriptor(r);
      writeSync(w, 'after');
      expect(await conn.call('read', far, 5)).toBe('after');
    } finally {
      await conn.close();
      closeFds([r, w, s1, s2, appending, reading, eventfd, devnull, directory]);
    }
    expect(readFileSync(logPath, 'utf8')).toBe('');
    expect(formatFdTableDiff(await settleFdTable(process.pid, before, 2000))).toBe('');
  },
  scaled(240_000),
);
