/**
 * The direct transport runs the command in the caller's thread, so what it
 * throws is at hand: a method that throws rejects the call with a
 * RemoteError naming the method and describing what was thrown, with the
 * thrown error itself as its `cause`; a constructor that throws rejects
 * connect with RemoteError('constructor'), the same way. Its location is
 * this process and thread. Generated: messages and codes.
 */
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';

import fc from 'fast-check';

import { connect, PROBE_COMMAND, RemoteError, type ProbeCommand } from '../../src';

const RUNS = { seed: 20261204, numRuns: 50 };

const THROWING = { module: join(__dirname, '..', 'fixtures', 'throwing-command.js'), export: 'ThrowingCommand' };

test('its location is this process and thread, as the command sees it', async () => {
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    expect(conn.location).toEqual({ transport: 'direct', pid: process.pid, threadId });
    expect(await conn.proxy<ProbeCommand>().where()).toEqual(conn.location);
  } finally {
    await conn.close();
  }
});

test('generated: a method that throws rejects the call with RemoteError(method), the thrown error as its cause', async () => {
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1 }), fc.option(fc.stringMatching(/^E[A-Z_]{1,12}$/), { nil: undefined }), async (message, code) => {
        const err = await conn.call('fail', message, code).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(RemoteError);
        expect(err).toMatchObject({ method: 'fail', remote: { name: 'Error', message, ...(code === undefined ? {} : { code }) } });
        const cause = (err as RemoteError).cause;
        expect(cause).toBeInstanceOf(Error);
        expect(cause).toMatchObject({ message, ...(code === undefined ? {} : { code }) });
      }),
      RUNS,
    );
    // The connection is still usable.
    expect(await conn.call('echo', 'after')).toBe('after');
  } finally {
    await conn.close();
  }
});

test('a constructor that throws: connect rejects with RemoteError(constructor), the thrown error as its cause', async () => {
  const err = await connect('direct', { command: THROWING }).then(
    async (conn) => (await conn.close(), undefined),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RemoteError);
  expect(err).toMatchObject({ method: 'constructor', remote: { name: 'Error', code: 'E_REFUSES', message: 'this command refuses to start' } });
  expect((err as RemoteError).cause).toBeInstanceOf(Error);
  expect((err as RemoteError).cause).toMatchObject({ code: 'E_REFUSES', message: 'this command refuses to start' });
});
