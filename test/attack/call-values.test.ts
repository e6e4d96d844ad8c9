/**
 * Arguments and results are JSON, on every transport: what a command
 * receives and what the caller gets back are what a JSON round trip makes
 * of them (a Date is its ISO string, a function in an array is null, a Map
 * is {}), a value JSON cannot carry fails the same way everywhere, and no
 * object is shared between the caller and the command (a command that
 * mutates its argument, or a caller that mutates a result, changes nothing
 * on the other side). Generated values, checked against one reference: the
 * socket transports' encoding.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, RemoteError, type Connection, type TransportName } from '../../src';
import { startHelperProcess, type HelperProcess } from '../util/processes';
import { TRANSPORTS } from '../util/transport-suite';

const FIXTURE = join(__dirname, 'fixtures', 'values-command.js');
const VALUES = { name: 'values', module: FIXTURE, export: 'ValuesCommand' };

/** What the caller must see: the socket transports' JSON round trip, or the error class it fails with. */
type Outcome = { value: unknown } | { rejects: string; remote?: string };

/** The call as a socket transport carries it: the arguments' JSON, the command's answer, the result's JSON. */
function reference(args: unknown[], answer: (received: unknown[]) => unknown): Outcome {
  let received: unknown[];
  try {
    received = (JSON.parse(JSON.stringify({ args })) as { args: unknown[] }).args;
  } catch (err) {
    return { rejects: (err as Error).constructor.name };
  }
  let json: string;
  try {
    json = JSON.stringify({ value: answer(received) });
  } catch (err) {
    return { rejects: 'RemoteError', remote: (err as Error).constructor.name };
  }
  return { value: (JSON.parse(json) as { value?: unknown }).value };
}

async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { value: await p };
  } catch (err) {
    if (err instanceof RemoteError) return { rejects: 'RemoteError', remote: err.remote.name };
    return { rejects: (err as Error).constructor.name };
  }
}

/** Values, most of which JSON does not carry as they are (kept small: a frame holds 192 KiB). */
const anyValue = fc.anything({
  maxDepth: 3,
  maxKeys: 4,
  withBigInt: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withTypedArray: true,
  withSparseArray: true,
  withBoxedValues: true,
  withNullPrototype: true,
  withObjectString: true,
});
const argsOf = fc.array(fc.oneof(anyValue, fc.constant(undefined), fc.func(fc.integer())), { maxLength: 3 });

const GIVEN = ['date', 'map', 'set', 'fn', 'fnInArray', 'symbol', 'undefinedValue', 'nanInfinity', 'toJson', 'buffer', 'typedArray', 'bigint', 'cyclic', 'nested'];

describe('call arguments and results are JSON on every transport', () => {
  let dir: string;
  let helper: HelperProcess;
  const conns = new Map<TransportName, Connection>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-values-'));
    helper = await startHelperProcess(join(dir, 'helper.sock'), ['--command', `values=${FIXTURE}#ValuesCommand`]);
    for (const t of TRANSPORTS) conns.set(t, await connect(t, { command: VALUES, socketPath: join(dir, 'helper.sock') }));
  });

  afterAll(async () => {
    for (const c of conns.values()) await c.close();
    await helper?.stop('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test.each(TRANSPORTS)('%s: generated arguments arrive and come back as their JSON', async (transport) => {
    const conn = conns.get(transport) as Connection;
    await fc.assert(
      fc.asyncProperty(argsOf, async (args) => {
        expect(await outcome(conn.call('echo', ...args))).toEqual(reference(args, (r) => r));
        expect(await outcome(conn.call('describe', ...args))).toEqual(
          reference(args, (r) => r.map((a) => Object.prototype.toString.call(a))),
        );
      }),
      { seed: 20261130, numRuns: 150 },
    );
  });

  test.each(TRANSPORTS)('%s: results JSON cannot carry as they are come back as their JSON, or fail as RemoteError', async (transport) => {
    const conn = conns.get(transport) as Connection;
    for (const name of GIVEN) {
      const values = await import(FIXTURE).then((m: { ValuesCommand: new (c: unknown) => { give(n: string): unknown } }) => new m.ValuesCommand({}));
      expect({ name, got: await outcome(conn.call('give', name)) }).toEqual({ name, got: reference([], () => values.give(name)) });
    }
  });

  test.each(TRANSPORTS)('%s: no object is shared between the caller and the command', async (transport) => {
    const conn = conns.get(transport) as Connection;
    const mine = { a: 1 };
    await conn.call('mutate', mine);
    expect(mine).toEqual({ a: 1 });
    const state = (await conn.call('give', 'state')) as { count: number };
    state.count = 99;
    expect(await conn.call('give', 'state')).toEqual({ count: 0 });
  });
});
