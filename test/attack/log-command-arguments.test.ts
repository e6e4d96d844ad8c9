/**
 * The log command's methods take what a client sends (JSON values over a
 * helper daemon's connection): a value of the wrong type is a TypeError, a
 * number that is no fd a RangeError, each naming the method and the value
 * given, before anything is done with it (nothing written, no fd taken).
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, LOG_COMMAND, RemoteError, type Connection } from '../../src';
import { openFdTable } from '../../src/fd';
import { describeValue } from '../../src/validate';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-log-args-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the command's `method` threw for `value`, as the daemon described it (a RemoteError's remote). */
async function thrownBy(connection: Connection, method: string, value: unknown): Promise<{ name: string; code?: string; message: string }> {
  try {
    await connection.call(method, value);
  } catch (err) {
    expect(err).toBeInstanceOf(RemoteError);
    return (err as RemoteError).remote;
  }
  throw new Error(`${method}(${JSON.stringify(value)}) did not throw`);
}

test('model: log and redirectLogToFd refuse a value of the wrong type (TypeError) or a number that is no fd (RangeError), naming the method and the value', async () => {
  const daemonBefore = openFdTable(helper.pid);
  const testBefore = openFdTable();
  const connection = await connect('helper', { command: LOG_COMMAND, socketPath });
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().filter((v) => typeof v !== 'string'),
          fc.constantFrom(null, {}, [], { toString: 1 }, { valueOf: 3 }, true),
        ),
        async (line) => {
          const err = await thrownBy(connection, 'log', line);
          expect(err.name).toBe('TypeError');
          expect(err.code).toBe('ERR_INVALID_ARG_TYPE');
          expect(err.message).toBe(`log.log: line must be a string, not ${describeValue(line)}`);
        },
      ),
      { numRuns: 60 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().filter((v) => typeof v !== 'number'),
          fc.constantFrom('0', '3', null, {}, { valueOf: 3 }, [2]),
          fc.oneof(fc.integer({ max: -1 }), fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)), fc.constant(1e12), fc.constant(2 ** 31)),
        ),
        async (fd) => {
          const err = await thrownBy(connection, 'redirectLogToFd', fd);
          expect(err.name).toBe(typeof fd === 'number' ? 'RangeError' : 'TypeError');
          expect(err.code).toBe(typeof fd === 'number' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE');
          expect(err.message).toBe(`log.redirectLogToFd: fd must be an integer from 0 to 2147483647, not ${typeof fd === 'number' ? fd : describeValue(fd)}`);
        },
      ),
      { numRuns: 60 },
    );
    // Nothing was taken or written: the connection still works.
    expect(await connection.call('where')).toMatchObject({ transport: 'helper', pid: helper.pid });
  } finally {
    await connection.close();
  }
  expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
  expect(openFdTable()).toEqual(testBefore);
});
