/**
 * dupFileDescriptorSync whose DUP waits in the send queue (the kernel's
 * buffer is full: the daemon reads nothing) and whose send, retried once
 * there is room, fails with an error that is not the peer's end
 * (ETOOMANYREFS: too many fds in flight for the user). That request alone
 * fails, with a SystemError, as when the send fails at once and as the
 * asynchronous dupFileDescriptor does: the daemon is alive and the
 * connection goes on answering.
 *
 * Everything runs as another user with at most 200 fds open (root is not
 * held to the limit on fds in flight, which is RLIMIT_NOFILE), a uid of this
 * test's own (ownUid: the kernel counts fds in flight per user, so another
 * test's sends as nobody, or this test run at once on another Node, would
 * refuse the daemon's 250 before the client's DUP): the client below,
 * and the fake daemon it starts (test/attack/fixtures/unread-daemon.py),
 * which measures on one connection how many calls of the size the kernel
 * takes before one is queued, lets the client fill the second with that
 * many, and once the client waits in poll(2) for room for its synchronous
 * DUP, puts 250 fds in flight and reads everything, answering each call.
 */

import fc from 'fast-check';

import { openFdTable } from '../../src';
import { PYTHON } from '../util/linger-attacker';
import { DIST_SRC, isRoot, ownUid, spawnAsUid } from '../util/nobody';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { pollCallsArg, UNREAD_DAEMON, unreadDaemonUnavailable } from '../util/unread-daemon';
import { assertGuarded } from '../util/wait-for';

const UNAVAILABLE = isRoot ? unreadDaemonUnavailable() : 'needs root to run the client as another user';

/** The client, run as ownUid(0): what the synchronous DUP threw and what the connection did after it. */
function client(bytes: number, name: string): string {
  return `
    const { spawn } = require('node:child_process');
    const { closeFd, connect, makeMemfd, openFdTable, QueueFullError, SystemError, warmRuntimeFds } = require(${JSON.stringify(DIST_SRC)});
    const outcome = (p) => p.then(() => 'ok', (e) => e.code ?? e.name);
    /** Calls of \`bytes\` each until one is refused (limit 1 byte: the one before it was queued) or \`max\` were made; the refused one left out. */
    const fill = async (conn, max) => {
      const made = [];
      for (let i = 0; i < max; i++) {
        let refused = false;
        const call = conn.call('log', 'x'.repeat(${bytes})).then(() => 'ok', (e) => { if (e instanceof QueueFullError) refused = true; return e.code ?? e.name; });
        for (let k = 0; k < 4; k++) await null;
        if (refused) return made;
        made.push(call);
      }
      return made;
    };
    const table = () => JSON.stringify([...openFdTable()]);
    (async () => {
      warmRuntimeFds(); // the loop's lazy fds (the EMFILE reserve) are not this test's
      const before = table();
      const source = makeMemfd('sync-dup-queued-send-fails');
      const daemon = spawn(${JSON.stringify(PYTHON)}, [${JSON.stringify(UNREAD_DAEMON)}, ${JSON.stringify(name)}, String(process.pid), 'read', ${JSON.stringify(pollCallsArg())}], { stdio: ['inherit', 'pipe', 'inherit'] });
      const exited = new Promise((r) => daemon.once('exit', r));
      let said = '';
      const heard = (what) => new Promise((r) => { const check = () => (said.includes(what) ? r() : daemon.stdout.once('data', check)); check(); });
      daemon.stdout.on('data', (d) => (said += d));
      await heard('listening');
      const options = { command: { name: 'log' }, socketPath: '@${name}', sendQueueLimit: 1, timeoutMs: ${scaled(20_000)} };
      const measure = await connect('helper', options);
      const conn = await connect('helper', options);
      const r = {};
      try {
        const taken = (await fill(measure, 100000)).length - 1;
        const waiting = await fill(conn, taken);
        r.filled = waiting.length === taken;
        try {
          r.sync = { returned: conn.dupFileDescriptorSync(source, { timeoutMs: ${scaled(20_000)} }) };
        } catch (e) {
          r.sync = { name: e.constructor.name, code: e.code, systemError: e instanceof SystemError, message: e.message };
        }
        await heard('in flight');
        r.waiting = [...new Set(await Promise.all(waiting))];
        r.after = await outcome(conn.call('log', 'after'));
      } finally {
        await conn.close();
        await measure.close();
        daemon.kill();
        await exited;
        closeFd(source);
      }
      for (let i = 0; i < 100 && table() !== before; i++) await new Promise((res) => setTimeout(res, 20));
      r.fdsBack = table() === before || { before, after: table() };
      return r;
    })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: String(e && e.stack) } })));`;
}

(UNAVAILABLE === undefined ? test : test.skip)(`a synchronous DUP queued behind a full buffer whose send then fails (ETOOMANYREFS) throws that SystemError; the connection goes on${UNAVAILABLE ? ` (skipped: ${UNAVAILABLE})` : ''}`, async () => {
  await assertGuarded(
    fc.asyncProperty(fc.integer({ min: 200, max: 12_000 }), async (bytes) => {
      const before = openFdTable();
      const name = `fdbridge-unread-read-${process.pid}-${bytes}`;
      const p = spawnAsUid(ownUid(0), '/bin/sh', ['-c', 'ulimit -n 200 && exec "$0" -e "$1"', process.execPath, client(bytes, name)]);
      try {
        const { result } = await p.line<{ result: Record<string, unknown> }>('result');
        expect(result).toEqual({
          filled: true,
          sync: expect.objectContaining({ name: 'SystemError', code: 'ETOOMANYREFS', systemError: true }),
          waiting: ['ok'],
          after: 'ok',
          fdsBack: true,
        });
        expect((await p.exited()).code).toBe(0);
      } finally {
        p.kill();
      }
      expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
    }),
    { numRuns: 4, seed: 1203 },
  );
}, scaled(120_000));
