/**
 * What every transport shares (BaseConnection, src/connection.ts), through
 * the direct transport, where nothing but that code stands between the
 * caller and the command (and the child's, whose sendmsg meets a bad entry,
 * and a connection whose pieces the test stages, for the errors no real
 * transport can be made to give): dupFileDescriptorSync's timeout range, a batch
 * longer than one message (pieces of MAX_FDS_PER_MESSAGE, all or nothing),
 * which entry a batch's EBADF is about and which errors pass as they are,
 * what a QueueFullError tells its catcher, and the closed state: what
 * requests pending at close() and made after it get, close() waiting for
 * a duplication still under way (a connection whose duplications the test
 * holds back) and, when called again once onCommandClosed has returned,
 * for the command's process to exit.
 */
import { threadId } from 'node:worker_threads';

import fc from 'fast-check';

import { ClosedError, connect, PROBE_COMMAND, QueueFullError, SystemError, type CommandLocation, type Connection, type ProbeCommand } from '../../src';
import { BaseConnection, MAX_FDS_PER_MESSAGE, queueFullError } from '../../src/connection';
import { closeFd, closeFds, closeOwnFd, diffFdTables, dupFd, fdIdentity, formatFdTableDiff, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';
import type { ChildConnection } from '../../src/transports/child';
import { describeValue } from '../../src/validate';
import { exitOf, fdTableSettles } from '../util/processes';

/** The fds this process opened or closed since `before`, one line each (empty: none). */
function tableChange(before: ReturnType<typeof openFdTable>): string {
  return formatFdTableDiff(diffFdTables(before, openFdTable()));
}

// Open for the whole file: part of every test's fd-table baseline.
let files: number[];
beforeAll(() => {
  files = Array.from({ length: 5 }, (_, i) => makeMemfd(`connection-${i}`));
});
afterAll(() => {
  closeFds(files);
});

describe('dupFileDescriptorSync', () => {
  const MAX_TIMEOUT = 2 ** 31 - 1;
  const timeouts = fc.oneof(
    fc.constantFrom(undefined, 0, -0, 1, MAX_TIMEOUT, MAX_TIMEOUT + 1, -1, 0.5, 1.5, Number.NaN, Infinity, -Infinity),
    fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
    fc.double(),
  );

  /** What the timeoutMs check lets through: undefined, or an integer from 0 to 2^31 - 1. */
  const valid = (timeoutMs: number | undefined): boolean =>
    timeoutMs === undefined || (Number.isInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= MAX_TIMEOUT);

  // Two properties, so that the table is read per case only where nothing
  // may be made, and then holds no duplicates: a read costs per fd open.
  test('timeoutMs that is not undefined or an integer from 0 to 2^31 - 1: RangeError naming it, and nothing duplicated', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    // Nothing may change it: each case is checked against the same table.
    const before = openFdTable();
    try {
      fc.assert(
        fc.property(timeouts.filter((t) => !valid(t)), fc.nat({ max: files.length - 1 }), (timeoutMs, i) => {
          // The error names the value the caller gave.
          expect(() => conn.dupFileDescriptorSync(files[i]!, { timeoutMs })).toThrow(new RangeError(
            `dupFileDescriptorSync: timeoutMs must be an integer from 0 to 2147483647 (ms), not ${describeValue(timeoutMs)}`,
          ));
          expect(tableChange(before)).toBe('');
        }),
        { numRuns: 100 },
      );
    } finally {
      await conn.close();
    }
  });

  test('timeoutMs undefined or an integer from 0 to 2^31 - 1: the fd is duplicated, at a new number the connection owns until it closes', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    const before = openFdTable();
    const made: number[] = [];
    try {
      fc.assert(
        fc.property(fc.oneof(timeouts.filter(valid), fc.integer({ min: 0, max: MAX_TIMEOUT })), fc.nat({ max: files.length - 1 }), (timeoutMs, i) => {
          const source = files[i]!;
          const d = conn.dupFileDescriptorSync(source, timeoutMs === undefined ? undefined : { timeoutMs });
          made.push(d);
          expect(sameFile(d, source)).toBe(true);
          expect(files).not.toContain(d);
        }),
        { numRuns: 100 },
      );
      // Every duplicate is the connection's until the command adopts it.
      expect(new Set(made).size).toBe(made.length);
      expect(tableChange(before).split('\n')).toHaveLength(made.length);
    } finally {
      await conn.close();
    }
    // close() closed every one of them.
    expect(tableChange(before)).toBe('');
    // A closed connection: ClosedError, still nothing duplicated.
    expect(() => conn.dupFileDescriptorSync(files[0]!)).toThrow(new ClosedError('dupFileDescriptorSync failed: the direct connection is closed'));
    expect(() => conn.dupFileDescriptorSync(files[0]!, { timeoutMs: 0 })).toThrow(ClosedError);
    expect(tableChange(before)).toBe('');
  });
});

