/**
 * dupFileDescriptorSync against a broken or hostile helper daemon: a frame
 * that fails the connection (malformed, a reply to no request, a frame
 * only a client sends, a pending request answered with the wrong kind or
 * count, a second reply to a request answered earlier in the same wait, an
 * ERROR whose JSON does not parse, an unasked REFUSED naming a quota)
 * arrives while the call waits, followed by a well-formed DUP_OK to the
 * call, or by nothing. The connection has failed at that frame, as it fails
 * for the asynchronous requests: the call throws the connection's error
 * (ProtocolError, or QuotaExceededError for the REFUSED), never a number
 * read after it from a connection that is over. With nothing after the
 * frame the call ends before its timeout, except after an ERROR or RESULT
 * whose JSON does not decode (the wait does not read JSON: README). Requests
 * answered before the frame keep their answers; the others reject with the
 * same error.
 *
 * The daemon is a fake (test/attack/fixtures/failing-frame-daemon.js), a
 * process of its own, told each connection's plan through its HELLO.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import fc from 'fast-check';

import { closeFd, connect, makeMemfd, openFdTable, ProtocolError, QuotaExceededError } from '../../src';
import { FrameType } from '../../src/protocol';
import { DIST_SRC } from '../util/nobody';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';

const FIXTURE = join(__dirname, 'fixtures', 'failing-frame-daemon.js');

type Pending = { kind: 'call' } | { kind: 'dup'; count: number };
type Bad =
  | { kind: 'short' | 'no-request' | 'refused'; target: number }
  | { kind: 'client-type'; type: number; target: number }
  | { kind: 'wrong-reply' | 'repeat' | 'bad-json-error'; target: number };

let daemon: ChildProcess;
const socketPath = `@fdbridge-failing-frame-${process.pid}`;

beforeAll(async () => {
  daemon = spawn(process.execPath, [FIXTURE, socketPath.slice(1), DIST_SRC], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    daemon.once('error', reject);
    daemon.stdout!.once('data', () => resolve());
  });
});

afterAll(async () => {
  const exited = new Promise((r) => daemon.once('exit', r));
  daemon.stdin!.end();
  await exited;
});

/** The plan as the fake daemon reads it from the command's name (a name: [A-Za-z0-9._-], at most 64). */
function planName(pending: number, answered: number[], bad: Bad, alone: boolean): string {
  return `p${pending}.a${answered.join('_')}.k${bad.kind}.t${'type' in bad ? bad.type : 0}.g${bad.target}.z${alone ? 1 : 0}`;
}

/** Settles to the value or the rejection reason. */
function outcome(p: Promise<unknown>): Promise<{ ok: boolean; value: unknown }> {
  return p.then(
    (value) => ({ ok: true, value }),
    (value: unknown) => ({ ok: false, value }),
  );
}

test('a frame that fails the connection during dupFileDescriptorSync fails the call, whatever follows it', async () => {
  const source = makeMemfd('sync-dup-failing-frame');
  try {
    await assertGuarded(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constant<Pending>({ kind: 'call' }), fc.record({ kind: fc.constant('dup' as const), count: fc.integer({ min: 1, max: 253 }) })), {
          maxLength: 4,
        }),
        fc.array(fc.nat(3), { maxLength: 4 }),
        fc.oneof(
          fc.record({ kind: fc.constantFrom('short' as const, 'no-request' as const, 'refused' as const), target: fc.nat(7) }),
          fc.record({
            kind: fc.constant('client-type' as const),
            type: fc.constantFrom(FrameType.HELLO, FrameType.READY, FrameType.CALL, FrameType.CLOSE, FrameType.CLOSED),
            target: fc.nat(7),
          }),
          fc.record({ kind: fc.constant('wrong-reply' as const), target: fc.nat(7) }),
          fc.record({ kind: fc.constant('repeat' as const), target: fc.nat(7) }),
          fc.record({ kind: fc.constant('bad-json-error' as const), target: fc.nat(7) }),
        ),
        fc.boolean(),
        async (pending: Pending[], answeredAt: number[], bad: Bad, aloneAsked: boolean) => {
          // A pending request the bad frame answers may have been answered well first.
          const answered = [...new Set(answeredAt)].filter((i) => i < pending.length);
          // An ERROR with bad JSON to a request not answered yet ends the
          // wait only with the call's reply or its timeout: not sent alone.
          const unread = bad.kind === 'bad-json-error' && pending.length > 0 && !answered.includes(bad.target % pending.length);
          const alone = aloneAsked && !unread;
          const before = openFdTable();
          const name = planName(pending.length, answered, bad, alone);
          const conn = await connect('helper', { command: { name }, socketPath, timeoutMs: scaled(20_000) });
          try {
            const requests = pending.map((p) =>
              outcome(p.kind === 'call' ? conn.call('echo', 1) : conn.dupFileDescriptors(new Array<number>(p.count).fill(source))),
            );
            // Each pending request goes out in its own frame before the synchronous DUP.
            await new Promise((r) => setImmediate(r));
            // Alone, nothing but the frame can end the wait before its deadline.
            const timeoutMs = scaled(alone ? 5_000 : 20_000);
            const start = performance.now();
            let sync: { ok: boolean; value: unknown };
            try {
              sync = { ok: true, value: conn.dupFileDescriptorSync(source, { timeoutMs }) };
            } catch (err) {
              sync = { ok: false, value: err };
            }
            const waited = performance.now() - start;
            const failure = bad.kind === 'refused' ? QuotaExceededError : ProtocolError;
            expect(sync).toEqual({ ok: false, value: expect.any(failure) });
            // Alone, the frame ended the wait: the call did not wait out its timeout.
            if (alone) expect(waited).toBeLessThan(timeoutMs);
            const settled = await Promise.all(requests);
            settled.forEach((s, i) => {
              if (answered.includes(i)) expect(s.ok).toBe(true);
              else expect(s).toEqual({ ok: false, value: expect.any(failure) });
            });
            // The connection is over: later requests fail with the same error.
            expect(() => conn.dupFileDescriptorSync(source)).toThrow(failure);
            await expect(conn.dupFileDescriptor(source)).rejects.toBeInstanceOf(failure);
          } finally {
            await conn.close();
          }
          expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
        },
      ),
      { numRuns: 60, seed: 1203 },
    );
  } finally {
    closeFd(source);
  }
});
