/**
 * A pidfd duplication names pins (fdbridge's copies of the caller's fds,
 * above the floor) by number, and the command's process pulls them with
 * pidfd_getfd(2) whenever it reads the request. A program that closes a
 * pin's number behind fdbridge's back before that pull, a bug fdbridge
 * survives, and opens a file of its own there must not have that file
 * pulled into the command, nor closed by fdbridge afterwards: the request
 * fails with EBADF (nothing of it kept on either side), the program's file
 * stays open at its number, and both fd tables are as they were. A swap
 * after the pull, before this side reads the reply, leaves the request
 * served with the files asked for, and the program's file open.
 *
 * The command's process is held (BlockingCommand's block, a FIFO read)
 * while the request waits, so the swap surely comes before the pull; for
 * a swap after it, this thread blocks until the command's process holds
 * the pulls, so their reply is surely read after the swap.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import fc from 'fast-check';

import { ClosedError, connect, SystemError, type Connection } from '../../src';
import { fdIdentity, isFdOpen, makeMemfd, openFdTable } from '../../src/fd';
import { backgroundClosesPending } from '../../src/test-hooks';
import { openAt } from '../util/open-at';
import { fdTableSettles } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const GATED = { module: join(__dirname, '..', 'fixtures', 'gated-pull-command.js'), export: 'GatedPullCommand' };

const identity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

/** Closes `fd` unless it is closed already (a failed run may leave it so). */
function closeIfOpen(fd: number): void {
  if (isFdOpen(fd)) closeSync(fd);
}

/** What the caller does: one dupFileDescriptors of the files, or one dupFileDescriptor each at once (folded into one request). */
type Mode = 'batch' | 'folded';
/** When the program swaps: while the request waits to be pulled, or once pulled and before this side reads the reply. */
type SwapAt = 'before-pull' | 'after-pull';

