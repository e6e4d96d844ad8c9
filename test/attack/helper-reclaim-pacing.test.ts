/**
 * Before a helper daemon's fd limit refuses a DUP, it looks for the adopted
 * fds that limit counts and that the commands closed another way (one
 * statx each, FrameChannel.reclaimClosedAdopted): the client's for
 * maxFdsPerClient, its uid's connections' for maxFdsPerUid, every
 * connection's for maxFdsTotal. Unpaced, a client holding thousands of
 * adopted fds at its limit and sending single DUPs one after another, all
 * refused, had the daemon scan them all on every refusal: its event loop
 * went to these scans, and every other uid's calls waited behind them.
 * Paced per scope (ReclaimPacing), a scan that found nothing and took a
 * millisecond or more holds back the scope's next one for ten times its
 * duration: here, for each limit, refused DUPs in a row run far fewer
 * scans than there are refusals (unpaced: one each), each refusal still
 * the limit's, and a DUP once the command closed one fd is served.
 * The scans are counted (test-hooks countReclaimScans), never timed.
 */
import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, makeMemfd } from '../../src';
import { openFdTable } from '../../src/fd';
import { countReclaimScans } from '../../src/test-hooks';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

/** Adopted fds the client holds at its limit: a scan of them takes a few milliseconds (about 1 µs a statx), never under one. */
const ADOPTED = 6000;
/** Single DUPs sent one after another, each refused. */
const REFUSALS = 200;

type Scope = 'fds' | 'uidFds' | 'totalFds';

/** Limits under which the ADOPTED fds of one client fill exactly `scope`'s, the others having room. */
function limitsFilling(scope: Scope): { maxFdsPerClient: number; maxFdsPerUid: number; maxFdsTotal: number; maxConnections: number } {
  const room = 2 * ADOPTED;
  return {
    maxFdsPerClient: scope === 'fds' ? ADOPTED : room,
    maxFdsPerUid: scope === 'uidFds' ? ADOPTED : room,
    maxFdsTotal: scope === 'totalFds' ? ADOPTED : room,
    maxConnections: 8,
  };
}

test("refused DUPs in a row against thousands of adopted fds run far fewer reclaim scans than refusals, for each fd limit's scope; each refusal is the limit's", async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<Scope>('fds', 'uidFds', 'totalFds'), async (scope) => {
      const baseline = openFdTable();
      const daemon = HelperDaemon.start({ socketPath: `@fdbridge-reclaim-pacing-${process.pid}`, diagnostics: true, limits: limitsFilling(scope) });
      const memfd = makeMemfd('pacing');
      try {
        const conn = await connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath, timeoutMs: scaled(60000) });
        const given = await conn.dupFileDescriptors(new Array<number>(ADOPTED).fill(memfd));
        expect(await conn.call('adopt', given)).toBe(ADOPTED);
        expect(daemon.status().fdsHeld).toBe(ADOPTED);

        const counted = countReclaimScans();
        const outcomes: string[] = [];
        try {
          for (let i = 0; i < REFUSALS; i++) {
            outcomes.push(
              await conn.dupFileDescriptor(memfd).then(
                () => 'served',
                (e: { code?: string; quota?: string }) => `${e.code}:${e.quota}`,
              ),
            );
          }
        } finally {
          counted.stop();
        }
        const scans = counted.scans;
        expect(outcomes).toEqual(new Array<string>(REFUSALS).fill(`ERR_FDBRIDGE_QUOTA:${scope}`));
        // The first refusal scans (nothing held it back yet); unpaced, each of the REFUSALS would have.
        expect(scans).toBeGreaterThanOrEqual(1);
        expect(scans).toBeLessThanOrEqual(REFUSALS / 4);

        // Nothing lost: once the command closed one it adopted, a DUP is served.
        await conn.call('closeAdopted', [given[0]]);
        const fd = await conn.dupFileDescriptor(memfd);
        expect(typeof fd).toBe('number');
        expect(daemon.status().fdsHeld).toBe(ADOPTED);
        await conn.close();
      } finally {
        closeFd(memfd);
        await daemon.close();
      }
      expect(await fdTableSettles(process.pid, baseline, 10000)).toBe('');
    }),
    { numRuns: 3, examples: [['fds'], ['uidFds'], ['totalFds']] },
  );
}, scaled(240000));
