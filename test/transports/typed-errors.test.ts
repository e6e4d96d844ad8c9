/**
 * The same failure is the same typed error on every transport: a
 * duplication the command's process has no fd slot for is a SystemError
 * EMFILE naming the system call that met the limit (dup(2) here,
 * recvmsg's MSG_CTRUNC or pidfd_getfd there), never a RemoteError (no
 * command code ran); a batch
 * naming a number that is not open, anywhere in it and up to 2^31 - 1, is
 * a SystemError EBADF; a command whose constructor throws fails connect
 * with RemoteError('constructor').
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, RemoteError, SystemError, type Connection, type ProbeCommand, type TransportName } from '../../src';
import { closeFd, closeOwnFd, fdLimit, makeMemfd, openFdTable, setFdLimit, type FdTable } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';

/** A via that stays the parent of the server, as ssh does. */
const VIA = ['sh', '-c', '"$@"', 'sh'];

const TRANSPORTS: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd'];
const SPAWNED = new Set<TransportName>(['child', 'pidfd']);
const THROWING = { name: 'throwing', module: join(__dirname, '..', 'fixtures', 'throwing-command.js'), export: 'ThrowingCommand' };

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-typed-errors-'));
  socketPath = join(dir, 'helper.sock');
  // A daemon of this file's own: a test puts it at its fd limit.
  helper = await startHelperProcess(socketPath, ['--command', `${THROWING.name}=${THROWING.module}#${THROWING.export}`]);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

