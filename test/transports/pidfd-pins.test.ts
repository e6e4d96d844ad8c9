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
import { writeSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, PeerExitedError, PROBE_COMMAND, SystemError, UnsupportedError, type Connection, type ProbeCommand, type Remote, type WireIdentity } from '../../src';
import { closeFd, fdIdentity, makeMemfd, makePipe, openFdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { backgroundClosesPending } from '../../src/test-hooks';
import { CHILD_SOCKET_FD, type ChildConnection } from '../../src/transports/child';
import { drainPipe } from '../util/pipe-read';
import { exitOf, fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const HOSTILE_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'hostile-command.js'), export: 'HostileCommand' };

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

test('a duplication in flight when the command process closes its socket and lives on fails with PeerExitedError, and its pin closes then, not when that process exits', async () => {
  const guard = new HangGuard(scaled(15000));
  const before = openFdTable();
  const memfd = makeMemfd('in-flight');
  const [startedR, startedW] = makePipe();
  const [goR, goW] = makePipe();
  const conn = await connect('pidfd', { command: HOSTILE_COMMAND });
  const child = (conn as ChildConnection).child;
  try {
    const target = openFdTable().get(memfd) as string;
    const copies = (): number => [...openFdTable().values()].filter((t) => t === target).length;
    const [farStarted, farGo] = await conn.dupFileDescriptors([startedW, goR]);
    const stalled = conn.call('closeSocketAndStall', CHILD_SOCKET_FD, farStarted, farGo).catch((e: unknown) => e);
    expect(await guard.within(drainPipe(startedR, 1), 'the command blocked in closeSocketAndStall')).toBe(1);
    // The command's thread is blocked: the GETFD goes out (from a microtask) and stays unread.
    const dup = conn.dupFileDescriptor(memfd).catch((e: unknown) => e);
    await new Promise((resolve) => setImmediate(resolve));
    expect(copies()).toBe(2);
    writeSync(goW, 'g');
    expect(await dup).toBeInstanceOf(PeerExitedError);
    expect(await stalled).toBeInstanceOf(PeerExitedError);
    // The peer has ended (its socket is gone): nothing can pull the pin any more, though its process lives on.
    await guard.until('the pin closed', copies, (n) => n === 1);
    expect({ code: child.exitCode, signal: child.signalCode }).toEqual({ code: null, signal: null });
  } finally {
    child.kill('SIGKILL');
    await conn.close();
    for (const fd of [memfd, startedR, startedW, goR, goW]) closeFd(fd);
  }
  expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGKILL' });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("a duplication close() gives up on while the command process lives and has not read it keeps its pin open until that process has exited (it may still pull the number)", async () => {
  const guard = new HangGuard(scaled(15000));
  const before = openFdTable();
  const [r, w] = makePipe();
  const conn = await connect('pidfd', { command: PROBE_COMMAND });
  const child = (conn as ChildConnection).child;
  let closing: Promise<void> | undefined;
  let ownW: number | undefined = w;
  // The pipe's write end, by its link (the read end's is the same), but r.
  const target = openFdTable().get(w) as string;
  const copies = (): number => [...openFdTable()].filter(([fd, t]) => t === target && fd !== r).length;
  try {
    // The command's thread is blocked: it reads nothing, the duplication included, until it is killed.
    const blocked = conn.call('block', scaled(60000)).catch((e: unknown) => e);
    const dup = conn.dupFileDescriptor(w).catch((e: unknown) => e);
    await new Promise((resolve) => setImmediate(resolve));
    closing = conn.close();
    expect(await dup).toBeInstanceOf(ClosedError);
    expect(await blocked).toBeInstanceOf(ClosedError);
    closeFd(w);
    ownW = undefined;
    // Whatever close() handed to the background closer is closed by now; the pin is not among it.
    await guard.until('the background closer idle', backgroundClosesPending, (n) => n === 0);
    expect(copies()).toBe(1);
    expect({ code: child.exitCode, signal: child.signalCode }).toEqual({ code: null, signal: null });
  } finally {
    child.kill('SIGKILL');
    await (closing ?? conn.close());
    if (ownW !== undefined) closeFd(ownW);
  }
  // close() resolved once the process had exited and the pin was closed.
  expect(copies()).toBe(0);
  closeFd(r);
  expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGKILL' });
  expect(await fdTableSettles(process.pid, before)).toBe('');
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
