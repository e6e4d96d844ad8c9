/**
 * Where a helper daemon's hold on a uid begins and ends. A uid whose fds
 * held and waiting to be closed are exactly at its maxFdsPerUid (or the
 * daemon's at maxFdsTotal) is still served; a DUP that would take it past
 * the limit is refused, and its fds, waiting behind the uid's blocked
 * closes, put the uid past it: its connections are not read (a call sent
 * then waits in the kernel) until those closes end, and the hold ends by
 * itself then, with no other connection made to the daemon in between.
 * Meanwhile the fds by which the uid is past its own limit count against
 * it alone: another user may still fill the daemon's total up to the
 * limit, not one fd more. nobody blocks the daemon's 8 closer threads of
 * its uid (lingering TCP sockets given in a DUP and left); the limit,
 * which of the two is tight, the fds nobody's command keeps and the size of
 * the DUP after them are generated. A daemon holding a uid back still exits
 * at once on SIGTERM. Run as root, the client as nobody.
 */
import fc from 'fast-check';

import { closeFd, connect, LOG_COMMAND, makeMemfd, openFdTable } from '../../src';
import { QuotaExceededError } from '../../src/errors';
import { statusOf, statusWhen } from '../util/helper-status';
import { hasPython, holdBackClient, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

const describeRoot = isRoot ? describe : describe.skip;

/** The closer threads one uid's closes may take (closerThreads().perOwner): nobody blocks them all, so its refused fds wait. */
const BLOCKED = 8;
/** The limit that is not under test: far above everything here. */
const LOOSE = 1000;
/** How far above the tight limit the daemon's total is, in the per-uid case: what root may still add. */
const ROOM = 3;
/** How long one step is waited for before it is taken for a hang: a hang guard (each takes well under a second), not a time the test checks. */
const STEP_GUARD_MS = scaled(10_000);

/** The lines the daemon logged (--verbose) about holding `uid` back and letting it go. */
function holdLines(stderr: string, uid: number): { held: string[]; released: string[] } {
  const lines = stderr.split('\n');
  return {
    held: lines.filter((l) => l.includes(`uid ${uid}: `) && l.includes('its connections are not read until they are closed')),
    released: lines.filter((l) => l.includes(`uid ${uid}: back within its fd limits, its connections are read again`)),
  };
}

describeRoot("a uid's hold: at its fd limit it is served, one refused DUP past it holds it, the closes' end lets it go; its excess is its own (client: nobody)", () => {
  (hasPython() ? test : test.skip)('generated: the limit (per uid or total), fds kept, a DUP past the limit or within it; the fd tables return', async () => {
    const before = openFdTable();
    const memfd = makeMemfd('hold-back-limits');
    try {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('uidFds' as const, 'totalFds' as const), fc.integer({ min: BLOCKED, max: BLOCKED + 3 }), fc.integer({ min: 0, max: 2 }), fc.integer({ min: 1, max: 4 }), async (tight, limit, keep, k) => {
          const perUid = tight === 'uidFds' ? limit : LOOSE;
          const total = tight === 'uidFds' ? limit + ROOM : limit;
          const args = ['--allow-uid', String(NOBODY), '--max-fds-per-uid', String(perUid), '--max-fds-total', String(total), '--verbose'];
          await withAttackedDaemon('hold-back-limits', args, {}, async (d) => {
            const { daemon, name, socketPath, baseline } = d;
            const lingering = await d.blockClosers(BLOCKED);
            const client = d.runAsNobody(holdBackClient(name));
            try {
              expect(await client.line('connected', STEP_GUARD_MS)).toEqual({ connected: true });
              // Its closes waiting put nobody at the limit at most: it is read.
              client.child.stdin?.write('call\n');
              expect(await client.line('answered1', STEP_GUARD_MS)).toEqual({ answered1: 'helper' });
              // Given and kept by its command: held for nobody, within the limit.
              const kept = Math.min(keep, limit - BLOCKED);
              client.child.stdin?.write(`dup ${kept}\n`);
              expect(await client.line('dup1', STEP_GUARD_MS)).toEqual({ dup1: kept });
              client.child.stdin?.write(`dup ${k}\n`);
              const past = BLOCKED + kept + k > limit;
              // A refused DUP is answered once its fds are closed, which wait behind the blocked closes.
              if (!past) expect(await client.line('dup2', STEP_GUARD_MS)).toEqual({ dup2: k });
              const s = await statusWhen(socketPath, (st) => st.fdsClosing === BLOCKED + (past ? k : 0) && st.stats.quotaHits[tight] === (past ? 1 : 0), STEP_GUARD_MS);
              expect({ readingHeld: s.stats.readingHeld, quotaHits: s.stats.quotaHits[tight] }).toEqual({ readingHeld: past ? 1 : 0, quotaHits: past ? 1 : 0 });
              // The refusal is logged per client (`fdbridge helper --verbose`), as its hold is.
              expect(daemon.stderr().includes(`pid ${client.pid}: quota ${tight} reached`)).toBe(past);
              if (past) {
                expect(holdLines(daemon.stderr(), NOBODY).held).toEqual([
                  expect.stringContaining(
                    `uid ${NOBODY}: ${kept} fd(s) held and ${BLOCKED + k} waiting to be closed (at most ${perUid}; the daemon's ` +
                      `${tight === 'uidFds' ? limit : BLOCKED + kept + k} of ${total}): its connections are not read until they are closed`,
                  ),
                ]);
                if (tight === 'uidFds') {
                  // nobody's fds past its own limit count against it alone: root may take the daemon to its total, not past it.
                  const root = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
                  try {
                    expect(await root.dupFileDescriptors(new Array<number>(ROOM).fill(memfd))).toHaveLength(ROOM);
                    const refused = await root.dupFileDescriptor(memfd).then(
                      () => undefined,
                      (e: unknown) => e,
                    );
                    expect(refused).toBeInstanceOf(QuotaExceededError);
                    expect((refused as QuotaExceededError).quota).toBe('totalFds');
                  } finally {
                    await root.close();
                  }
                }
                // A call now waits in the kernel; once the closes end the hold ends by itself (no status asked meanwhile).
                client.child.stdin?.write('call\n');
                await d.release(lingering);
                expect(await client.line('dup2', STEP_GUARD_MS)).toEqual({ dup2: tight });
                expect(await client.line('answered2', STEP_GUARD_MS)).toEqual({ answered2: 'helper' });
                const lines = holdLines(daemon.stderr(), NOBODY);
                expect({ held: lines.held.length, released: lines.released.length }).toEqual({ held: 1, released: 1 });
              } else {
                await d.release(lingering);
                expect(holdLines(daemon.stderr(), NOBODY)).toEqual({ held: [], released: [] });
              }
            } finally {
              client.child.stdin?.end('done\n');
              await client.exited();
            }
            await statusWhen(socketPath, (st) => st.fdsClosing === 0 && st.socketsClosing === 0 && !st.uids.some((u) => u.uid === NOBODY), STEP_GUARD_MS);
            expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
          });
        }),
        {
          numRuns: 10,
          endOnFailure: true,
          examples: [
            ['uidFds', BLOCKED, 0, 1],
            ['totalFds', BLOCKED, 0, 1],
            ['uidFds', BLOCKED + 1, 0, 1],
            ['uidFds', BLOCKED + 2, 1, 2],
          ],
        },
      );
    } finally {
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(300_000));

  (hasPython() ? test : test.skip)('generated: a daemon holding a uid back looks at its holds a few times per event, not at every turn of its loop; the fd tables return', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 2 }), async (asked, calls) => {
        const args = ['--allow-uid', String(NOBODY), '--max-fds-per-uid', String(BLOCKED), '--verbose'];
        await withAttackedDaemon('hold-back-looks', args, {}, async (d) => {
          const lingering = await d.blockClosers(BLOCKED);
          const client = d.runAsNobody(holdBackClient(d.name));
          try {
            expect(await client.line('connected', STEP_GUARD_MS)).toEqual({ connected: true });
            client.child.stdin?.write('dup 1\n');
            const held = await statusWhen(d.socketPath, (s) => s.stats.quotaHits.uidFds === 1 && s.stats.readingHeld === 1 && s.fdsClosing === BLOCKED + 1, STEP_GUARD_MS);
            // Calls sent while held wait in the kernel: nothing of them reaches the daemon.
            for (let i = 0; i < calls; i++) client.child.stdin?.write('call\n');
            // Each status is a connection of root's (not held): one look as it is served, one more at most as its socket's close ends.
            let last = held;
            for (let i = 0; i < asked; i++) {
              await new Promise((r) => setTimeout(r, 50));
              last = await statusOf(d.socketPath);
            }
            expect({ readingHeld: last.stats.readingHeld, fdsClosing: last.fdsClosing }).toEqual({ readingHeld: 1, fdsClosing: BLOCKED + 1 });
            const looks = last.stats.holdLooks - held.stats.holdLooks;
            expect(looks).toBeGreaterThanOrEqual(asked);
            expect(looks).toBeLessThanOrEqual(2 * asked);
            // The hold still ends as its closes end, and nobody's calls are answered then.
            await d.release(lingering);
            expect(await client.line('dup1', STEP_GUARD_MS)).toEqual({ dup1: 'uidFds' });
            for (let i = 1; i <= calls; i++) expect(await client.line(`answered${i}`, STEP_GUARD_MS)).toEqual({ [`answered${i}`]: 'helper' });
          } finally {
            client.child.stdin?.end('done\n');
            await client.exited();
          }
          await statusWhen(d.socketPath, (st) => st.fdsClosing === 0 && st.socketsClosing === 0 && !st.uids.some((u) => u.uid === NOBODY), STEP_GUARD_MS);
          expect(await fdTableSettles(d.daemon.pid, d.baseline, 10000)).toBe('');
        });
      }),
      { numRuns: 3, endOnFailure: true, examples: [[1, 0]] },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(240_000));

  (hasPython() ? test : test.skip)('a daemon holding a uid back, its refused fds waiting behind blocked closes, exits 0 on SIGTERM at once; the fd table returns', async () => {
    const before = openFdTable();
    const args = ['--allow-uid', String(NOBODY), '--max-fds-per-uid', String(BLOCKED), '--verbose'];
    await withAttackedDaemon('hold-back-sigterm', args, {}, async (d) => {
      await d.blockClosers(BLOCKED);
      const client = d.runAsNobody(holdBackClient(d.name));
      try {
        expect(await client.line('connected', STEP_GUARD_MS)).toEqual({ connected: true });
        client.child.stdin?.write('dup 1\n');
        await statusWhen(d.socketPath, (s) => s.stats.quotaHits.uidFds === 1 && s.stats.readingHeld === 1 && s.fdsClosing === BLOCKED + 1, STEP_GUARD_MS);
        // Neither the watches on the closes that hold nobody nor the wait for its refused fds keep the daemon's loop alive.
        expect(await within(d.daemon.stop('SIGTERM'), STEP_GUARD_MS, 'the daemon exiting after SIGTERM')).toEqual({ code: 0, signal: null });
      } finally {
        client.child.stdin?.end('done\n');
        await client.exited();
      }
    });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(120_000));
});
