/**
 * On remote a failed batch's release ends the relayed streams of the
 * numbers it releases, found by the number each stream's command end was
 * given as over there. Those numbers are the command's: once it passes an
 * end on to a number of its own and closes the one it was given, the
 * number comes back, and a later batch's entry can be given it. The
 * release of that batch must end that entry's stream only, never the
 * stream that had the number before, which still runs (the command reads
 * it through its own number).
 *
 * A file open for reading goes as a copy, whose stream is finished by the
 * time its OPENED names the number: the copies of a failed batch take the
 * numbers of the quiet pipes' ends the command passed on.
 *
 * Generated: 2-4 pipes' read ends given and passed on by the command;
 * then a batch of 254-600 copies of a file with an entry that cannot be
 * relayed past its first message; each pipe then still carries bytes to
 * the command, and after each run both fd tables (this process's and the
 * server's) are back to their baseline.
 */
import { mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, UnsupportedError } from '../../src';
import { closeFds, formatFdTableDiff, makeEventfd, makePipe, openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';

const PASS_ON = { name: 'pass-on', module: join(__dirname, '..', 'fixtures', 'pass-on-command.js'), export: 'PassOnCommand' };
/** The fds of one message of a batch: an entry past them goes in a later message. */
const ONE_MESSAGE = 253;

type Unrelayable = 'character device (read)' | 'directory' | 'eventfd';
const UNRELAYABLE: Unrelayable[] = ['character device (read)', 'directory', 'eventfd'];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-remote-reused-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(
  'generated: a failed batch whose copies are given the numbers of streams the command passed on ends only its own streams',
  async () => {
    const before = openFdTable();
    const conn = await connect('remote', { command: PASS_ON, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
    const readPath = join(dir, 'read.txt');
    writeFileSync(readPath, 'read me');
    const reading = openSync(readPath, 'r');
    const eventfd = makeEventfd();
    const devnull = openSync('/dev/null', 'r');
    const directory = openSync(dir, 'r');
    const fdOf: Record<Unrelayable, number> = { 'character device (read)': devnull, directory, eventfd };
    try {
      // The server's table once its runtime has settled (the first call opens what it opens lazily).
      const { pid } = (await conn.call('where')) as { pid: number };
      const serverBaseline = openFdTable(pid);
      const baseline = openFdTable();
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 2, max: 4 }),
          fc.integer({ min: ONE_MESSAGE + 1, max: 600 }).chain((length) =>
            fc.tuple(fc.constant(length), fc.integer({ min: ONE_MESSAGE, max: length - 1 }), fc.constantFrom(...UNRELAYABLE)),
          ),
          async (quiet, [length, at, bad]) => {
            const pipes = Array.from({ length: quiet }, () => makePipe());
            let kept: number[] = [];
            try {
              const given = await conn.dupFileDescriptors(pipes.map(([r]) => r));
              kept = (await conn.call('passOn', given)) as number[];
              const fds = new Array<number>(length).fill(reading);
              fds[at] = fdOf[bad];
              await expect(conn.dupFileDescriptors(fds)).rejects.toBeInstanceOf(UnsupportedError);
              const read: string[] = [];
              for (const [i, [, w]] of pipes.entries()) {
                writeSync(w, `after ${i}`);
                read.push((await conn.call('read', kept[i], 7)) as string);
              }
              expect(read).toEqual(pipes.map((_, i) => `after ${i}`));
            } finally {
              if (kept.length > 0) await conn.call('closeKept', kept);
              closeFds(pipes.flat());
            }
            expect(await fdTableSettles(pid, serverBaseline)).toBe('');
            expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
          },
        ),
        // A failure is a stream cut or a leak, each look at it seconds of settling: shown as found, not shrunk.
        { numRuns: 8, endOnFailure: true },
      );
    } finally {
      await conn.close();
      closeFds([reading, eventfd, devnull, directory]);
    }
    expect(formatFdTableDiff(await settleFdTable(process.pid, before, 2000))).toBe('');
  },
  scaled(240_000),
);
