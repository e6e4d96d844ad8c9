/**
 * A call's size has one limit on every transport: its arguments' JSON
 * (`{ method, args }`) and its result's JSON (`{ value }`) may each be at
 * most MAX_CALL_JSON_BYTES bytes of UTF-8, what one frame of the socket
 * transports holds. Arguments past it reject with a RangeError (code
 * ERR_FDBRIDGE_CALL_TOO_LARGE) before anything is sent: the command never
 * sees the call. A result past it rejects as a RemoteError whose remote
 * error is that RangeError: the method ran, its result could not travel.
 * Direct, worker and remote could carry more and do not. Sizes are
 * generated around the limit from characters whose JSON is 1 to 6 bytes
 * (escapes, multi-byte UTF-8, surrogate pairs), and checked against a
 * reference computed here from the JSON itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { CALL_TOO_LARGE, connect, MAX_CALL_JSON_BYTES, RemoteError, transportNames, type Connection, type TransportName } from '../../src';
import { startHelperProcess, type HelperProcess } from '../util/processes';

const FIXTURE = join(__dirname, 'fixtures', 'sizes-command.js');
const SIZES = { name: 'sizes', module: FIXTURE, export: 'SizesCommand' };
const TRANSPORTS = transportNames();

/** The documented limit: a 192 KiB frame less its 8-byte header. */
const LIMIT = 192 * 1024 - 8;

type Outcome = { ok: true } | { rejects: string; remote?: string; code?: unknown };

