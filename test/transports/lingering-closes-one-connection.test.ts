/**
 * More of one connection's copies blocked in their closes than one owner's
 * share of the closer's threads. Each copy (here: duplicates a direct or
 * worker command did not adopt) is a lingering TCP socket's last
 * reference, so each close blocks for the linger time (an hour). They are
 * copies of this process's caller's own files, closed for it by one
 * connection's holder (HeldCopies): every one of them must get a thread
 * and be in its close once close() resolves, out of the fd table, none
 * left queued behind the others, still open and registered as fdbridge's
 * for as long as those linger, and listed by a leak check.
 * (Should copies stay queued, the test waits for them until jest's timeout:
 * the hang guard.)
 *
 * Generated: the transport and how many sockets (9 to 20: past the 8
 * threads a helper daemon's uid gets). The sockets come from
 * test/util/linger-attacker.ts (lingeringSocket); their closes end when
 * the test resets the peers.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect } from '../../src';
import { backgroundCloseFds, openFdTable } from '../../src/fd';
import { backgroundClosesPending, closerThreads } from '../../src/test-hooks';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { DIST_SRC } from '../util/nobody';

const PROBE = { module: join(DIST_SRC, 'commands', 'probe-command.js'), export: 'ProbeCommand' };

(hasPython() ? test : test.skip)("one connection's 9 to 20 copies whose closes block are all in a close once close() resolves: none left queued, open and fdbridge's", async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom('direct', 'worker'), fc.integer({ min: 9, max: 20 }), async (transport, count) => {
      const linger = await lingeringSocket(count);
      try {
        const conn = await connect(transport, { command: PROBE });
        const copies: number[] = [];
        try {
          for (const fd of linger.fds) copies.push(await conn.dupFileDescriptor(fd)); // not adopted: the connection's to close
        } finally {
          for (const fd of linger.fds) closeFd(fd); // the caller's own: each copy is its socket's last reference now
          await conn.close();
        }
        // Every copy gets a thread of its own: the closer's queue empties (threads starting
        // on a loaded machine may take a while; before, the copies past 8 stayed queued for
        // the linger time, and this waited until jest's timeout).
        while (backgroundCloseFds().queued.length > 0) await new Promise((r) => setTimeout(r, 10));
        const table = openFdTable();
        expect({
          open: copies.filter((fd) => table.get(fd)?.startsWith('socket:') === true),
          inClose: closerThreads().busy >= count,
        }).toEqual({ open: [], inClose: true });
      } finally {
        await linger.end(); // resets the peers: every close ends
        while (backgroundClosesPending() > 0) await new Promise((r) => setTimeout(r, 10));
      }
    }),
    { numRuns: 4 },
  );
  // Each close() waits CLOSES_GIVE_UP_MS (5 s) for closes that block for an hour: four of them take longer than jest's default.
}, 120_000);
