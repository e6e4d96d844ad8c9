/**
 * How a call settles does not depend on the transport: whatever a command's
 * method does (returns a value, throws, returns a promise that fulfils or
 * rejects later, returns a thenable whose `then` fulfils at once or later,
 * rejects, throws, does both, or is a getter that throws or gives no
 * function), every transport gives the caller the same value or the same
 * RemoteError, and reads a returned object's `then` as often as resolving a
 * promise with it does (once per level). The reference is the direct
 * transport, which runs the method in an async function; the socket
 * transports answer a method that returned a value in the turn its request
 * was read, and a thenable from a job, and must not differ from it.
 */
import { fstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, RemoteError, type Connection, type TransportName } from '../../src';
import { closeFds, makeMemfd, openFdTable, type FdTable } from '../../src/fd';
import { startHelperProcess, type HelperProcess } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { TRANSPORTS } from '../util/transport-suite';

const FIXTURE = join(__dirname, 'fixtures', 'settle-command.js');
const SETTLE = { name: 'settle', module: FIXTURE, export: 'SettleCommand' };

type Plan =
  | { kind: 'value'; value: unknown }
  | { kind: 'unsendable'; what: 'bigint' | 'cyclic' | 'toJSONThrows' | 'tooLarge' | 'symbol' | 'function' }
  | { kind: 'throw' | 'reject' | 'thenGetterThrows'; message: string }
  | { kind: 'thenNotFunction'; value: unknown }
  | { kind: 'resolve' | 'async'; inner: Plan }
  | { kind: 'thenable'; mode: 'sync' | 'later' | 'throws' | 'rejects' | 'fulfilsThenThrows' | 'both'; inner: Plan; message: string };

const message = fc.string({ maxLength: 20 });
const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined));
const { plan } = fc.letrec<{ plan: Plan }>((tie) => ({
  plan: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ kind: fc.constant('value' as const), value }),
    fc.record({
      kind: fc.constant('unsendable' as const),
      what: fc.constantFrom('bigint' as const, 'cyclic' as const, 'toJSONThrows' as const, 'tooLarge' as const, 'symbol' as const, 'function' as const),
    }),
    fc.record({ kind: fc.constantFrom('throw' as const, 'reject' as const, 'thenGetterThrows' as const), message }),
    fc.record({ kind: fc.constant('thenNotFunction' as const), value }),
    fc.record({ kind: fc.constantFrom('resolve' as const, 'async' as const), inner: tie('plan') }),
    fc.record({
      kind: fc.constant('thenable' as const),
      mode: fc.constantFrom('sync' as const, 'later' as const, 'throws' as const, 'rejects' as const, 'fulfilsThenThrows' as const, 'both' as const),
      inner: tie('plan'),
      message,
    }),
  ),
}));

type Outcome = { value: unknown } | { remote: string; message: string };

async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { value: await p };
  } catch (err) {
    if (err instanceof RemoteError) return { remote: err.remote.name, message: err.remote.message };
    throw err;
  }
}

