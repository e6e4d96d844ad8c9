/**
 * connect near RLIMIT_NOFILE: with 0 to 8 numbers free in the fd table,
 * connect on every transport either makes a working connection or rejects
 * with a SystemError carrying EMFILE and the call that failed, never with
 * EPIPE from a HELLO sent to a process that was never spawned, nor with a
 * plain Node error (a worker whose thread or entry file could not start);
 * and nothing of fdbridge's stays open. Each run is a process of its own
 * under `prlimit --nofile=64:64` (test/attack/fixtures/connect-near-limit.js)
 * going through the free counts in a generated order.
 *
 * Node's own leftover: on Node 20, a Worker whose uv_loop_init fails with
 * EMFILE leaves its epoll fd open (a bare `new Worker` in a full table does
 * the same, with no fdbridge loaded; Node 24 does not). That one entry, an
 * `anon_inode:[eventpoll]` that appeared where connect failed in
 * uv_loop_init, is the only change to the table let through.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { openFdTable } from '../../src/fd';
import { fdTableSettles, runFixtureAtFdLimit, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';

const FIXTURE = join(__dirname, 'fixtures', 'connect-near-limit.js');
const FREE_COUNTS = [0, 1, 2, 3, 4, 5, 6, 7, 8];

interface ErrorSeen {
  class: string;
  code: string | null;
  errno: number | null;
  syscall: string | null;
  message: string;
}

interface Entry {
  fd: number;
  before: string | null;
  after: string | null;
}

interface Seen {
  free: number;
  outcome: { connected: true; closeError?: ErrorSeen } | { connected: false; error: ErrorSeen };
  changed: Entry[];
}

/** A connection made and closed cleanly, or EMFILE as a SystemError naming its call; anything else in full. */
function outcomeOf(seen: Seen): string {
  const o = seen.outcome;
  if (o.connected) return o.closeError ? `connected, close failed: ${JSON.stringify(o.closeError)}` : 'connected';
  const e = o.error;
  if (e.class === 'SystemError' && e.code === 'EMFILE' && e.errno === -24 && typeof e.syscall === 'string' && e.syscall !== '') return 'SystemError EMFILE';
  return JSON.stringify(e);
}

/** The table's changes but Node's own epoll fd of a Worker whose uv_loop_init failed (see above). */
function fdbridgeChanges(seen: Seen): Entry[] {
  const nodeLoopFailed = !seen.outcome.connected && seen.outcome.error.syscall === 'uv_loop_init';
  let nodesOwn = nodeLoopFailed ? 1 : 0;
  return seen.changed.filter((c) => {
    if (nodesOwn > 0 && c.before === null && c.after === 'anon_inode:[eventpoll]') {
      nodesOwn--;
      return false;
    }
    return true;
  });
}

let helper: HelperProcess | undefined;
let dir = '';
let socketPath = '';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-connect-near-limit-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test.each(['direct', 'child', 'pidfd', 'worker', 'helper'])(
  'generated: %s connect with 0 to 8 fds free connects or rejects with SystemError EMFILE, and leaves nothing of its own open',
  async (transport) => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray(FREE_COUNTS, { minLength: FREE_COUNTS.length }), async (free) => {
        const seen = await runFixtureAtFdLimit<Seen[]>(64, FIXTURE, {
          transport,
          free,
          settleMs: scaled(3000),
          ...(transport === 'helper' ? { socketPath } : {}),
        });
        expect(Array.isArray(seen) ? seen.map((s) => ({ free: s.free, outcome: outcomeOf(s), changed: fdbridgeChanges(s) })) : seen).toEqual(
          free.map((n) => ({ free: n, outcome: expect.stringMatching(/^(connected|SystemError EMFILE)$/), changed: [] })),
        );
      }),
      { numRuns: 2 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(300_000),
);