describe('a batch longer than one message', () => {
  test('comes back in order, one new fd per slot (repeats included), all owned by the connection until it closes', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    const before = openFdTable();
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.nat({ max: files.length - 1 }), { maxLength: 3 * MAX_FDS_PER_MESSAGE + 2 }), async (slots) => {
          const fds = slots.map((i) => files[i]!);
          const remote = await conn.dupFileDescriptors(fds);
          expect(remote).toHaveLength(fds.length);
          expect(remote.every((d, i) => sameFile(d, fds[i]!))).toBe(true);
          expect(new Set([...remote, ...files]).size).toBe(remote.length + files.length);
        }),
        { numRuns: 25 },
      );
    } finally {
      await conn.close();
    }
    expect(tableChange(before)).toBe('');
  });

  test('with a closed fd anywhere in it: rejects with EBADF and keeps none of the pieces that arrived; the connection goes on', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 3 * MAX_FDS_PER_MESSAGE + 2 }).chain((n) => fc.tuple(fc.constant(n), fc.nat({ max: n - 1 }))),
          async ([n, closedAt]) => {
            const fds = Array.from({ length: n }, (_, i) => files[i % files.length]!);
            // A number that was open and is closed now: what a caller's stale fd is.
            const stale = dupFd(files[0]!);
            closeFd(stale);
            fds[closedAt] = stale;
            const before = openFdTable();
            const err = await conn.dupFileDescriptors(fds).then(
              (remote) => new Error(`resolved with ${remote.length} fds`),
              (e: unknown) => e,
            );
            expect(err).toBeInstanceOf(SystemError);
            expect(err).toMatchObject({ code: 'EBADF' });
            // All or nothing: what the other pieces made was closed again, before close().
            expect(tableChange(before)).toBe('');
            const [again] = await conn.dupFileDescriptors([files[1]!]);
            expect(sameFile(again!, files[1]!)).toBe(true);
          },
        ),
        { numRuns: 30 },
      );
    } finally {
      await conn.close();
    }
  });
});

/**
 * A connection whose batches the test decides: each piece (dupMany) gets
 * new numbers or the error `fail` gives for it; what is released is noted.
 * Nothing is duplicated: the numbers are made up, never opened.
 */
class StagedBatches extends BaseConnection {
  readonly transport = 'direct' as const;
  readonly location: CommandLocation = { transport: 'direct', pid: process.pid, threadId };
  readonly released: number[][] = [];
  #next = 100_000;
  readonly #fail: () => unknown;

  constructor(fail: () => unknown) {
    super(undefined);
    this.#fail = fail;
  }

  protected async dupOne(): Promise<number> {
    throw new Error('not staged');
  }

  protected dupOneSync(): number {
    throw new Error('not staged');
  }