function bytesOf(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/** What every transport must do with a call whose JSON is `argsBytes` and whose result's JSON would be `resultBytes`. */
function reference(argsBytes: number, resultBytes: number): Outcome {
  if (argsBytes > LIMIT) return { rejects: 'RangeError', code: CALL_TOO_LARGE };
  if (resultBytes > LIMIT) return { rejects: 'RemoteError', remote: 'RangeError', code: CALL_TOO_LARGE };
  return { ok: true };
}

async function outcome(p: Promise<unknown>, expected: unknown): Promise<Outcome> {
  try {
    const value = await p;
    // A value that arrives must arrive whole.
    expect(value === expected).toBe(true);
    return { ok: true };
  } catch (err) {
    if (err instanceof RemoteError) return { rejects: 'RemoteError', remote: err.remote.name, code: err.remote.code };
    return { rejects: (err as Error).constructor.name, code: (err as { code?: unknown }).code };
  }
}

/** Characters whose JSON (in a string) is 1 ('x'), 2 ('"', '\n', 'é'), 3 ('€'), 4 ('😀'), 6 ('\u0001') bytes. */
const UNITS = ['x', '"', '\n', 'é', '€', '😀', '\u0001'];
const pattern = fc.array(fc.constantFrom(...UNITS), { minLength: 1, maxLength: 4 }).map((u) => u.join(''));

/** `p` repeated so that `overhead` plus its JSON comes to `target` bytes or just below. */
function textNear(p: string, overhead: number, target: number): string {
  const per = bytesOf(p) - 2;
  return p.repeat(Math.max(0, Math.floor((target - overhead) / per)));
}

describe('one call size limit on every transport', () => {
  let dir: string;
  let helper: HelperProcess;
  const conns = new Map<TransportName, Connection>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-size-'));
    helper = await startHelperProcess(join(dir, 'helper.sock'), ['--command', `sizes=${FIXTURE}#SizesCommand`]);
    for (const t of TRANSPORTS) conns.set(t, await connect(t, { command: SIZES, socketPath: join(dir, 'helper.sock') }));
  });

  afterAll(async () => {
    for (const c of conns.values()) await c.close();
    await helper?.stop('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the limit is exported and is one frame’s payload', () => {
    expect(TRANSPORTS).toEqual(['direct', 'worker', 'child', 'helper', 'pidfd', 'remote']);
    expect(MAX_CALL_JSON_BYTES).toBe(LIMIT);
  });

  test.each(TRANSPORTS)('%s: arguments of exactly the limit go, one byte more is a RangeError and the command never sees it', async (transport) => {
    const conn = conns.get(transport) as Connection;
    const overhead = bytesOf({ method: 'echo', args: [''] });
    const fits = 'x'.repeat(LIMIT - overhead);
    expect(bytesOf({ method: 'echo', args: [fits] })).toBe(LIMIT);
    const before = await conn.call<number>('calls');
    await expect(conn.call('echo', fits)).resolves.toBe(fits);
    const err = await conn.call('echo', `${fits}x`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err).toMatchObject({ code: CALL_TOO_LARGE, message: expect.stringContaining(`${LIMIT + 1} bytes`) });
    // The fitting call reached the command; the refused one did not.
    expect(await conn.call<number>('calls')).toBe(before + 1);
  });

  test.each(TRANSPORTS)('%s: a result of exactly the limit comes back, one byte more is a RemoteError (RangeError) after the method ran', async (transport) => {
    const conn = conns.get(transport) as Connection;
    const overhead = bytesOf({ value: '' });
    expect(bytesOf({ value: 'x'.repeat(LIMIT - overhead) })).toBe(LIMIT);
    await expect(conn.call('text', LIMIT - overhead, 'x')).resolves.toBe('x'.repeat(LIMIT - overhead));
    const before = await conn.call<number>('calls');
    const err = await conn.call('text', LIMIT - overhead + 1, 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).remote).toMatchObject({ name: 'RangeError', code: CALL_TOO_LARGE, message: expect.stringContaining(`${LIMIT + 1} bytes`) });
    // The method ran: its result could not travel.
    expect(await conn.call<number>('calls')).toBe(before + 1);
    // The connection goes on.
    await expect(conn.call('echo', 'after')).resolves.toBe('after');
  });

  test('a 200 kB argument and a 300 kB result: the same outcome on every transport', async () => {
    const got: Record<string, [Outcome, Outcome]> = {};
    for (const t of TRANSPORTS) {
      const conn = conns.get(t) as Connection;
      got[t] = [await outcome(conn.call('echo', 'x'.repeat(200_000)), undefined), await outcome(conn.call('text', 300_000, 'x'), undefined)];
    }
    const expected: [Outcome, Outcome] = [
      { rejects: 'RangeError', code: CALL_TOO_LARGE },
      { rejects: 'RemoteError', remote: 'RangeError', code: CALL_TOO_LARGE },
    ];
    expect(got).toEqual(Object.fromEntries(TRANSPORTS.map((t) => [t, expected])));
  });

  test('generated sizes around the limit: every transport does what the JSON’s size says', async () => {
    await fc.assert(
      fc.asyncProperty(pattern, fc.integer({ min: -12, max: 12 }), fc.boolean(), async (p, delta, asResult) => {
        let argsBytes: number;
        let resultBytes: number;
        let expectedValue: string;
        let call: (c: Connection) => Promise<unknown>;
        if (asResult) {
          const s = textNear(p, bytesOf({ value: '' }), LIMIT + delta);
          const count = s.length / p.length;
          argsBytes = bytesOf({ method: 'text', args: [count, p] });
          resultBytes = bytesOf({ value: s });
          expectedValue = s;
          call = (c) => c.call('text', count, p);
        } else {
          const s = textNear(p, bytesOf({ method: 'echo', args: [''] }), LIMIT + delta);
          argsBytes = bytesOf({ method: 'echo', args: [s] });
          resultBytes = bytesOf({ value: s });
          expectedValue = s;
          call = (c) => c.call('echo', s);
        }
        const expected = reference(argsBytes, resultBytes);
        for (const t of TRANSPORTS) {
          const conn = conns.get(t) as Connection;
          const got = await outcome(call(conn), expectedValue);
          expect({ transport: t, argsBytes, resultBytes, got }).toEqual({ transport: t, argsBytes, resultBytes, got: expected });
        }
      }),
      { seed: 20261130, numRuns: 40 },
    );
  });
});
