/**
 * A relayed stream's fd of fdbridge's, here on the client, closed behind
 * its back (the program's bug: README, "Closing an fd fdbridge made is the
 * program's bug"), its number then taken by a worker connection's event
 * loop: libuv opens the loop's fds (epoll, the signal pipe's two ends, an
 * eventfd, /dev/null) at the lowest free numbers, and fdbridge registers
 * them as its own once the thread runs. A new fd of ours at the number
 * tells fdbridge the relay's was closed by someone else, and the stream
 * leaves the number alone: the command's bytes must never be written into
 * the worker's loop fd (into its signal pipe they are read by libuv as
 * signal messages, and the process crashes), and the worker goes on.
 *
 * Generated: how many free numbers lie just below the relay's, so which of
 * the loop's fds takes it. Likewise for the remote connection's end of its
 * via's stderr (a libuv stream, which closes its number itself). Run in a process of its own at RLIMIT_NOFILE 64
 * (fd floor 32, so the loop's numbers reach the relay's; a crash ends that
 * process only).
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { openFdTable } from '../../src/fd';
import { fdTableSettles, runFixtureAtFdLimit } from '../util/processes';
import { scaled } from '../util/time-scale';

const FIXTURE = join(__dirname, 'fixtures', 'relay-number-worker-loop.js');

interface Seen {
  relay?: number;
  taker?: string;
  writes?: unknown[];
  readerGot?: unknown;
  workerWorks?: unknown;
  diff?: string;
  error?: string;
}

/** Runs the fixture under `prlimit --nofile=64`; its JSON line, or how it ended instead. */
function run(gap: number, stream: 'relay' | 'stderr' | 'stderr-as-worker-starts' = 'relay'): Promise<Seen | string> {
  return runFixtureAtFdLimit<Seen>(64, FIXTURE, { gap, waitMs: scaled(300), stream });
}

test("generated: a worker's event-loop fd at a relayed stream's number closed behind fdbridge's back never gets the stream's bytes", async () => {
  const before = openFdTable();
  const takers = new Set<string>();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 4 }), async (gap) => {
      const seen = await run(gap);
      expect(seen).toMatchObject({ readerGot: 'EAGAIN', workerWorks: true, diff: '' });
      const { taker, writes } = seen as Seen;
      takers.add((taker ?? '').replace(/\[\d+\]$/, ''));
      // The relay let the number go: the stream ended, so the command's second write finds no reader.
      expect(writes?.[1]).toBe('EPIPE');
    }),
    { numRuns: 8, endOnFailure: true },
  );
  // The loop's fds took the number in turn (which did depends on the gaps drawn).
  expect(takers.size).toBeGreaterThan(1);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(240_000));

// The remote connection's end of its via's stderr is a libuv stream, which
// closes its number itself, by number, as it ends: a worker's loop fd
// opened at that number once the program closed the stream's (and which
// cannot be moved: libuv keeps it by number) would be closed under the
// running worker (its epoll fd: libuv aborts the process; its signal pipe,
// eventfd or /dev/null: silently). Closed before the worker connection
// begins, the number gets a file of fdbridge's own before the loop opens
// its fds; closed as the worker's thread starts, a loop that opened an fd
// there ends and another starts, with the placeholder there first.
test("generated: a worker's event loop never keeps an fd at the number of a remote's stderr stream closed behind fdbridge's back, which the stream's close would close", async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 4 }), fc.constantFrom('stderr' as const, 'stderr-as-worker-starts' as const), async (gap, stream) => {
      const seen = await run(gap, stream);
      expect(seen).toMatchObject({ workerWorks: true, diff: '' });
      // fdbridge's placeholder (a socket whose peer is closed), or nothing; none of the loop's fds (epoll, pipe, eventfd, /dev/null).
      expect((seen as Seen).taker).toMatch(/^(socket:\[\d+\]|nothing)$/);
    }),
    { numRuns: 8, examples: [[0, 'stderr'], [3, 'stderr'], [0, 'stderr-as-worker-starts']], endOnFailure: true },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(240_000));

// Each worker start held once its loop exists, a stream's fd closed behind
// fdbridge's back meanwhile with every lower number taken: the loop's next
// fd (as it warms) lands at the stream's number, and that start ends.
// connect starts another, up to three: then it fails with EBADF.
test.each([1, 2, 3])("a worker's loop fd at a stream's number closed behind fdbridge's back as %i start(s) begin: connect starts again, and fails with EBADF after three", async (closes) => {
  const before = openFdTable();
  const seen = await runFixtureAtFdLimit<{ ended: unknown; answers: boolean; takers: string[]; loopStartsOpen: number; diff: string }>(64, join(__dirname, 'fixtures', 'worker-restarts.js'), { closes });
  expect(seen).toMatchObject({ loopStartsOpen: 0, diff: '' });
  const { ended, answers, takers } = seen as { ended: unknown; answers: boolean; takers: string[] };
  // Each stream's number: fdbridge's placeholder (a socket whose peer is closed) or nothing, never a loop's fd.
  expect(takers).toHaveLength(closes);
  for (const t of takers) expect(t).toMatch(/^(socket:\[\d+\]|nothing)$/);
  if (closes < 3) {
    expect(ended).toBe('connected');
    expect(answers).toBe(true);
  } else {
    expect(ended).toMatchObject({ name: 'SystemError', code: 'EBADF', message: expect.stringContaining('3 worker threads in a row') });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120_000));

// One deadline for the whole connect, however many starts it takes: two
// starts held 0.6 x timeoutMs each (then ended as above) are past it.
test('a connect whose worker starts end and start again keeps one deadline: options.timeoutMs, not timeoutMs a start', async () => {
  const before = openFdTable();
  const timeoutMs = scaled(2000);
  const seen = await runFixtureAtFdLimit<{ ended: unknown; loopStartsOpen: number; diff: string }>(64, join(__dirname, 'fixtures', 'worker-restarts.js'), {
    closes: 2,
    holdMs: Math.ceil(timeoutMs * 0.6),
    timeoutMs,
  });
  expect(seen).toMatchObject({ ended: { name: 'TimeoutError', code: 'ERR_FDBRIDGE_TIMEOUT' }, loopStartsOpen: 0, diff: '' });
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120_000));
