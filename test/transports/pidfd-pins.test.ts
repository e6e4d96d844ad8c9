/**
 * The pidfd transport's pins (src/transports/pidfd.ts, PulledByNumber). A
 * duplication names, in its GETFD frame, a pin of each fd (a copy above
 * the fd floor that the caller cannot close or reuse), and the command's
 * process pulls it by that number. A request the far side answers as
 * failed (here: it is at its fd limit, so pidfd_getfd says EMFILE) has its
 * pins closed at once: the far side answers only once the pull failed and
 * nothing of it was kept, and never pulls that request again. So a client
 * that retries failing duplications keeps a bounded fd table, and the
 * connection goes on: a duplication that succeeds delivers its file.
 */
import fc from 'fast-check';

import { connect, PROBE_COMMAND, SystemError, UnsupportedError, type Connection, type ProbeCommand, type Remote, type WireIdentity } from '../../src';
import { closeFd, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles } from '../util/processes';

/** A step of a client: a duplication the command's process cannot take, retried `times` times (one fd alone, or a batch of `count` distinct fds), or one it can. */
type Step = { kind: 'fail'; count: number | undefined; times: number } | { kind: 'succeed'; file: number };

const FILES = 4;

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('fail' as const), count: fc.option(fc.integer({ min: 1, max: FILES }), { nil: undefined }), times: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('succeed' as const), file: fc.integer({ min: 0, max: FILES - 1 }) }),
);

/** Leaves the command's process no free fd slot (its limit at its lowest free number). */
async function fillCommandLimit(probe: Remote<ProbeCommand>): Promise<void> {
  const used = new Set((await probe.openFds()).map(([n]) => n));
  let lowestFree = 0;
  while (used.has(lowestFree)) lowestFree++;
  await probe.setFdLimit(lowestFree);
}

test('a client retrying duplications the command process cannot take keeps no pin of them open: its fd table is back after each; the connection goes on and delivers the right files', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), async (steps) => {
      const before = openFdTable();
      const files = Array.from({ length: FILES }, (_, i) => makeMemfd(`pin-${i}`));
      let conn: Connection | undefined;
      try {
        conn = await connect('pidfd', { command: PROBE_COMMAND });
        expect(conn.transport).toBe('pidfd');
        const probe = conn.proxy<ProbeCommand>();
        const [soft] = await probe.fdLimit();
        await fillCommandLimit(probe);
        const connected = openFdTable();
        for (const s of steps) {
          if (s.kind === 'fail') {
            const fds = s.count === undefined ? [files[0] as number] : files.slice(0, s.count);
            for (let t = 0; t < s.times; t++) {
              const err = await (s.count === undefined ? conn.dupFileDescriptor(fds[0] as number) : conn.dupFileDescriptors(fds)).catch((e: unknown) => e);
              expect(err).toBeInstanceOf(SystemError);
              expect(err).toMatchObject({ code: 'EMFILE' });
              // Its pins are closed (on the background closer): nothing of the request is left here.
              expect(await fdTableSettles(process.pid, connected)).toBe('');
            }
          } else {
            await probe.setFdLimit(soft);
            const fd = files[s.file] as number;
            const [remote] = await conn.dupFileDescriptors([fd]);
            const [far] = await conn.call<WireIdentity[]>('identities', [remote]);
            const near = fdIdentity(fd);
            expect(far).toMatchObject({ dev: String(near.dev), ino: String(near.ino) });
            expect(await fdTableSettles(process.pid, connected)).toBe('');
            // The duplicate is the command's now: its slot is taken, and the limit goes back to the lowest free one.
            await fillCommandLimit(probe);
          }
        }
        await conn.close();
        expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
        conn = undefined;
      } finally {
        await conn?.close();
        for (const fd of files) closeFd(fd);
      }
      expect(await fdTableSettles(process.pid, before)).toBe('');
    }),
    // Each run spawns a command process: a failure is reported as found, not shrunk.
    { numRuns: 5, endOnFailure: true },
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
