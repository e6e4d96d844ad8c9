/**
 * A client of a shared helper daemon closes its log connection while its
 * lines wait for room in a pipe nobody reads. The lines are not written;
 * the client's calls fail with the connection's ClosedError at once, and
 * the daemon's --verbose log says, one line each, why each line failed: the
 * one waiting inside its write was ended with the command ("part of it may
 * have been" written), the ones queued behind it were never started. The
 * daemon's fd table and this process's are as before.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, LOG_COMMAND, openFdTable } from '../../src';
import { closeFds } from '../../src/fd';
import { fullPipe } from '../util/full-pipe';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const STOPPED = 'log: the command was closed before the line was written';

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-log-closed-lines-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath, ['--verbose']);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The daemon's --verbose lines about this process's failed log() calls, from the end of the message on (the stack is the daemon's). */
const failedLogLines = (): string[] => {
  const head = `fdbridge helper: pid ${process.pid}: call log() failed: `;
  return helper
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith(head))
    .map((l) => l.slice(head.length).replace(/\\x0a {4}at .*$/, ''));
};

test("generated: lines waiting for a full pipe when their client closes: each call fails with ClosedError, and the daemon's log says why each line was not written", async () => {
  const before = openFdTable();
  const helperBefore = openFdTable(helper.pid);
  await assertGuarded(
    fc.asyncProperty(fc.array(fc.string({ maxLength: 200 }), { minLength: 1, maxLength: 6 }), async (lines) => {
      const guard = new HangGuard(scaled(40_000));
      const seen = failedLogLines().length;
      const [r, w] = fullPipe();
      try {
        const conn = await connect('helper', { command: LOG_COMMAND, socketPath });
        let calls: Array<Promise<unknown>> = [];
        try {
          await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
          calls = lines.map((l) => conn.call('log', l).then(() => 'written', (e: unknown) => e));
          // Served in order: every line has been taken by the daemon once this answers.
          await conn.call('where');
        } finally {
          await conn.close();
        }
        const settled = await guard.within(Promise.all(calls), 'the log calls settling once their connection closed');
        for (const s of settled) expect(s).toBeInstanceOf(ClosedError);
        const reported = await guard.until("the daemon's lines about them", failedLogLines, (all) => all.length >= seen + lines.length, {
          describe: (all) => `${all.length - seen} of ${lines.length} lines`,
        });
        // The first was inside its write (the pipe full), the others queued behind it.
        expect(reported.slice(seen)).toEqual([`ClosedError: ${STOPPED} (part of it may have been)`, ...lines.slice(1).map(() => `ClosedError: ${STOPPED}`)]);
      } finally {
        closeFds([r, w]);
      }
    }),
    { numRuns: 12 },
  );
  expect(helper.child.exitCode).toBeNull();
  expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 600_000);
