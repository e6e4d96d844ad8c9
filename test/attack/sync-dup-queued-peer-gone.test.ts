/**
 * dupFileDescriptorSync whose DUP waits in the send queue (the kernel's
 * buffer is full: the daemon reads nothing) when the daemon goes away: the
 * queued send meets EPIPE before the end of file is read. The call must
 * throw a PeerExitedError, as a send that fails at once makes it, and the
 * requests waiting behind the full buffer reject with it too; nothing is
 * left open here.
 *
 * The daemon is a fake (test/attack/fixtures/unread-daemon.py):
 * on one connection the test counts how many calls of the size the kernel
 * takes before one is queued (a send queue limit of 1 byte refuses the
 * request after a queued one); on a second it sends that many, so that the
 * synchronous DUP is the one queued, and the daemon exits once the test's
 * thread waits in poll(2).
 */
import { spawn } from 'node:child_process';

import fc from 'fast-check';

import { closeFd, connect, makeMemfd, openFdTable, PeerExitedError, QueueFullError, type Connection } from '../../src';
import { PYTHON } from '../util/linger-attacker';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { pollCallsArg, UNREAD_DAEMON, unreadDaemonUnavailable } from '../util/unread-daemon';
import { assertGuarded } from '../util/wait-for';

const UNAVAILABLE = unreadDaemonUnavailable();

/** Settles to the value or the rejection reason. */
function outcome(p: Promise<unknown>): Promise<{ ok: boolean; value: unknown }> {
  return p.then(
    (value) => ({ ok: true, value }),
    (value: unknown) => ({ ok: false, value }),
  );
}

/**
 * Calls of `bytes` each until one is refused with QueueFullError (with a
 * limit of 1 byte: the one before it was queued) or `max` were made; the
 * calls made, the refused one left out.
 */
async function fill(conn: Connection, bytes: number, max: number): Promise<Array<Promise<{ ok: boolean; value: unknown }>>> {
  const made: Array<Promise<{ ok: boolean; value: unknown }>> = [];
  for (let i = 0; i < max; i++) {
    const call = outcome(conn.call('log', 'x'.repeat(bytes)));
    // A refusal is a rejection at once: settled within these turns of the microtask queue.
    let settled: { ok: boolean; value: unknown } | undefined;
    void call.then((s) => (settled = s));
    for (let k = 0; k < 4; k++) await null;
    if (settled !== undefined && settled.value instanceof QueueFullError) return made;
    made.push(call);
  }
  return made;
}

(UNAVAILABLE === undefined ? test : test.skip)(`a synchronous DUP queued behind a full buffer whose daemon goes away throws PeerExitedError${UNAVAILABLE ? ` (skipped: ${UNAVAILABLE})` : ''}`, async () => {
  const source = makeMemfd('sync-dup-queued-peer-gone');
  try {
    await assertGuarded(
      fc.asyncProperty(fc.integer({ min: 200, max: 12_000 }), async (bytes) => {
        const before = openFdTable();
        const name = `fdbridge-unread-gone-${process.pid}-${bytes}`;
        const daemon = spawn(PYTHON, [UNREAD_DAEMON, name, String(process.pid), 'exit', pollCallsArg() as string], { stdio: ['ignore', 'pipe', 'inherit'] });
        const exited = new Promise((r) => daemon.once('exit', r));
        await new Promise((r) => daemon.stdout!.once('data', r));
        const options = { command: { name: 'log' }, socketPath: `@${name}`, sendQueueLimit: 1, timeoutMs: scaled(20_000) };
        const measure = await connect('helper', options);
        const conn = await connect('helper', options);
        try {
          // The kernel took all but the last of these; the last was queued.
          const taken = (await fill(measure, bytes, 100_000)).length - 1;
          const waiting = await fill(conn, bytes, taken);
          expect(waiting).toHaveLength(taken);
          let sync: { ok: boolean; value: unknown };
          try {
            sync = { ok: true, value: conn.dupFileDescriptorSync(source, { timeoutMs: scaled(20_000) }) };
          } catch (err) {
            sync = { ok: false, value: err };
          }
          expect(sync).toEqual({ ok: false, value: expect.any(PeerExitedError) });
          for (const w of await Promise.all(waiting)) expect(w).toEqual({ ok: false, value: expect.any(PeerExitedError) });
          expect(() => conn.dupFileDescriptorSync(source)).toThrow(PeerExitedError);
        } finally {
          await conn.close();
          await measure.close();
          daemon.kill();
          await exited;
        }
        expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
      }),
      { numRuns: 6, seed: 1203 },
    );
  } finally {
    closeFd(source);
  }
});
