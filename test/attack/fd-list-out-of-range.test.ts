/**
 * An entry of a dupFileDescriptors list that is an integer past 2^31 - 1
 * (an fd is a C int) is refused as every other entry that cannot be an fd
 * is, on every transport: a TypeError at once, naming its index and value,
 * nothing of the batch sent or made on the far side (all or nothing), and
 * the connection goes on. (Left to the addon, it was a RangeError on child
 * and helper and a TypeError on the others, neither naming the entry.)
 */
import fc from 'fast-check';

import { connect, HelperDaemon, PROBE_COMMAND, type Connection } from '../../src';
import { closeFds, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

const TRANSPORTS = ['direct', 'worker', 'child', 'helper', 'pidfd'] as const;

/** Integers (and doubles that are integers) no fd can be. */
const pastInt32 = fc.oneof(fc.integer({ min: 2 ** 31, max: Number.MAX_SAFE_INTEGER }), fc.constantFrom(2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 1e300, Number.MAX_VALUE));

test('generated: an entry past 2^31 - 1 is a TypeError at once naming its index and value on every transport, and nothing of the batch is sent', async () => {
  const before = openFdTable();
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-out-of-range-${process.pid}`, diagnostics: true });
  const good = [makeMemfd('out-of-range-0'), makeMemfd('out-of-range-1')];
  const conns = new Map<string, Connection>();
  try {
    for (const t of TRANSPORTS) conns.set(t, await connect(t, { command: PROBE_COMMAND, socketPath: daemon.socketPath }));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...TRANSPORTS), fc.nat(600), fc.nat(300), pastInt32, async (transport, at, after, bad) => {
        const conn = conns.get(transport) as Connection;
        // The command's process's fds (direct and worker: this one's), before and after.
        const there = await conn.call<Array<[number, string]>>('openFds');
        const list = Array.from({ length: at + 1 + after }, (_, i) => good[i % 2] as number);
        list[at] = bad;
        let error: unknown;
        try {
          void conn.dupFileDescriptors(list);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(TypeError);
        expect((error as Error).message).toBe(`fds[${at}] must be a non-negative integer up to 2^31 - 1 (an fd number), not ${bad}`);
        // No fd the far side did not have (by number and file): fdbridge's background closer may close an earlier
        // iteration's fds meanwhile (a pidfd connection's pins), so the count may fall, never a copy appear.
        const known = new Set(there.map(([fd, target]) => `${fd} ${target}`));
        expect((await conn.call<Array<[number, string]>>('openFds')).filter(([fd, target]) => !known.has(`${fd} ${target}`))).toEqual([]);
        // The connection goes on: a good duplication arrives, and is the file named.
        const [copy] = await conn.dupFileDescriptors([good[0] as number]);
        const [id] = await conn.call<Array<{ ino: number | string }>>('identities', [copy]);
        expect(String(id?.ino)).toBe(String(fdIdentity(good[0] as number).ino));
        await conn.call('adopt', [copy]);
        await conn.call('closeAdopted', [copy]);
      }),
      { numRuns: 60, examples: [['child', 600, 0, 2 ** 31], ['helper', 0, 300, 2 ** 32], ['direct', 260, 5, 2 ** 31], ['worker', 3, 0, 1e300], ['pidfd', 253, 1, 2 ** 31]] },
    );
  } finally {
    for (const conn of conns.values()) await conn.close();
    await daemon.close();
    closeFds(good);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120_000);
