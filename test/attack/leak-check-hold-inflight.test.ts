/**
 * Linux counts every fd queued in a Unix socket (sent with SCM_RIGHTS, not
 * yet received) as in flight for the user who sent it, and refuses that
 * user's further SCM_RIGHTS sends (ETOOMANYREFS) once the count passes the
 * sender's RLIMIT_NOFILE, unless it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN.
 * A leak check must not change what the code it checks can do: the code
 * under test -- fd-passing code, the kind fdbridge's users test -- must be
 * able to put exactly as many fds in flight inside expectNoFdLeaks as
 * outside it, whatever files the checking process has open.
 *
 * Each generated case runs one Node process as another user (its own uid,
 * so that no other test's sends count against it) with a low
 * RLIMIT_NOFILE, opens a mix of files, pipes, socket pairs and directories,
 * and counts how many fds it can queue (64 per sendmsg into socket pairs it
 * never reads) until the kernel refuses with ETOOMANYREFS: once outside a
 * check, once as the code under test inside one, once outside again. Needs
 * root (to run as another uid without CAP_SYS_RESOURCE).
 */
import fc from 'fast-check';

import { DIST_SRC, isRoot, ownUid, spawnAsUid } from '../util/nobody';
import { assertGuarded } from '../util/wait-for';

/** A uid of its own: fds in flight are counted per user, across all of that user's processes. */
const UID = ownUid(0);
const LIMIT = 1024;

type Kind = 'file' | 'dir' | 'pipe' | 'socket';

/**
 * The other user's script: opens `counts` of each kind, then prints how many
 * fds it could put in flight outside, inside and again outside a check.
 */
function script(counts: Record<Kind, number>): string {
  return `
const { closeFd, expectNoFdLeaks, makePipe } = require(${JSON.stringify(`${DIST_SRC}/index.js`)});
const { rawSocketPair, sendNow } = require(${JSON.stringify(`${DIST_SRC}/testing.js`)});
const { openSync } = require('node:fs');
const counts = ${JSON.stringify(counts)};
const open = [];
for (let i = 0; i < counts.file; i++) open.push(openSync(${JSON.stringify(`${DIST_SRC}/index.js`)}, 'r'));
for (let i = 0; i < counts.dir; i++) open.push(openSync('/', 'r'));
for (let i = 0; i < counts.pipe; i++) open.push(...makePipe());
for (let i = 0; i < counts.socket; i++) open.push(...rawSocketPair('stream'));
const probe = open.length > 0 ? open[0] : openSync('/dev/null', 'r');
// How many fds this user can queue now: 64 a message until ETOOMANYREFS (a
// full socket buffer, EAGAIN, moves on to a new pair); then all of it closed.
function inFlight() {
  const pairs = [rawSocketPair('stream')];
  const batch = new Array(64).fill(probe);
  let queued = 0;
  try {
    for (;;) {
      try {
        sendNow(pairs[pairs.length - 1][0], Buffer.from('x'), batch);
        queued += batch.length;
      } catch (err) {
        if (err.errno === -109 /* ETOOMANYREFS: libuv has no name for it */) return queued;
        if (err.code !== 'EAGAIN') throw err;
        pairs.push(rawSocketPair('stream'));
      }
    }
  } finally {
    for (const [a, b] of pairs) { closeFd(a); closeFd(b); }
  }
}
(async () => {
  const outside = inFlight();
  let inside = -1;
  await expectNoFdLeaks(() => { inside = inFlight(); }, { settleMs: 0 });
  const after = inFlight();
  console.log(JSON.stringify({ result: { outside, inside, after, open: open.length } }));
})().catch((err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exitCode = 1; });
`;
}

const countsArb = fc.record({
  file: fc.integer({ min: 0, max: 300 }),
  dir: fc.integer({ min: 0, max: 100 }),
  pipe: fc.integer({ min: 0, max: 100 }),
  socket: fc.integer({ min: 0, max: 100 }),
});

describe('fds in flight inside a leak check', () => {
  if (!isRoot) {
    test.skip('the code under test can queue as many fds in flight inside a check as outside (needs root to run as another uid)', () => undefined);
    // eslint-disable-next-line no-console
    console.log('leak-check-hold-inflight.test: not running as root, so the other-uid test is skipped');
    return;
  }

  test('the code under test can queue as many fds in flight inside a check as outside, whatever the process has open', async () => {
    await assertGuarded(
      fc.asyncProperty(countsArb, async (counts) => {
        const proc = spawnAsUid(UID, 'prlimit', [`--nofile=${LIMIT}:${LIMIT}`, process.execPath, '-e', script(counts)]);
        const { code, stdout, stderr } = await proc.exited();
        const line = stdout.split('\n').find((l) => l.startsWith('{')) ?? '{}';
        const { result, error } = JSON.parse(line) as { result?: { outside: number; inside: number; after: number; open: number }; error?: string };
        expect({ code, error, stderr, printed: result !== undefined }).toEqual({ code: 0, error: undefined, stderr: '', printed: true });
        if (result === undefined) return;
        const open = counts.file + counts.dir + 2 * (counts.pipe + counts.socket);
        // The limit is the user's fds in flight, not its open fds: past RLIMIT_NOFILE outside a check.
        expect(result.open).toBe(open);
        expect(result.outside).toBeGreaterThanOrEqual(LIMIT);
        // The same inside the check, and after it.
        expect({ inside: result.inside, after: result.after }).toEqual({ inside: result.outside, after: result.outside });
      }),
      { seed: Number(process.env.FDBRIDGE_INFLIGHT_SEED ?? 20261201), numRuns: Number(process.env.FDBRIDGE_INFLIGHT_RUNS ?? 6) },
    );
  });
});
