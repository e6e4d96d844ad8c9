/**
 * Arguments JSON cannot carry (a BigInt, a cycle, a toJSON that throws) or
 * past what one frame carries, given to connect() as the command's args or
 * to call(): the promise rejects with the encoding's error (TypeError,
 * RangeError, toJSON's own), and that is all. Nothing rejects later
 * unobserved (no request left pending to fail once the via exits, no
 * connect timer left to fire its TimeoutError), every process the connect
 * started is gone, and the fd table is the same as before (README: "every
 * failure a clear typed error"; no fd leaked). On remote the HELLO is
 * encoded before the via is started: no process is started at all. The
 * child transport, which sends its HELLO over its socket, is the
 * reference: both reject alike. Functions and symbols ride along (JSON
 * makes them null in an array, drops them in an object), as they would in
 * a caller's arguments.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PeerExitedError, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { formatFdTableDiff, openFdTable } from '../../src/fd';
import { MAX_CALL_JSON_BYTES } from '../../src/json-value';
import { checkFrameLength, MAX_FRAME_BYTES, RemoteFrame } from '../../src/transports/remote-channel';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { childrenOf } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

type Transport = 'remote' | 'child';

/** What makes the arguments unsendable, put `depth` levels down inside them. */
type Bad = { kind: 'bigint'; value: bigint } | { kind: 'cycle'; viaObject: boolean } | { kind: 'toJSON' } | { kind: 'oversize'; extra: number };

const bad: fc.Arbitrary<Bad> = fc.oneof(
  fc.record({ kind: fc.constant('bigint' as const), value: fc.bigInt() }),
  fc.record({ kind: fc.constant('cycle' as const), viaObject: fc.boolean() }),
  fc.record({ kind: fc.constant('toJSON' as const) }),
  fc.record({ kind: fc.constant('oversize' as const), extra: fc.integer({ min: 1, max: 4096 }) }),
);

/** Values JSON carries as null or leaves out, and values it carries as they are. */
const filler: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(() => 1),
  fc.string().map((s) => Symbol(s)),
  fc.jsonValue({ maxDepth: 2 }),
);

interface Case {
  bad: Bad;
  /** Containers around the bad value, outermost first: true an object's key, false an array. */
  path: boolean[];
  before: unknown[];
  after: unknown[];
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  bad,
  path: fc.array(fc.boolean(), { maxLength: 3 }),
  before: fc.array(filler, { maxLength: 3 }),
  after: fc.array(filler, { maxLength: 3 }),
});

/** The arguments of `c`, its oversize string past `limit` bytes of JSON; and what the promise must reject with. */
function build(c: Case, limit: number): { args: unknown[]; expected: (err: unknown) => boolean } {
  let value: unknown;
  let expected: (err: unknown) => boolean;
  switch (c.bad.kind) {
    case 'bigint':
      value = c.bad.value;
      expected = (err) => err instanceof TypeError;
      break;
    case 'cycle': {
      const cycle: Record<string, unknown> | unknown[] = c.bad.viaObject ? {} : [];
      if (Array.isArray(cycle)) cycle.push(cycle);
      else cycle['self'] = cycle;
      value = cycle;
      expected = (err) => err instanceof TypeError;
      break;
    }
    case 'toJSON': {
      const thrown = new Error('toJSON refuses');
      value = {
        toJSON(): never {
          throw thrown;
        },
      };
      expected = (err) => err === thrown;
      break;
    }
    case 'oversize':
      value = 'a'.repeat(limit + c.bad.extra);
      expected = (err) => err instanceof RangeError;
      break;
  }
  for (const inObject of [...c.path].reverse()) value = inObject ? { k: value } : [value];
  return { args: [...c.before, value, ...c.after], expected };
}

/** Collects what is rejected or thrown unobserved while `fn` runs. */
async function watchingStrays<T>(fn: (strays: unknown[]) => Promise<T>): Promise<T> {
  const strays: unknown[] = [];
  const onStray = (err: unknown): void => {
    strays.push(err);
  };
  process.on('unhandledRejection', onStray);
  process.on('uncaughtException', onStray);
  try {
    return await fn(strays);
  } finally {
    process.off('unhandledRejection', onStray);
    process.off('uncaughtException', onStray);
  }
}

/** A turn after every timer due by `ms` from now has run (and any rejection it left unobserved was reported). */
async function past(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  await new Promise((r) => setImmediate(r));
}

function describeStrays(strays: unknown[]): string[] {
  return strays.map((e) => `${(e as Error).name}: ${(e as Error).message}`);
}

/**
 * Connects as `connect(transport, options)` does; also says whether every
 * timer of `timeoutMs` (the connect's own) set meanwhile was cleared by the
 * time it resolved: one left holds the event loop, and would fire its
 * TimeoutError into nothing.
 */
async function connectWatchingTimers(transport: Transport, timeoutMs: number): Promise<{ conn: Connection; uncleared: number }> {
  const set = jest.spyOn(global, 'setTimeout');
  const cleared = jest.spyOn(global, 'clearTimeout');
  try {
    const conn = await connect(transport, { command: PROBE_COMMAND, ...options(transport, timeoutMs) });
    const clearedIds = new Set(cleared.mock.calls.map(([t]) => t));
    const own = set.mock.calls.flatMap(([, ms], i) => (ms === timeoutMs ? [set.mock.results[i]?.value as unknown] : []));
    return { conn, uncleared: own.filter((t) => !clearedIds.has(t as NodeJS.Timeout)).length };
  } finally {
    set.mockRestore();
    cleared.mockRestore();
  }
}

const options = (transport: Transport, timeoutMs?: number): Record<string, unknown> => ({
  ...(transport === 'remote' ? LOCAL_REMOTE : {}),
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});

