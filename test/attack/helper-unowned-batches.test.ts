/**
 * The fds of a uid's refused DUPs that wait to be closed count against
 * that uid alone past its maxFdsPerUid, for as long as any of them waits:
 * two refused batches of one uid whose closes end one after the other.
 * nobody's first DUP (a lingering TCP sockets, refused by its client limit
 * of 1 fd) waits on the closer, within its uid limit; its second (b
 * sockets, on another connection) takes it past that limit. Once the
 * first batch's closes end, the second still waits, and its fds past
 * nobody's limit are still nobody's alone: root's clients may take the daemon to
 * its total, as if they were not there (were they counted against the
 * total, root's last DUP would be refused with totalFds). Run as root, the attackers as
 * nobody.
 */
import fc from 'fast-check';

import { closeFd, connect, LOG_COMMAND, makeMemfd, openFdTable } from '../../src';
import { whileLoopHeld } from '../util/dup-flood';
import { statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { isRoot, NOBODY, type NobodyProcess } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/** How long one step is waited for before it is taken for a hang: a hang guard, not a time the test checks. */
const STEP_GUARD_MS = scaled(10_000);
/** The closer threads one uid's closes may take (closerThreads().perOwner). */
const CLOSER_THREADS = 8;

describeRoot("a uid's refused batches past its own limit count against it alone until the last of them is closed (attackers: nobody)", () => {
  (hasPython() ? test : test.skip)('generated: two refused batches of one uid, the first closed while the second waits: root still fills the total exactly; the fd tables return', async () => {
    const before = openFdTable();
    const memfd = makeMemfd('unowned-batches');
    try {
      await fc.assert(
        // a: the first batch (within nobody's limit, a <= perUid); b: the second, alone past it (b > perUid);
        // each close blocks one of nobody's closer threads (CLOSER_THREADS), one kept free for its ended connections' sockets.
        fc.asyncProperty(
          fc
            .integer({ min: 2, max: 3 })
            .chain((a) =>
              fc.integer({ min: a, max: Math.max(a, 5 - a) }).chain((perUid) => fc.tuple(fc.constant(a), fc.constant(perUid), fc.integer({ min: 1, max: CLOSER_THREADS - 1 - a - perUid }))),
            ),
          async ([a, perUid, past]) => {
            const b = perUid + past;
            // nobody's fds past its limit left out, the daemon's count is perUid (nobody's) until root's DUP of perUid fills it.
            const total = 2 * perUid;
            const args = ['--allow-uid', String(NOBODY), '--max-fds', '1', '--max-fds-per-uid', String(perUid), '--max-fds-total', String(total), '--verbose'];
            await withAttackedDaemon('unowned-batches', args, {}, async (d) => {
              const { daemon, socketPath, baseline } = d;
              const send = async (attacker: NobodyProcess): Promise<void> => {
                expect(await attacker.line('ready', STEP_GUARD_MS)).toEqual({ ready: 2 }); // READY
                // The daemon reads the DUP only after the attacker has closed its own copies of the sockets (its loop held: a stop would end the closes that block).
                await whileLoopHeld(socketPath, async () => {
                  attacker.child.stdin?.write('stopped\n');
                  expect(await attacker.line('sent', STEP_GUARD_MS)).toEqual({ sent: true });
                });
              };
              const first = d.attack('overquota', a);
              await send(first);
              // Refused by the client limit, its closes blocked: within nobody's limit, so nobody is still read.
              await statusWhen(socketPath, (s) => s.fdsClosing === a && s.stats.quotaHits.fds === 1, STEP_GUARD_MS);
              const second = d.attack('overquota', b);
              await send(second);
              const held = await statusWhen(socketPath, (s) => s.fdsClosing === a + b && s.stats.quotaHits.fds === 2, STEP_GUARD_MS);
              expect(held.stats.readingHeld).toBe(1);
              // The first batch's closes end (its peers reset): it is answered, the second still waits.
              first.child.stdin?.write('go\n');
              expect(await first.line('answer', STEP_GUARD_MS)).toEqual({ answer: 8, afterReset: true }); // ERROR
              const after = await statusWhen(socketPath, (s) => s.fdsClosing === b, STEP_GUARD_MS);
              expect({ totalFds: after.stats.quotaHits.totalFds, uidFds: after.stats.quotaHits.uidFds }).toEqual({ totalFds: 0, uidFds: 0 });
              // Root's clients, one fd each (the client limit is 1): perUid of them fill the total exactly.
              const roots = await Promise.all(Array.from({ length: perUid }, () => connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 })));
              try {
                const got = await Promise.all(
                  roots.map((root) =>
                    root.dupFileDescriptor(memfd).then(
                      () => 'given',
                      (e: unknown) => (e as { quota?: string }).quota ?? String(e),
                    ),
                  ),
                );
                expect(got).toEqual(new Array<string>(perUid).fill('given'));
              } finally {
                for (const root of roots) await root.close();
              }
              second.child.stdin?.write('go\n');
              expect(await second.line('answer', STEP_GUARD_MS)).toEqual({ answer: 8, afterReset: true });
              await d.release(first);
              await d.release(second);
              await statusWhen(socketPath, (st) => st.fdsClosing === 0 && st.socketsClosing === 0 && !st.uids.some((u) => u.uid === NOBODY), STEP_GUARD_MS);
              expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
            });
          },
        ),
        { numRuns: 3, endOnFailure: true, examples: [[[2, 2, 1]]] },
      );
    } finally {
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, scaled(240_000));
});
