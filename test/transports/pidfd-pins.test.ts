/**
 * The pidfd transport's pins (src/transports/pidfd.ts, PulledByNumber). A
 * duplication names, in its GETFD frame, a pin of each fd (a copy above
 * the fd floor that the caller cannot close or reuse), and the command's
 * process pulls it by that number. A request that fails while that process
 * lives (here: it is at its fd limit, so pidfd_getfd says EMFILE) leaves
 * its pins open: the far side may still read the request and pull the
 * numbers, and a number closed too soon could name another file by then.
 * They close once the process has exited: after close() this process's fd
 * table is as before. The connection goes on after such a failure.
 */
import fc from 'fast-check';

import { connect, PROBE_COMMAND, SystemError, UnsupportedError, type Connection, type ProbeCommand, type Remote } from '../../src';
import { closeFd, makeMemfd, openFdTable, type FdTable } from '../../src/fd';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles } from '../util/processes';

/** A duplication the command's process cannot take: one fd alone, or a batch of `count` distinct fds. */
type Failure = { kind: 'dup' } | { kind: 'batch'; count: number };

const failure: fc.Arbitrary<Failure> = fc.oneof(
  fc.record({ kind: fc.constant('dup' as const) }),
  fc.record({ kind: fc.constant('batch' as const), count: fc.integer({ min: 1, max: 4 }) }),
);

/** How many entries of `table` name each of `targets`. */
function countsOf(table: FdTable, targets: string[]): number[] {
  const all = [...table.values()];
  return targets.map((t) => all.filter((v) => v === t).length);
}

/** Leaves the command's process no free fd slot (its limit at its lowest free number); returns its soft limit. */
async function fillCommandLimit(probe: Remote<ProbeCommand>): Promise<number> {
  const [soft] = await probe.fdLimit();
  const used = new Set((await probe.openFds()).map(([n]) => n));
  let lowestFree = 0;
  while (used.has(lowestFree)) lowestFree++;
  await probe.setFdLimit(lowestFree);
  return soft;
}

test('the pins of duplications the command process could not take stay open while it lives, and close once it has exited; the connection goes on', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(failure, { minLength: 1, maxLength: 3 }), async (failures) => {
      const before = openFdTable();
      const files = failures.map((f, i) => Array.from({ length: f.kind === 'dup' ? 1 : f.count }, (_, j) => makeMemfd(`pin-${i}-${j}`)));
      let conn: Connection | undefined;
      try {
        const withFiles = openFdTable();
        const targets = files.flat().map((fd) => withFiles.get(fd) as string);
        conn = await connect('pidfd', { command: PROBE_COMMAND });
        expect(conn.transport).toBe('pidfd');
        const probe = conn.proxy<ProbeCommand>();
        const soft = await fillCommandLimit(probe);
        for (const [i, f] of failures.entries()) {
          const fds = files[i] as number[];
          const err = await (f.kind === 'dup' ? conn.dupFileDescriptor(fds[0] as number) : conn.dupFileDescriptors(fds)).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(SystemError);
          expect(err).toMatchObject({ code: 'EMFILE' });
        }
        await probe.setFdLimit(soft);
        // The connection goes on: a duplication now arrives, of the right file.
        const [remote] = await conn.dupFileDescriptors([files[0]?.[0] as number]);
        expect(await conn.call('identities', [remote])).toHaveLength(1);
        // Each fd named in a failed request has its pin still open (ours, and one pin each), after that round trip.
        expect(countsOf(openFdTable(), targets)).toEqual(targets.map(() => 2));
        await conn.close();
        expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
        conn = undefined;
        // The process has exited: the pins are closed, only ours are left.
        expect(await fdTableSettles(process.pid, withFiles)).toBe('');
      } finally {
        await conn?.close();
        for (const fd of files.flat()) closeFd(fd);
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    }),
    // Each run spawns a command process: a failure is reported as found, not shrunk (the cases are small already).
    { numRuns: 4, endOnFailure: true },
  );
});

test("dupFileDescriptorSync is refused with UnsupportedError that names what to use instead; nothing is sent and the connection goes on", async () => {
  const before = openFdTable();
  const conn = await connect('pidfd', { command: PROBE_COMMAND });
  const fd = makeMemfd('sync');
  try {
    const err = (() => {
      try {
        conn.dupFileDescriptorSync(fd);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as Error).message).toMatch(/use dupFileDescriptor$/);
    const remote = await conn.dupFileDescriptor(fd);
    expect(await conn.call('identities', [remote])).toHaveLength(1);
  } finally {
    await conn.close();
    closeFd(fd);
  }
  expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
