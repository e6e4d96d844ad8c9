/**
 * A command's closeClientFds list that names one number twice is refused
 * whole, on every transport: a TypeError at once that names the number,
 * nothing of the list closed. Closed as it was, one close after the other on
 * the background closer, the second close of the number would close
 * whatever took it after the first (another connection's copy, another
 * uid's fd in a helper daemon, the program's file). The list comes from
 * the client here (the probe command's closeAdopted passes it on), as a
 * client of a helper daemon can send any.
 */
import fc from 'fast-check';

import { connect, HelperDaemon, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { closeFds, makeMemfd, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const TRANSPORTS = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'] as const;

/** The call's value (null for none), or what it rejected with. */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => ({ ok: v ?? null }),
    (e: unknown) => e,
  );
}

test('generated: a closeClientFds list naming an adopted fd twice is a TypeError naming it on every transport, and none of the list is closed', async () => {
  const before = openFdTable();
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-repeated-close-${process.pid}`, diagnostics: true });
  const file = makeMemfd('repeated-close');
  const conns = new Map<string, Connection>();
  try {
    for (const t of TRANSPORTS) conns.set(t, await connect(t, { command: PROBE_COMMAND, socketPath: daemon.socketPath }));
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...TRANSPORTS),
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
        fc.nat(),
        fc.nat(),
        async (transport, n, picks, againPick, at) => {
          const conn = conns.get(transport) as Connection;
          const given = await conn.dupFileDescriptors(new Array<number>(n).fill(file));
          expect(await conn.call('adopt', given)).toBe(n);
          const ids = await conn.call('identities', given);
          // Adopted fds, each once, then one of them named again at some place of the list.
          const once = [...new Set(picks.map((p) => given[p % n] as number))];
          const again = once[againPick % once.length] as number;
          const list = [...once];
          list.splice(at % (list.length + 1), 0, again);
          const outcome = await settle(conn.call('closeAdopted', list));
          expect({ list, remote: outcome instanceof RemoteError, name: (outcome as RemoteError).remote?.name }).toEqual({ list, remote: true, name: 'TypeError' });
          expect((outcome as RemoteError).remote.message).toContain(`fd ${again} again`);
          // None closed: every adopted fd is still its file, and the command still closes them all.
          expect(await conn.call('identities', given)).toEqual(ids);
          expect(await settle(conn.call('closeAdopted', given))).toEqual({ ok: null });
        },
      ),
      {
        numRuns: 60,
        examples: [
          ['direct', 1, [0, 0], 0, 1],
          ['worker', 2, [0, 1], 1, 0],
          ['child', 3, [2, 0, 1], 0, 3],
          ['helper', 1, [0], 0, 0],
          ['pidfd', 4, [3, 1], 1, 1],
          ['remote', 2, [1, 0], 0, 2],
        ],
      },
    );
  } finally {
    for (const conn of conns.values()) await conn.close();
    await daemon.close();
    closeFds([file]);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(180_000));