  // BaseConnection's batch: an fd list (src/native's FdList, which only the addon tests import).
  protected async dupMany(fds: readonly number[] | Int32Array): Promise<number[]> {
    const err = this.#fail();
    if (err !== undefined) throw err;
    return Array.from(fds, () => this.#next++);
  }

  protected async release(fds: number[]): Promise<void> {
    this.released.push(fds);
  }

  protected async callRemote(): Promise<unknown> {
    throw new Error('not staged');
  }

  protected async closeTransport(): Promise<void> {}
}

describe("a batch's EBADF: which entry", () => {
  test("generated: a closed number or one of fdbridge's own anywhere in a batch of one piece or several: a SystemError EBADF naming the entry (its index in the whole batch, its number), with the transport's EBADF as cause; nothing of the batch kept; the connection goes on", async () => {
    const start = openFdTable();
    for (const transport of ['direct', 'child'] as const) {
      const conn = await connect(transport, { command: PROBE_COMMAND });
      const own = holdOwnCopy(files[0]!);
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 1, max: 3 * MAX_FDS_PER_MESSAGE + 2 }).chain((n) => fc.tuple(fc.constant(n), fc.nat({ max: n - 1 }), fc.boolean())),
            async ([n, at, ownEntry]) => {
              const fds = Array.from({ length: n }, (_, i) => files[i % files.length]!);
              // A number that was open and is closed now (a caller's stale fd), or one fdbridge holds for itself.
              let bad = own;
              if (!ownEntry) {
                bad = dupFd(files[0]!);
                closeFd(bad);
              }
              fds[at] = bad;
              const before = openFdTable();
              const err = await conn.dupFileDescriptors(fds).then(
                (remote) => new Error(`resolved with ${remote.length} fds`),
                (e: unknown) => e,
              );
              expect(err).toBeInstanceOf(SystemError);
              const e = err as SystemError;
              expect({ code: e.code, errno: e.errno, index: e.index, fd: e.fd }).toEqual({ code: 'EBADF', errno: -9, index: at, fd: bad });
              // The transport's own error, which names no entry, is kept as the cause.
              expect(e.cause).toBeInstanceOf(SystemError);
              expect({ code: (e.cause as SystemError).code, index: (e.cause as SystemError).index }).toEqual({ code: 'EBADF', index: undefined });
              expect(e.syscall).toBe((e.cause as SystemError).syscall);
              expect(e.message).toContain(`fds[${at}] (${bad})`);
              // What the transport said, and that the batch was all or nothing.
              expect(e.message).toContain(`${(e.cause as SystemError).message}; nothing of the batch was given`);
              expect(tableChange(before)).toBe('');
              // The next batch is served: the command holds the file given (its numbers are the command process's).
              const [again] = await conn.dupFileDescriptors([files[1]!]);
              const id = fdIdentity(files[1]!);
              expect(await conn.call('identities', [again])).toEqual([{ dev: String(id.dev), ino: String(id.ino), type: id.type }]);
            },
          ),
          { numRuns: 25 },
        );
      } finally {
        await conn.close();
        closeOwnFd(own);
      }
    }
    // The child's pipes and pidfd close as it exits.
    expect(await fdTableSettles(process.pid, start)).toBe('');
  });

  test('generated: every piece arriving: the numbers in the order of the batch, piece after piece; nothing released', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 * MAX_FDS_PER_MESSAGE + 2 }), async (n) => {
        const fds = Array.from({ length: n }, (_, i) => files[i % files.length]!);
        const conn = new StagedBatches(() => undefined);
        // StagedBatches numbers each piece's entries from 100000 on, piece after piece, as asked.
        expect(await conn.dupFileDescriptors(fds)).toEqual(Array.from({ length: n }, (_, i) => 100_000 + i));
        expect(conn.released).toEqual([]);
        await conn.close();
      }),
      { numRuns: 20 },
    );
  });

  test("generated: another error of a piece (not EBADF, not a SystemError), an EBADF that names its entry already, or one no entry explains (every entry open): the caller gets that error itself; the pieces that arrived are released", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 * MAX_FDS_PER_MESSAGE + 2 }).chain((n) => fc.tuple(fc.constant(n), fc.nat({ max: n - 1 }))),
        fc.constantFrom('queue full', 'EMFILE', 'EBADF naming its entry', 'EBADF, every entry open'),
        async ([n, at], kind) => {
          const fds = Array.from({ length: n }, (_, i) => files[i % files.length]!);
          const stale = dupFd(files[0]!);
          closeFd(stale);
          // The entry the error is about is closed, except where no entry explains it.
          if (kind !== 'EBADF, every entry open') fds[at] = stale;
          const error =
            kind === 'queue full'
              ? queueFullError('dupFileDescriptors', 'the command', { queuedBytes: 1, queuedMessages: 1, limit: 1 })
              : kind === 'EMFILE'
                ? new SystemError(-24, 'dup')
                : kind === 'EBADF naming its entry'
                  ? new SystemError(-9, 'sendmsg', undefined, { entry: { index: at, fd: stale } })
                  : new SystemError(-9, 'sendmsg');
          // The pieces are asked for in order: the one holding the entry fails.
          const failing = Math.floor(at / MAX_FDS_PER_MESSAGE);
          let piece = 0;
          const conn = new StagedBatches(() => (piece++ === failing ? error : undefined));
          await expect(conn.dupFileDescriptors(fds)).rejects.toBe(error);
          // Every other piece arrived, and was given back.
          const pieces = Math.ceil(n / MAX_FDS_PER_MESSAGE);
          expect(conn.released.flat()).toHaveLength(n - Math.min(MAX_FDS_PER_MESSAGE, n - failing * MAX_FDS_PER_MESSAGE));
          expect(conn.released).toHaveLength(pieces > 1 ? 1 : 0);
          await conn.close();
        },
      ),
      { numRuns: 60 },
    );
  });
});