describe('a call settles the same on every transport, however the method answers', () => {
  let dir: string;
  let helper: HelperProcess;
  let before: FdTable;
  const conns = new Map<TransportName, Connection>();

  beforeAll(async () => {
    before = openFdTable();
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-settling-'));
    helper = await startHelperProcess(join(dir, 'helper.sock'), ['--command', `settle=${FIXTURE}#SettleCommand`]);
    for (const t of TRANSPORTS) conns.set(t, await connect(t, { command: SETTLE, socketPath: join(dir, 'helper.sock') }));
  });

  afterAll(async () => {
    for (const c of conns.values()) await c.close();
    await helper?.stop('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
    expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
  });

  test('generated plans: the same value or RemoteError, and the same reads of then, as direct', async () => {
    const direct = conns.get('direct') as Connection;
    await fc.assert(
      fc.asyncProperty(plan, async (p) => {
        const expected = { got: await outcome(direct.call('answer', p)), reads: await direct.call('reads') };
        for (const t of TRANSPORTS) {
          const conn = conns.get(t) as Connection;
          expect({ transport: t, got: await outcome(conn.call('answer', p)), reads: await conn.call('reads') }).toEqual({ transport: t, ...expected });
        }
      }),
      { seed: 20261201, numRuns: 120 },
    );
  });

  test('calls answered at once and later, pipelined on one connection: each gets its own reply', async () => {
    const plans: Plan[] = [
      { kind: 'thenable', mode: 'later', inner: { kind: 'value', value: 'later' }, message: '' },
      { kind: 'value', value: 'now' },
      { kind: 'throw', message: 'thrown' },
      { kind: 'resolve', inner: { kind: 'value', value: 'resolved' } },
      { kind: 'value', value: 'now again' },
    ];
    for (const t of TRANSPORTS) {
      const conn = conns.get(t) as Connection;
      const got = await Promise.all(plans.map((p) => outcome(conn.call('answer', p))));
      expect({ transport: t, got }).toEqual({
        transport: t,
        got: [{ value: 'later' }, { value: 'now' }, { remote: 'RangeError', message: 'thrown' }, { value: 'resolved' }, { value: 'now again' }],
      });
      await conn.call('reads');
    }
  });

  test('calls pipelined with duplications: each call settles as on direct, each duplicate is the right file', async () => {
    const sources = Array.from({ length: 3 }, (_, i) => makeMemfd(`settle-${i}`));
    const fileOf = (fd: number): string => {
      const st = fstatSync(fd);
      return `${st.dev}:${st.ino}`;
    };
    type Op = { dup: number } | { plan: Plan };
    const op = fc.oneof(fc.record({ dup: fc.integer({ min: 0, max: sources.length - 1 }) }), fc.record({ plan }));
    /** Runs `ops` pipelined on `conn`; the calls' outcomes, and the duplicates in order. */
    const run = async (conn: Connection, ops: Op[]): Promise<{ calls: Outcome[]; dups: number[] }> => {
      const settled = await Promise.all(
        ops.map((o) => ('dup' in o ? conn.dupFileDescriptor(sources[o.dup] as number) : outcome(conn.call('answer', o.plan)))),
      );
      await conn.call('reads');
      return {
        calls: settled.filter((r): r is Outcome => typeof r !== 'number'),
        dups: settled.filter((r): r is number => typeof r === 'number'),
      };
    };
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 2, maxLength: 6 }), async (ops) => {
          const direct = conns.get('direct') as Connection;
          const { calls: expected, dups: directDups } = await run(direct, ops);
          await direct.call('closeGiven', directDups);
          const files = ops.flatMap((o) => ('dup' in o ? [fileOf(sources[o.dup] as number)] : []));
          for (const t of TRANSPORTS) {
            const conn = conns.get(t) as Connection;
            const { calls, dups } = await run(conn, ops);
            expect({ transport: t, calls, files: await conn.call('files', dups) }).toEqual({ transport: t, calls: expected, files });
            await conn.call('closeGiven', dups);
          }
        }),
        { seed: 20261202, numRuns: 25 },
      );
    } finally {
      closeFds(sources);
    }
  });

  test('calls of every sort, then close() in the same turn: each rejects once with ClosedError, on every transport', async () => {
    const plans: Plan[] = [
      { kind: 'value', value: 'now' },
      { kind: 'thenable', mode: 'later', inner: { kind: 'value', value: 'later' }, message: '' },
      { kind: 'throw', message: 'thrown' },
      { kind: 'unsendable', what: 'toJSONThrows' },
      { kind: 'thenable', mode: 'both', inner: { kind: 'value', value: 'first' }, message: 'second' },
      { kind: 'value', value: 'last' },
    ];
    for (const t of TRANSPORTS) {
      const conn = await connect(t, { command: SETTLE, socketPath: join(dir, 'helper.sock') });
      const settled = plans.map((p) => conn.call('answer', p).then((v) => ({ value: v }), (e: unknown) => ({ rejected: e instanceof ClosedError ? 'ClosedError' : String(e) })));
      await conn.close();
      expect({ transport: t, got: await Promise.all(settled) }).toEqual({ transport: t, got: plans.map(() => ({ rejected: 'ClosedError' })) });
    }
  });
});
