/**
 * Every reply a remote connection's far side sends must be of its request's
 * type, or an ERROR: READY to the HELLO, RESULT to a CALL (and a RELEASE),
 * OPENED to an OPEN, CLOSED to the CLOSE. Any other type is a ProtocolError
 * naming both, which fails the request (and the connection, as the other
 * violations do), never a value handed to the caller: a CALL answered with
 * an OPENED used to resolve with the OPENED's payload, a HELLO answered
 * with a RESULT to connect, a CLOSE answered with a RESULT to a command
 * taken as closed. An ERROR is the request's own failure: a RemoteError
 * naming what failed (the command's constructor, for the HELLO). The far
 * side here is a via that answers the frames itself
 * (fixtures/far-side-replies.py 'answer').
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, makePipe, ProtocolError, RemoteError, type Connection } from '../../src';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { closeFd, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

const FAR_SIDE = join(__dirname, 'fixtures', 'far-side-replies.py');

const REPLY = { HELLO: 'READY', CALL: 'RESULT', OPEN: 'OPENED', CLOSE: 'CLOSED' } as const;
type Request = keyof typeof REPLY;
const TYPES = ['READY', 'RESULT', 'OPENED', 'CLOSED'] as const;

/** Payloads each wrong reply may hold: ones its own consumer would take (an fd, a pid), and others. */
const payloads = fc.constantFrom<unknown>({ pid: 1, threadId: 0, fd: 100 }, { fd: 100 }, null, 7, 'x', []);

function farSide(request: Request, type: string, payload: unknown, onCommandClosed?: () => void): Promise<Connection> {
  return connect('remote', {
    via: ['/usr/bin/python3', FAR_SIDE, 'answer', JSON.stringify({ request, type, payload })],
    command: PROBE_COMMAND,
    timeoutMs: 20_000,
    ...(onCommandClosed ? { onCommandClosed } : {}),
  });
}

async function outcome(p: Promise<unknown>): Promise<{ value: unknown } | { err: unknown }> {
  return p.then(
    (value) => ({ value }),
    (err: unknown) => ({ err }),
  );
}

function expectViolation(got: { value: unknown } | { err: unknown }, says: string): void {
  const err = (got as { err?: unknown }).err;
  expect({ isProtocolError: err instanceof ProtocolError, says: err instanceof Error && err.message.includes(says) }).toEqual({ isProtocolError: true, says: true });
}

test('generated: a reply of another request\'s type is a ProtocolError naming it, for the HELLO, a CALL, an OPEN and the CLOSE', async () => {
  const before = openFdTable();
  const cases = fc
    .tuple(fc.constantFrom(...(Object.keys(REPLY) as Request[])), fc.constantFrom(...TYPES), payloads)
    .filter(([request, type]) => REPLY[request] !== type);
  await fc.assert(
    fc.asyncProperty(cases, async ([request, type, payload]) => {
      const says = `${/^[AEIOU]/.test(type) ? 'an' : 'a'} ${type} frame answers its ${request}`;
      if (request === 'HELLO') {
        const got = await outcome(farSide(request, type, payload));
        // A connection made all the same is closed before the check fails.
        if ('value' in got) await (got.value as Connection).close();
        expectViolation(got, `connect: ${says}`);
        return;
      }
      let closedHook = 0;
      const conn = await farSide(request, type, payload, () => void closedHook++);
      const [r, w] = makePipe();
      try {
        if (request === 'CALL') expectViolation(await outcome(conn.call('anything')), `anything(): ${says}`);
        if (request === 'OPEN') expectViolation(await outcome(conn.dupFileDescriptor(w)), `dupFileDescriptor(${w}): ${says}`);
        if (request === 'CLOSE') {
          // The command is not taken as closed: the hook that follows a close the far side confirmed does not run.
          await conn.close();
          expect(closedHook).toBe(0);
        }
      } finally {
        await conn.close();
        closeFd(r);
        closeFd(w);
      }
    }),
    { numRuns: 24 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);

test('the right replies are taken: a CALL answered RESULT, an OPEN answered OPENED, the CLOSE answered CLOSED, its hook run', async () => {
  const before = openFdTable();
  let closedHook = 0;
  // A request this far side never makes (HELLO answered READY as it should be).
  const conn = await farSide('HELLO', 'READY', { pid: 1, threadId: 0 }, () => void closedHook++);
  const [r, w] = makePipe();
  try {
    expect(await conn.call('anything')).toBeNull();
    expect(await conn.dupFileDescriptor(w)).toBe(100);
  } finally {
    await conn.close();
    closeFd(r);
    closeFd(w);
  }
  expect(closedHook).toBe(1);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120_000);

test('generated: a READY to the HELLO whose payload is no JSON object (null, a number, a string, a boolean, a list) is a ProtocolError', async () => {
  const before = openFdTable();
  const notObject = fc.jsonValue({ maxDepth: 1 }).filter((v) => typeof v !== 'object' || v === null || Array.isArray(v));
  await fc.assert(
    fc.asyncProperty(notObject, async (payload) => {
      const got = await outcome(farSide('HELLO', 'READY', payload));
      if ('value' in got) await (got.value as Connection).close();
      expectViolation(got, 'malformed READY frame: its payload is not a JSON object');
    }),
    { numRuns: 12 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);

test("generated: an ERROR answering the HELLO or a CALL is that request's RemoteError, naming the constructor or the method, with what the far side said", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<Request>('HELLO', 'CALL'), fc.string({ maxLength: 40 }), fc.stringMatching(/^E_[A-Z]{1,8}$/), async (request, message, code) => {
      const said = { name: 'Error', message, code };
      if (request === 'HELLO') {
        const got = await outcome(farSide('HELLO', 'ERROR', said));
        if ('value' in got) await (got.value as Connection).close();
        expect((got as { err?: unknown }).err).toBeInstanceOf(RemoteError);
        expect((got as { err: RemoteError }).err).toMatchObject({ method: 'constructor', remote: said });
        return;
      }
      const conn = await farSide('CALL', 'ERROR', said);
      try {
        const got = await outcome(conn.call('anything'));
        expect((got as { err?: unknown }).err).toBeInstanceOf(RemoteError);
        expect((got as { err: RemoteError }).err).toMatchObject({ method: 'anything', remote: said });
      } finally {
        await conn.close();
      }
    }),
    { numRuns: 12 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);