describe('queueFullError', () => {
  const queues = fc.record({
    queuedBytes: fc.oneof(fc.nat({ max: 2 ** 40 }), fc.constantFrom(0, 1023, 1024, 1048575, 1048576, 1048577)),
    queuedMessages: fc.nat({ max: 2 ** 31 }),
    limit: fc.oneof(fc.nat({ max: 2 ** 40 }), fc.constantFrom(1048575, 1048576, 32 * 1048576)),
  });

  /** How the message states `n` bytes: KiB below 1 MiB, MiB from there. */
  const size = (n: number): string => (n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);

  test('carries the queue as fields, names the operation, the peer and the sizes, and keeps a cause only when given one', () => {
    fc.assert(
      fc.property(queues, fc.boolean(), (queue, withCause) => {
        const cause = withCause ? new Error('the socket said EAGAIN') : undefined;
        const err = queueFullError('dupFileDescriptor', 'the child (pid 42)', queue, cause);
        expect(err).toBeInstanceOf(QueueFullError);
        expect(err.code).toBe('ERR_FDBRIDGE_QUEUE_FULL');
        expect({ queuedBytes: err.queuedBytes, queuedMessages: err.queuedMessages, limit: err.limit }).toEqual(queue);
        expect('cause' in err).toBe(withCause);
        expect(err.cause).toBe(cause);
        expect(err.message.startsWith('dupFileDescriptor failed: ')).toBe(true);
        expect(err.message).toContain(`${queue.queuedMessages} earlier requests (${size(queue.queuedBytes)})`);
        expect(err.message).toContain(`wait for the child (pid 42) to read them (limit ${size(queue.limit)})`);
        // What happened to the request, and the way out.
        expect(err.message.endsWith(
          '; nothing of this request was sent. Await earlier requests before making more, or raise ConnectOptions.sendQueueLimit',
        )).toBe(true);
      }),
    );
  });

  test('sizes switch from KiB to MiB at 1 MiB exactly', () => {
    const at = (queuedBytes: number): string => queueFullError('call', 'p', { queuedBytes, queuedMessages: 1, limit: 2048 }).message;
    expect(at(1536)).toContain('(1.5 KiB)');
    expect(at(1048575)).toContain('(1024.0 KiB)');
    expect(at(1048576)).toContain('(1.0 MiB)');
    expect(at(3 * 1048576)).toContain('(3.0 MiB)');
    expect(at(2048)).toContain('(limit 2.0 KiB)');
  });
});

describe('call', () => {
  test('arguments JSON cannot carry reject the returned promise (nothing thrown at the caller, nothing called); the connection goes on', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    try {
      const cycle: Record<string, unknown> = {};
      cycle['self'] = cycle;
      for (const bad of [1n, cycle]) {
        let returned: Promise<unknown> | undefined;
        expect(() => (returned = conn.call('echo', bad))).not.toThrow();
        await expect(returned).rejects.toBeInstanceOf(TypeError);
      }
      await expect(conn.call('echo', 'still here')).resolves.toBe('still here');
    } finally {
      await conn.close();
    }
  });
  test('a method name that is not a non-empty string rejects the returned promise with TypeError, nothing reaching the command; the connection goes on', async () => {
    const before = openFdTable();
    const conn = await connect('direct', { command: PROBE_COMMAND });
    try {
      for (const method of ['', 5, undefined, null, ['echo'], new String('echo')]) {
        let returned: Promise<unknown> | undefined;
        expect(() => (returned = conn.call(method as string))).not.toThrow();
        // Not the command's RemoteError: the call never left this side.
        const err = await (returned as Promise<unknown>).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TypeError);
        expect((err as Error).message).toBe('call: method must be a non-empty string');
      }
      await expect(conn.call('echo', 'still here')).resolves.toBe('still here');
      await expect(conn.proxy<ProbeCommand>().echo('through the proxy')).resolves.toBe('through the proxy');
    } finally {
      await conn.close();
    }
    expect(tableChange(before)).toBe('');
  });
});

