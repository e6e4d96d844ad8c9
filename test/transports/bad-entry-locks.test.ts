/**
 * A batch that fails on a bad entry loses nothing of the caller's: the
 * POSIX (fcntl F_SETLK) record locks this process holds on the files of the
 * entries before the bad one are still held afterwards (closing any fd of a
 * file drops them, so finding the bad entry must make and close no copy),
 * the error names the bad entry's index and number, and the fd table is as
 * before. The locks are looked at where nothing of the batch is copied in
 * this process (child, helper: the fds go out by sendmsg); where copies are
 * made here (direct and worker: the command's copies; pidfd: the pins the
 * command's process takes them from; remote) the copies made before the bad
 * entry is met are closed again, and that close drops the locks whatever
 * finds the entry: on those the error and the fd table are checked.
 */
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, SystemError, type Connection, type TransportName } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { conflictingLock, posixLock } from '../../src/test-hooks';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';

/** A via that stays the parent of the server, as ssh does. */
const VIA = ['sh', '-c', '"$@"', 'sh'];

const TRANSPORTS: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'];
const SPAWNED = new Set<TransportName>(['child', 'pidfd']);
/** The transports that make no copy of the batch's fds in this process. */
const NO_COPY_HERE = new Set<TransportName>(['child', 'helper']);

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-bad-entry-locks-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

/** A file locked (write, whole file) through `held`, and a second open of it (`query`) that sees the lock (F_OFD_GETLK). */
interface LockedFile {
  held: number;
  query: number;
}

function lockedFile(name: string): LockedFile {
  const path = join(dir, name);
  const held = openSync(path, 'w+');
  const query = openSync(path, 'r+');
  posixLock(held, 'write');
  return { held, query };
}

describe.each(TRANSPORTS)('%s transport', (transport) => {
  test(
    `generated: a batch with locked entries and a bad one later (closed, past the limit, several messages too): SystemError EBADF naming its index and number, ${NO_COPY_HERE.has(transport) ? 'every lock still held, ' : ''}the fd table as before`,
    async () => {
      const conn: Connection = await connect(transport, {
        command: PROBE_COMMAND,
        socketPath,
        ...(transport === 'remote' ? { via: VIA, serve: LOCAL_REMOTE.serve } : {}),
      });
      const files = [lockedFile('a'), lockedFile('b')];
      const source = makeMemfd('bad-entry-locks');
      const closed = makeMemfd('bad-entry-locks-closed');
      closeFd(closed);
      try {
        const entries = [source, ...files.map((f) => f.held)];
        await fc.assert(
          fc.asyncProperty(
            // Past two messages' worth (253 each): the bad entry in the first, second or third.
            fc.array(fc.constantFrom(...entries), { minLength: 1, maxLength: 600 }),
            fc.oneof(fc.constant(closed), fc.integer({ min: 1 << 20, max: 0x7fffffff })),
            fc.nat(),
            async (batch, bad, at) => {
              const here = openFdTable();
              const index = 1 + (at % batch.length);
              const sent = [...batch];
              sent.splice(index, 0, bad);
              let err: unknown;
              await conn.dupFileDescriptors(sent).then(
                (v) => {
                  err = new Error(`resolved with ${JSON.stringify(v)}`);
                },
                (e: unknown) => {
                  err = e;
                },
              );
              expect({ systemError: err instanceof SystemError, code: (err as { code?: unknown }).code, index: (err as SystemError).index, fd: (err as SystemError).fd }).toEqual({
                systemError: true,
                code: 'EBADF',
                index,
                fd: bad,
              });
              if (NO_COPY_HERE.has(transport)) expect(files.map((f) => conflictingLock(f.query))).toEqual(['write', 'write']);
              expect(await fdTableSettles(process.pid, here)).toBe('');
            },
          ),
          {
            numRuns: transport === 'remote' ? 6 : 12,
            examples: [
              [[files[0]!.held, source], closed, 1],
              [[...new Array<number>(300).fill(source), files[1]!.held, ...new Array<number>(10).fill(source)], closed, 310],
            ],
          },
        );
      } finally {
        for (const f of files) {
          closeSync(f.held);
          closeSync(f.query);
        }
        closeFd(source);
        await conn.close();
        if (SPAWNED.has(conn.transport)) expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
      }
    },
    scaled(60_000),
  );
});
