/**
 * A worker command that ends its thread as soon as it has started (a crash
 * on its first turn): its 'ready' message and its end may both be waiting
 * when this thread's loop next turns (a loaded machine; here the test holds
 * this thread until the worker's thread is gone). Worker then emits
 * 'message' and 'exit' in that one turn, with no microtask between: the
 * connection must still hear the exit. Its calls reject with
 * PeerExitedError (the command's exit code), the fds given to it are
 * closed by the exit's sweep, and close() settles.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PeerExitedError } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const COMMAND = { module: join(__dirname, '..', 'fixtures', 'ends-after-ready-command.js'), export: 'EndsAfterReadyCommand' };

/** The tid the command wrote into `file`, once it has. */
function tidIn(file: string): number | undefined {
  try {
    const tid = Number(readFileSync(file, 'utf8'));
    return tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Blocks this thread until the command has written its tid into `file` and
 * that thread is gone: its 'ready' and its end then both wait for this
 * thread's next turn of the loop. Gives up past `deadline` (performance.now()).
 */
function holdUntilEnded(file: string, deadline: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const tid = tidIn(file);
    if (tid !== undefined && !existsSync(`/proc/self/task/${tid}`)) return;
    if (performance.now() > deadline) throw new Error(`the worker's command did not start and end (tid ${String(tid)}) within the hang guard`);
    Atomics.wait(pause, 0, 0, 1);
  }
}

test('a worker command that ends right after it is ready fails its calls with PeerExitedError, its given fds are closed and close() settles, also when its ready and its end arrive in one turn', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-ends-after-ready-'));
  const before = openFdTable();
  try {
    await assertGuarded(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 3 }), async (held, code, given) => {
        const guard = new HangGuard(scaled(20_000));
        const tidFile = join(dir, `tid-${held}-${code}-${given}`);
        rmSync(tidFile, { force: true });
        const baseline = openFdTable();
        const opening = connect('worker', { command: { ...COMMAND, args: [tidFile, code] } });
        if (held) holdUntilEnded(tidFile, performance.now() + guard.leftMs);
        const conn = await guard.within(opening, 'connect');
        const fds = Array.from({ length: given }, () => makeMemfd('ends-after-ready'));
        try {
          // Given before or after the exit was heard: rejected, or swept when it is.
          const gifts = await Promise.allSettled(fds.map((fd) => conn.dupFileDescriptor(fd)));
          const call = await guard.within(
            conn.call('where').then(
              (v) => v,
              (e: unknown) => e,
            ),
            'a call after the command ended',
          );
          // Held, the exit came with the ready: nothing reached the command.
          if (held) {
            expect(call).toBeInstanceOf(PeerExitedError);
            for (const g of gifts) expect(g.status).toBe('rejected');
          }
          if (call !== 'here') expect(call).toMatchObject({ code: 'ERR_FDBRIDGE_PEER_EXITED', transport: 'worker', exitCode: code });
          await guard.within(conn.close(), 'close()');
        } finally {
          for (const fd of fds) closeFd(fd);
        }
        expect(openFdTable()).toEqual(baseline);
      }),
      { numRuns: 10 },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(120_000));
