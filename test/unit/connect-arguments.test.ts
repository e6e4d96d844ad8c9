/**
 * Where a transport is chosen (src/transports/index.ts): `connect` opens a
 * connection through the transport its name names, each name one transport,
 * and refuses, before anything starts, a name that is none of them
 * (TypeError naming them all), options that are not an object (TypeError),
 * and a timeoutMs that is not an integer from 1 to 2^31 - 1 (RangeError);
 * the bounds themselves are accepted. Names are generated (strings near the
 * real ones: case, spaces, prototype keys).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, TimeoutError, transportNames, type TransportName } from '../../src';
import { diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { describeValue } from '../../src/validate';
import { fdTableSettles, startHelperProcess } from '../util/processes';

const NAMES: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'];

test('transportNames lists every transport once, in the documented order', () => {
  expect(transportNames()).toEqual(NAMES);
});

test('generated: a name that is no transport is refused with a TypeError naming them all, nothing started', async () => {
  const near = fc.constantFrom(...NAMES).chain((n) =>
    fc.constantFrom(n.toUpperCase(), ` ${n}`, `${n} `, `${n}s`, n.slice(1), `${n}\0`),
  );
  const odd = fc.constantFrom('', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf');
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.oneof(near, odd, fc.string()).filter((s) => !(NAMES as string[]).includes(s)), async (name) => {
      // A connection made all the same is closed, so that the check fails rather than hangs.
      const err = await connect(name as TransportName, { command: PROBE_COMMAND }).then(
        (c) => c.close().then(() => 'connected'),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TypeError);
      expect((err as Error).message).toBe(`unknown transport ${name}; use one of ${NAMES.join(', ')}`);
    }),
    { numRuns: 200 },
  );
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});

test.each<[string, unknown]>([
  ['undefined', undefined],
  ['null', null],
  ['a string', 'probe'],
  ['a number', 5],
])('options that are %s are refused with a TypeError on every transport', async (_what, options) => {
  for (const transport of NAMES) {
    const err = await (connect as (t: string, o: unknown) => Promise<unknown>)(transport, options).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toBe('connect(transport, options): options.command is required');
  }
});

test('generated: a timeoutMs that is not an integer from 1 to 2^31 - 1 is refused with a RangeError on every transport', async () => {
  const bad = fc.oneof(
    fc.integer({ max: 0 }),
    fc.nat(2 ** 30).map((n) => 2 ** 31 + n),
    fc.double({ noInteger: true }),
    fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53, -0),
    fc.string(),
    fc.constantFrom(null, true, 10n, [100], { valueOf: () => 100 }),
  );
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...NAMES), bad, async (transport, timeoutMs) => {
      const err = await connect(transport, { command: PROBE_COMMAND, timeoutMs: timeoutMs as number }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RangeError);
      expect((err as Error).message).toBe(`connect: options.timeoutMs must be an integer from 1 to 2147483647 (ms), not ${describeValue(timeoutMs)}`);
    }),
    { numRuns: 200 },
  );
});

test('generated: a sendQueueLimit that is no byte count is refused on every transport, a TypeError or RangeError naming it', async () => {
  const before = openFdTable();
  const bad = fc.oneof(
    fc.integer({ max: -1 }),
    fc.double({ noInteger: true }),
    fc.constantFrom(2 ** 53, Number.POSITIVE_INFINITY),
    fc.string(),
    fc.constantFrom(null, true, 10n, [100]),
  );
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...NAMES), bad, async (transport, sendQueueLimit) => {
      const err = await connect(transport, { command: PROBE_COMMAND, sendQueueLimit: sendQueueLimit as number }).then(
        (c) => c.close().then(() => 'connected'),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(typeof sendQueueLimit === 'number' ? RangeError : TypeError);
      expect((err as Error).message).toMatch(/^connect: options\.sendQueueLimit must be an integer from 0 to 9007199254740991, not /);
    }),
    { numRuns: 100 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

describe('each name opens its own transport', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdb-connect-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('without timeoutMs and with it at its bounds (1 and 2^31 - 1 pass the check)', async () => {
    const before = openFdTable();
    const helper = await startHelperProcess(join(dir, 'helper.sock'));
    try {
      for (const transport of NAMES) {
        for (const timeoutMs of [undefined, 0x7fffffff]) {
          const conn = await connect(transport, { command: PROBE_COMMAND, socketPath: join(dir, 'helper.sock'), timeoutMs });
          try {
            expect({ transport, timeoutMs, opened: conn.transport }).toEqual({ transport, timeoutMs, opened: transport });
          } finally {
            await conn.close();
          }
        }
        // 1 ms passes the check: what follows is the transport's own deadline
        // (a TimeoutError) or a connection made within it, never a RangeError.
        const quick = await connect(transport, { command: PROBE_COMMAND, socketPath: join(dir, 'helper.sock'), timeoutMs: 1 }).then(
          (c) => c.close().then(() => 'accepted'),
          (e: unknown) => (e instanceof TimeoutError ? 'accepted' : String(e)),
        );
        expect({ transport, quick }).toEqual({ transport, quick: 'accepted' });
      }
    } finally {
      await helper.stop();
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 120_000);
});