/** The lowest fd number not in `open`: as RLIMIT_NOFILE, it leaves no slot free. */
function lowestFree(open: Iterable<number>): number {
  const used = new Set(open);
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

/** What a promise came to: the error, or a description of the value it resolved with. */
function outcome(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => new Error(`resolved with ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
}

/**
 * The system call that met the limit: dup(2) in this process or in the
 * worker's, recvmsg(2) (MSG_CTRUNC) in the command's, or pidfd_getfd(2)
 * pulling into it.
 */
const EMFILE_SYSCALL: Partial<Record<TransportName, string>> = {
  direct: 'dup',
  worker: 'dup',
  child: 'recvmsg',
  helper: 'recvmsg',
  pidfd: 'pidfd_getfd',
};

function expectEmfile(err: unknown, what: string, transport: TransportName): void {
  expect({
    what,
    systemError: err instanceof SystemError,
    remoteError: err instanceof RemoteError,
    code: (err as { code?: unknown }).code,
    syscall: (err as { syscall?: unknown }).syscall,
  }).toEqual({
    what,
    systemError: true,
    remoteError: false,
    code: 'EMFILE',
    syscall: EMFILE_SYSCALL[transport],
  });
  expect((err as SystemError).errno).toBe(-24);
}

/** The command's process holds the fds it held before (`table`), and the connection still duplicates `source`. */
async function expectNothingKept(conn: Connection, table: FdTable, source: number): Promise<void> {
  const probe = conn.proxy<ProbeCommand>();
  const after = conn.location.pid === process.pid ? openFdTable() : new Map(await probe.openFds());
  expect([...after.keys()].sort()).toEqual([...table.keys()].sort());
  const [again] = await conn.dupFileDescriptors([source]);
  await probe.adopt([again as number]);
  await probe.closeAdopted([again as number]);
}

/** Closes `source` and the connection; a spawned command's process must have exited cleanly. */
async function closeAll(conn: Connection, source: number): Promise<void> {
  closeFd(source);
  await conn.close();
  if (SPAWNED.has(conn.transport)) expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
}

const BAD_ENTRY_TEST =
  'generated: a batch naming a number that is not open (closed, past the limit, up to 2^31 - 1) or one of fdbridge\'s own, anywhere in it ' +
  '(several messages too): SystemError EBADF naming its index and number, nothing given, kept or left open here, the connection still usable';

/** BAD_ENTRY_TEST on `transport`. */
async function badEntryFailsTheBatch(transport: TransportName): Promise<void> {
  const conn: Connection = await connect(transport, { command: PROBE_COMMAND, socketPath, ...(transport === 'remote' ? { via: VIA, serve: LOCAL_REMOTE.serve } : {}) });
  const source = makeMemfd('typed-ebadf');
  const closed = makeMemfd('typed-ebadf-closed');
  closeFd(closed);
  // One of fdbridge's own fds (a pin, registered as its own): refused as closed.
  const own = holdOwnCopy(source);
  try {
    const sameProcess = conn.location.pid === process.pid;
    const probe = conn.proxy<ProbeCommand>();
    const table = sameProcess ? openFdTable() : new Map(await probe.openFds());
    await fc.assert(
      fc.asyncProperty(
        // Past two messages' worth (253 each): the bad entry in the first, second or third.
        fc.integer({ min: 0, max: 600 }),
        fc.oneof(fc.constant(closed), fc.constant(own), fc.constant(0x7fffffff), fc.integer({ min: 0x7fffff00, max: 0x7fffffff }), fc.integer({ min: 1 << 20, max: 0x7fffffff })),
        fc.nat(),
        async (length, bad, at) => {
          const here = openFdTable();
          const batch = new Array<number>(length).fill(source);
          const index = length === 0 ? 0 : at % (length + 1);
          batch.splice(index, 0, bad);
          const err = await outcome(conn.dupFileDescriptors(batch));
          expect({ systemError: err instanceof SystemError, code: (err as { code?: unknown }).code, index: (err as SystemError).index, fd: (err as SystemError).fd }).toEqual({
            systemError: true,
            code: 'EBADF',
            index,
            fd: bad,
          });
          expect((err as Error).message).toContain(`fds[${index}] (${bad})`);
          // Nothing of the batch left open here (the pieces that went out were released).
          expect(await fdTableSettles(process.pid, here)).toBe('');
        },
      ),
      { numRuns: transport === 'remote' ? 6 : 12, examples: [[300, closed, 260], [520, own, 510], [0, closed, 0]] },
    );
    await expectNothingKept(conn, table, source);
  } finally {
    closeOwnFd(own);
    await closeAll(conn, source);
  }
}

describe.each(TRANSPORTS)('%s transport', (transport) => {
  let helperBaseline: FdTable | undefined;

  beforeEach(() => {
    helperBaseline = transport === 'helper' ? openFdTable(helper.pid) : undefined;
  });

  afterEach(async () => {
    if (helperBaseline) expect(await fdTableSettles(helper.pid, helperBaseline)).toBe('');
  });

  test('a duplication the command\'s process has no fd slot for: SystemError EMFILE, alone, folded and in a batch', async () => {
    const conn: Connection = await connect(transport, { command: PROBE_COMMAND, socketPath });
    const source = makeMemfd('typed-emfile');
    try {
      const sameProcess = conn.location.pid === process.pid;
      const probe = conn.proxy<ProbeCommand>();
      const [soft] = sameProcess ? fdLimit() : await probe.fdLimit();
      const table = sameProcess ? openFdTable() : new Map(await probe.openFds());
      const limit = lowestFree(table.keys());
      let one: Promise<unknown>;
      let burst: Array<Promise<unknown>>;
      let batch: Promise<unknown>;
      if (sameProcess) {
        // The command's process is this one: the limit is lowered only
        // while the duplications run (synchronously, dup(2) here).
        setFdLimit(limit);
        try {
          one = outcome(conn.dupFileDescriptor(source));
          burst = Array.from({ length: 5 }, () => outcome(conn.dupFileDescriptor(source)));
          batch = outcome(conn.dupFileDescriptors(new Array<number>(300).fill(source)));
        } finally {
          setFdLimit(soft);
        }
      } else {
        await probe.setFdLimit(limit);
        try {
          one = outcome(conn.dupFileDescriptor(source));
          await one;
          burst = Array.from({ length: 5 }, () => outcome(conn.dupFileDescriptor(source)));
          await Promise.all(burst);
          batch = outcome(conn.dupFileDescriptors(new Array<number>(300).fill(source)));
          await batch;
        } finally {
          await probe.setFdLimit(soft);
        }
      }
      expectEmfile(await one, 'dupFileDescriptor', transport);
      for (const b of burst) expectEmfile(await b, 'a folded dupFileDescriptor', transport);
      expectEmfile(await batch, 'dupFileDescriptors of 300', transport);
      await expectNothingKept(conn, table, source);
    } finally {
      await closeAll(conn, source);
    }
  });

  test(BAD_ENTRY_TEST, () => badEntryFailsTheBatch(transport));

  test('a command whose constructor throws: connect rejects with RemoteError(constructor) carrying what it threw', async () => {
    const err = await outcome(connect(transport, { command: THROWING, socketPath }));
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ method: 'constructor', remote: { name: 'Error', code: 'E_REFUSES', message: 'this command refuses to start' } });
  });
});

describe('remote transport', () => {
  test(BAD_ENTRY_TEST, () => badEntryFailsTheBatch('remote'), scaled(60_000));
});