test('generated: connect with args JSON cannot carry, or past one frame, rejects with that error and leaves nothing behind', async () => {
  await watchingStrays(async (strays) => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<Transport>('remote', 'child'), caseArb, fc.integer({ min: 1, max: 200 }), async (transport, c, timeoutMs) => {
        strays.length = 0;
        // Past one remote frame is past one child message too.
        const { args, expected } = build(c, MAX_FRAME_BYTES);
        const children = new Set(childrenOf(process.pid));
        const before = openFdTable();
        // The child transport's timer covers its spawn as well: a short one could fail it first.
        const err = await connect(transport, { command: { ...PROBE_COMMAND, args }, ...options(transport, transport === 'remote' ? timeoutMs : undefined) }).then(
          async (conn) => {
            await conn.close();
            return new Error('connected');
          },
          (e: unknown) => e,
        );
        const started = childrenOf(process.pid).filter((pid) => !children.has(pid));
        expect({ err: String(err), expected: expected(err) }).toEqual({ err: String(err), expected: true });
        if (transport === 'remote') expect(started).toEqual([]);
        await new HangGuard(scaled(15_000)).until(
          'the processes the connect started exit',
          () => childrenOf(process.pid).filter((pid) => started.includes(pid)),
          (left) => left.length === 0,
        );
        // Past the connect's timeout, and past the via's exit.
        await past(timeoutMs);
        expect(describeStrays(strays)).toEqual([]);
        expect(formatFdTableDiff(await settleFdTable(process.pid, before, scaled(2000)))).toBe('');
      }),
      { numRuns: 16 },
    );
  });
}, scaled(240_000));

test.each<Transport>(['remote', 'child'])(
  'generated: %s call() with args JSON cannot carry, or past MAX_CALL_JSON_BYTES, rejects with that error; the connection goes on',
  async (transport) => {
    await watchingStrays(async (strays) => {
      const before = openFdTable();
      // A time no other timer here is likely to use.
      const { conn, uncleared } = await connectWatchingTimers(transport, scaled(30_000) + 7);
      try {
        expect(uncleared).toBe(0);
        await fc.assert(
          fc.asyncProperty(caseArb, async (c) => {
            strays.length = 0;
            const { args, expected } = build(c, MAX_CALL_JSON_BYTES);
            const err = await conn.call('where', ...args).then(
              () => new Error('called'),
              (e: unknown) => e,
            );
            expect({ err: String(err), expected: expected(err) }).toEqual({ err: String(err), expected: true });
            expect(await conn.call<{ transport: string }>('where')).toMatchObject({ transport });
            await past(0);
            expect(describeStrays(strays)).toEqual([]);
          }),
          { numRuns: 30 },
        );
      } finally {
        await conn.close();
      }
      await past(0);
      expect(describeStrays(strays)).toEqual([]);
      expect(formatFdTableDiff(await settleFdTable(process.pid, before, scaled(2000)))).toBe('');
    });
  },
  scaled(120_000),
);

test('generated: a remote frame carries a payload of up to MAX_FRAME_BYTES bytes; a longer one is a RangeError naming its type and size', () => {
  fc.assert(
    fc.property(fc.integer({ min: -4096, max: 4096 }), fc.constantFrom(RemoteFrame.HELLO, RemoteFrame.CALL, RemoteFrame.OPEN), (delta, type) => {
      const length = MAX_FRAME_BYTES + delta;
      if (delta <= 0) {
        expect(() => checkFrameLength(type, length)).not.toThrow();
        return;
      }
      const name = Object.entries(RemoteFrame).find(([, v]) => v === type)?.[0];
      expect(() => checkFrameLength(type, length)).toThrow(new RangeError(`a ${name} frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`));
    }),
    { examples: [[0, RemoteFrame.HELLO], [1, RemoteFrame.HELLO]] },
  );
});

test.each<Transport>(['remote', 'child'])('%s: a command whose constructor throws fails connect with RemoteError(constructor), nothing left behind', async (transport) => {
  const throwing = { name: 'throwing', module: join(__dirname, '..', 'fixtures', 'throwing-command.js'), export: 'ThrowingCommand' };
  await watchingStrays(async (strays) => {
    const before = openFdTable();
    const timeoutMs = scaled(30_000) + 7;
    const err = await connect(transport, { command: throwing, ...options(transport, timeoutMs) }).then(
      () => new Error('connected'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ method: 'constructor', remote: { code: 'E_REFUSES', message: 'this command refuses to start' } });
    await new HangGuard(scaled(15_000)).until('the command\'s process exits', () => childrenOf(process.pid), (left) => left.length === 0);
    await past(0);
    expect(describeStrays(strays)).toEqual([]);
    expect(formatFdTableDiff(await settleFdTable(process.pid, before, scaled(2000)))).toBe('');
  });
});

test('remote: a far side that exits before its READY fails connect with PeerExitedError naming connect, nothing left behind', async () => {
  await watchingStrays(async (strays) => {
    const before = openFdTable();
    const err = await connect('remote', { command: PROBE_COMMAND, via: LOCAL_REMOTE.via, serve: [process.execPath, '-e', 'process.exit(3)', '--'], timeoutMs: scaled(30_000) }).then(
      () => new Error('connected'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PeerExitedError);
    expect((err as Error).message).toMatch(/^connect failed: the remote command's channel \(via process pid \d+\) exited with code 3 before replying$/);
    await new HangGuard(scaled(15_000)).until('the via exits', () => childrenOf(process.pid), (left) => left.length === 0);
    await past(0);
    expect(describeStrays(strays)).toEqual([]);
    expect(formatFdTableDiff(await settleFdTable(process.pid, before, scaled(2000)))).toBe('');
  });
});