/** Which file each fd open in process `pid` is (`dev:ino`), read through /proc. */
function filesOf(pid: number): string[] {
  const out: string[] = [];
  for (const fd of openFdTable(pid).keys()) {
    try {
      const st = statSync(`/proc/${pid}/fd/${fd}`);
      out.push(`${st.dev}:${st.ino}`);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Waits, blocking this thread (its event loop reads nothing meanwhile),
 * until process `pid` holds a copy of each of the `asked` files. Past a
 * hang guard, throws.
 */
function pulledWithoutReturning(pid: number, asked: readonly string[]): void {
  const deadline = performance.now() + scaled(60_000);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const held = filesOf(pid);
    if (asked.every((file) => held.includes(file))) return;
    if (performance.now() > deadline) throw new Error(`the command's process (pid ${pid}) never pulled the files asked for`);
    Atomics.wait(nap, 0, 0, 2);
  }
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-pin-swapped-'));
  writeFileSync(join(dir, 'program-file'), 'the program');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("a pin closed and reopened on the program's file before or after the pull: that file is neither pulled nor closed; swapped before, the request fails with EBADF", async () => {
  let run = 0;
  await assertGuarded(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.nat(), { maxLength: 4 }),
      fc.constantFrom<Mode>('batch', 'folded'),
      fc.constantFrom<SwapAt>('before-pull', 'after-pull'),
      async (count, picks, mode, swapAt) => {
        run++;
        const guard = new HangGuard(scaled(60_000));
        const before = openFdTable();
        const files = Array.from({ length: count }, (_, i) => makeMemfd(`asked-${i}`));
        const asked = files.map(identity);
        const programFile = join(dir, 'program-file');
        const programFds: number[] = [];
        const fifo = join(dir, `gate-${run}`);
        execFileSync('mkfifo', [fifo]);
        let conn: Connection | undefined;
        try {
          conn = await connect('pidfd', { command: GATED });
          const c = conn;
          const pid = c.location.pid;
          const commandBefore = new Map(await c.call<Array<[number, string]>>('table'));
          const blocked = c.call('block', fifo);
          await guard.until('the command blocks', () => existsSync(`${fifo}.blocked`), Boolean);
          const had = registeredFds();
          // One outcome per caller: the batch's, or each folded call's.
          const requests: Array<Promise<number[]>> =
            mode === 'batch' ? [c.dupFileDescriptors(files)] : files.map((fd) => c.dupFileDescriptor(fd).then((n) => [n]));
          const outcomes = Promise.all(
            requests.map((r) =>
              r.then(
                (numbers) => ({ numbers }),
                (error: unknown) => ({ error }),
              ),
            ),
          );
          // The request is sent (a folded one from a microtask), not pulled: the command's process is held.
          await new Promise((resolve) => setImmediate(resolve));
          const pins = [...registeredSince(had).keys()].sort((a, b) => a - b);
          expect(pins).toHaveLength(count);
          expect(pins.map(identity).sort()).toEqual([...asked].sort());
          const swapped = [...new Set(picks.map((p) => pins[p % count] as number))];
          const swap = (): void => {
            for (const pin of swapped) {
              closeSync(pin); // behind fdbridge's back
              programFds.push(openAt(programFile, pin));
            }
          };
          if (swapAt === 'before-pull') swap();
          // Lets the command's process go: it reads the GETFD and pulls.
          closeSync(openSync(fifo, 'w'));
          if (swapAt === 'after-pull') {
            // This thread does not return to its event loop until the
            // command's process holds its pulls: their reply is not read yet.
            pulledWithoutReturning(pid, asked);
            swap();
          }
          const programId = programFds.length > 0 ? identity(programFds[0] as number) : '';
          await guard.within(blocked, 'the command goes on');
          const results = await guard.within(outcomes, 'the duplication settles');
          const commandNow = new Map(await c.call<Array<[number, string]>>('table'));
          const arrived = [...commandNow.keys()].filter((fd) => !commandBefore.has(fd)).sort((a, b) => a - b);
          // The program's file never reaches the command.
          expect([...commandNow.values()]).not.toContain(programId);
          if (swapped.length > 0 && swapAt === 'before-pull') {
            for (const r of results) {
              expect(r).toHaveProperty('error');
              const error = (r as { error: unknown }).error;
              expect(error).toBeInstanceOf(SystemError);
              expect(error).toMatchObject({ code: 'EBADF' });
            }
            expect(arrived).toEqual([]);
          } else {
            for (const r of results) expect(r).toHaveProperty('numbers');
            const numbers = results.flatMap((r) => (r as { numbers: number[] }).numbers);
            expect(await c.call<string[]>('files', numbers)).toEqual(asked);
            expect(arrived).toEqual([...numbers].sort((a, b) => a - b));
          }
          await c.close();
          conn = undefined;
          await guard.until('the background closes', backgroundClosesPending, (n) => n === 0);
          // The program's files are still open at their numbers, untouched.
          for (const fd of programFds) expect(identity(fd)).toBe(programId);
          expect([...registeredSince(had).keys()]).toEqual([]);
        } finally {
          await conn?.close();
          // Clean-up only: what the checks above found is what fails a run.
          for (const fd of [...programFds, ...files]) closeIfOpen(fd);
          rmSync(fifo, { force: true });
          rmSync(`${fifo}.blocked`, { force: true });
        }
        expect(await fdTableSettles(process.pid, before)).toBe('');
      },
    ),
    { numRuns: 24 },
  );
}, scaled(300_000));

test("a folded duplication's pin closed and reopened on the program's file in the tick close() is called: never sent, ClosedError, the program's file left open", async () => {
  const before = openFdTable();
  const file = makeMemfd('asked');
  const programFile = join(dir, 'program-file');
  let programFd: number | undefined;
  const conn = await connect('pidfd', { command: GATED });
  try {
    await conn.call('files', []);
    const had = registeredFds();
    // Folded: sent from a microtask, after close() below has failed it.
    const dup = conn.dupFileDescriptor(file).then(
      () => null,
      (error: unknown) => error,
    );
    const [pin] = [...registeredSince(had).keys()];
    expect(pin).toBeDefined();
    closeSync(pin as number); // behind fdbridge's back
    programFd = openAt(programFile, pin as number);
    const programId = identity(programFd);
    const closed = conn.close();
    expect(await dup).toBeInstanceOf(ClosedError);
    await closed;
    const guard = new HangGuard(scaled(60_000));
    await guard.until('the background closes', backgroundClosesPending, (n) => n === 0);
    expect(identity(programFd)).toBe(programId);
    expect([...registeredSince(had).keys()]).toEqual([]);
  } finally {
    await conn.close();
    for (const fd of programFd === undefined ? [file] : [programFd, file]) closeIfOpen(fd);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