describe('the closed state', () => {
  test('closed is false until close() starts and true from then on; close() is one promise however often called', async () => {
    const conn: Connection = await connect('direct', { command: PROBE_COMMAND });
    expect(conn.closed).toBe(false);
    const first = conn.close();
    expect(conn.closed).toBe(true);
    expect(conn.close()).toBe(first);
    await first;
    expect(conn.closed).toBe(true);
    await expect(conn.dupFileDescriptors([])).rejects.toBeInstanceOf(ClosedError);
  });

  test('requests pending at close() reject with a ClosedError naming each and saying the connection was closed; later ones, that it is closed; none leaves a copy', async () => {
    const before = openFdTable();
    const conn = await connect('direct', { command: PROBE_COMMAND });
    const outcome = (p: Promise<unknown>): Promise<unknown> => p.then((value) => ({ resolved: value }), (err: unknown) => err);
    const described = (e: unknown): unknown => (e instanceof ClosedError ? e.message : e);
    // Made in the tick of close(): none has settled when it is called.
    const pending = [conn.dupFileDescriptor(files[0]!), conn.dupFileDescriptors([files[1]!, files[2]!]), conn.call('hang')].map(outcome);
    await conn.close();
    expect((await Promise.all(pending)).map(described)).toEqual([
      'dupFileDescriptor failed: the direct connection was closed',
      'dupFileDescriptors failed: the direct connection was closed',
      'hang() failed: the direct connection was closed',
    ]);
    const later = [conn.dupFileDescriptor(files[0]!), conn.dupFileDescriptors([files[1]!]), conn.call('echo', 1)].map(outcome);
    expect((await Promise.all(later)).map(described)).toEqual([
      'dupFileDescriptor failed: the direct connection is closed',
      'dupFileDescriptors failed: the direct connection is closed',
      'echo() failed: the direct connection is closed',
    ]);
    // What the pending duplications made was closed by close(); the later ones made nothing.
    expect(tableChange(before)).toBe('');
  });

  test("a close() made once onCommandClosed has returned is the first close()'s promise: it resolves only once the command's process has exited", async () => {
    const here = openFdTable();
    let second: Promise<void> | undefined;
    let exitedWhenSecondResolved: boolean | undefined;
    const conn = await connect('child', {
      command: PROBE_COMMAND,
      onCommandClosed: () => {
        // A turn later: the hook has returned and its promise settled; the command's process still waits for the hang-up.
        setImmediate(() => {
          second = conn.close();
          void second.then(() => {
            exitedWhenSecondResolved = child.exitCode !== null || child.signalCode !== null;
          });
        });
      },
    });
    const { child } = conn as ChildConnection;
    const first = conn.close();
    await first;
    expect(second).toBe(first);
    await second;
    expect(exitedWhenSecondResolved).toBe(true);
    expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    expect(await fdTableSettles(process.pid, here)).toBe('');
  });

  test("close() of a transport whose duplication is still under way rejects the caller's request at once and resolves only once that work has settled", async () => {
    const before = openFdTable();
    for (const operation of ['dupFileDescriptor', 'dupFileDescriptors'] as const) {
      const conn = new StagedWork();
      const request = (operation === 'dupFileDescriptor' ? conn.dupFileDescriptor(files[0]!) : conn.dupFileDescriptors([files[0]!, files[1]!])).catch((e: unknown) => e);
      let closed = false;
      const closing = conn.close().then(() => {
        closed = true;
      });
      const err = await request;
      expect(err).toBeInstanceOf(ClosedError);
      expect((err as Error).message).toBe(`${operation} failed: the direct connection was closed`);
      // The transport's close has resolved; its duplication has not.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      expect([conn.transportClosed, closed]).toEqual([true, false]);
      conn.finish();
      await closing;
      expect(closed).toBe(true);
    }
    expect(tableChange(before)).toBe('');
  });
});

/**
 * A connection whose duplications stay under way until the test calls
 * finish() (then each gets made-up numbers, never opened); its own close
 * resolves at once.
 */
class StagedWork extends BaseConnection {
  readonly transport = 'direct' as const;
  readonly location: CommandLocation = { transport: 'direct', pid: process.pid, threadId };
  transportClosed = false;
  readonly #finishers: Array<() => void> = [];

  constructor() {
    super(undefined);
  }

  /** Lets every duplication under way settle. */
  finish(): void {
    for (const f of this.#finishers.splice(0)) f();
  }

  #underWay(count: number): Promise<number[]> {
    return new Promise((resolve) => this.#finishers.push(() => resolve(Array.from({ length: count }, (_, i) => 200_000 + i))));
  }

  protected async dupOne(): Promise<number> {
    const [fd] = await this.#underWay(1);
    return fd!;
  }

  protected dupOneSync(): number {
    throw new Error('not staged');
  }

  protected dupMany(fds: readonly number[] | Int32Array): Promise<number[]> {
    return this.#underWay(fds.length);
  }

  protected async release(): Promise<void> {}

  protected async callRemote(): Promise<unknown> {
    throw new Error('not staged');
  }

  protected async closeTransport(): Promise<void> {
    this.transportClosed = true;
  }
}
