/**
 * How often a helper daemon holding a uid back looks at its holds again: as
 * the closes that hold it end, once a turn of its event loop however many
 * end together, never once a close. nobody blocks the daemon's 8 closer
 * threads of its uid (lingering TCP sockets given in DUPs by attackers that
 * hang up, each a batch of closes, the connections of those that hung up
 * once every thread was blocked one more each) and
 * is held by one refused DUP; root's probe client then keeps the daemon's
 * event loop in a read of an empty pipe while the closes are let go, so
 * that every one of them ends before the loop turns again. How many
 * attackers share the 8 sockets and how many copies of /dev/null the
 * refused DUP carries are generated. Run as root, the client as nobody.
 */
import { readdirSync, readFileSync, writeSync } from 'node:fs';

import fc from 'fast-check';

import { closeFd, connect, makePipe, openFdTable, PROBE_COMMAND, type ProbeCommand } from '../../src';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, holdBackClient, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

const describeRoot = isRoot ? describe : describe.skip;

/** The closer threads one uid's closes may take (closerThreads().perOwner): nobody blocks them all. */
const BLOCKED = 8;
/** How long one step is waited for before it is taken for a hang: a hang guard, not a time the test checks. */
const STEP_GUARD_MS = scaled(10_000);

/** What each thread of `pid` but its main one is doing: its syscall number, or `running`. */
function otherThreads(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`)
    .filter((tid) => tid !== String(pid))
    .map((tid) => {
      try {
        return readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').split(' ')[0] ?? '';
      } catch {
        return 'exited';
      }
    });
}

const devNulls = (table: ReadonlyMap<number, string>): number => [...table.values()].filter((target) => target === '/dev/null').length;

/** Resolves once `pid`'s fd table names /dev/null no more often than `baseline` did and none of its other threads is in a close or running, twice in a row. */
async function closesEnded(pid: number, baseline: ReadonlyMap<number, string>): Promise<void> {
  let quiet = 0;
  while (quiet < 2) {
    await new Promise((r) => setTimeout(r, 20));
    const table = openFdTable(pid);
    const busy = otherThreads(pid).filter((s) => s === '3' || s === '436' || s === 'running');
    quiet = devNulls(table) > devNulls(baseline) || busy.length > 0 ? 0 : quiet + 1;
  }
}

/** Resolves once `pid`'s main thread is in read(2) of `fd`. */
async function mainThreadReads(pid: number, fd: number): Promise<void> {
  for (;;) {
    const [nr, arg] = readFileSync(`/proc/${pid}/task/${pid}/syscall`, 'utf8').split(' ');
    if (nr === '0' && Number(arg) === fd) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describeRoot('a uid held back: the closes that hold it, ending together, cost the daemon one look at its holds (client: nobody)', () => {
  (hasPython() ? test : test.skip)('generated: the refused DUP\'s size; the closes end while the event loop is kept in a read, then one look ends the hold; the fd tables return', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(2, 4, 8), fc.integer({ min: 1, max: 3 }), async (attackers, k) => {
        const args = ['--allow-uid', String(NOBODY), '--max-fds-per-uid', String(BLOCKED), '--diagnostics', '--verbose'];
        await withAttackedDaemon('hold-back-looks', args, {}, async (d) => {
          const pid = d.daemon.pid;
          const lingering = Array.from({ length: attackers }, () => d.attack('dup', BLOCKED / attackers));
          // READY, DUP_OK
          for (const a of lingering) expect(await a.line('ready', STEP_GUARD_MS)).toEqual({ ready: 2, dupOk: 5 });
          await statusWhen(d.socketPath, (s) => s.fdsClosing === BLOCKED && s.socketsClosing >= 1 && !s.uids.some((u) => u.uid === NOBODY), STEP_GUARD_MS);
          const client = d.runAsNobody(holdBackClient(d.name));
          const [r, w] = makePipe();
          const probe = await connect('helper', { command: PROBE_COMMAND, socketPath: d.socketPath, timeoutMs: 20000 });
          try {
            expect(await client.line('connected', STEP_GUARD_MS)).toEqual({ connected: true });
            client.child.stdin?.write(`dup ${k}\n`);
            const [there] = await probe.dupFileDescriptors([r]);
            const held = await statusWhen(d.socketPath, (s) => s.stats.quotaHits.uidFds === 1 && s.stats.readingHeld === 1 && s.fdsClosing === BLOCKED + k, STEP_GUARD_MS);
            // The open closes: nobody's 8 lingering sockets, its refused copies of /dev/null, and the connections of the attackers that hung up once every thread was blocked.
            expect({ fdsClosing: held.fdsClosing, socketsClosing: held.socketsClosing >= 1 }).toEqual({ fdsClosing: BLOCKED + k, socketsClosing: true });
            const read = probe.proxy<ProbeCommand>().read(there as number, 1);
            await within(mainThreadReads(pid, there as number), STEP_GUARD_MS, "the daemon's event loop in the probe's read");
            for (const a of lingering) await d.release(a);
            await within(closesEnded(pid, d.baseline), STEP_GUARD_MS, "the daemon's closes, its event loop kept in a read");
            writeSync(w, 'x');
            expect(await within(read, STEP_GUARD_MS, "the probe's read")).toBe('x');
            expect(await client.line('dup1', STEP_GUARD_MS)).toEqual({ dup1: 'uidFds' });
            const after = await statusOf(d.socketPath);
            // The refused batch's end looks once; every other close that ended in that turn once together; the status asked now once (its connection) and,
            // at most, the status before it once more (its close, had it been open at a look): 3 or 4, where one look a close would be 4 + attackers and more.
            const looks = after.stats.holdLooks - held.stats.holdLooks;
            expect({ fdsClosing: after.fdsClosing, socketsClosing: after.socketsClosing }).toEqual({ fdsClosing: 0, socketsClosing: 0 });
            expect(looks).toBeGreaterThanOrEqual(3);
            expect(looks).toBeLessThanOrEqual(4);
            expect(d.daemon.stderr()).toContain(`uid ${NOBODY}: back within its fd limits, its connections are read again`);
          } finally {
            await probe.close();
            closeFd(r);
            closeFd(w);
            client.child.stdin?.end('done\n');
            await client.exited();
          }
          await statusWhen(d.socketPath, (st) => st.fdsClosing === 0 && st.socketsClosing === 0 && !st.uids.some((u) => u.uid === NOBODY), STEP_GUARD_MS);
          expect(await fdTableSettles(d.daemon.pid, d.baseline, 10000)).toBe('');
        });
      }),
      { numRuns: 3, endOnFailure: true, examples: [[8, 1]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(240_000));
});
