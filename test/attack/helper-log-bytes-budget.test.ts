/**
 * The log lines a helper daemon keeps until they are written: an allowed
 * user (nobody) redirects the log of a few connections into pipes it never
 * reads and logs lines of up to the largest a call carries (196,600 bytes
 * of JSON) on them. Unbounded, each connection's lines wait in the daemon
 * one behind the other, up to 64 calls a connection and 64 connections a
 * uid (about 800 MB a uid). The lines of one uid waiting together count
 * against --max-log-bytes-per-uid: past it a line is refused with
 * QuotaExceededError ('uidLogBytes'), nothing of it kept, no copy of the
 * fd made; another uid's lines are written meanwhile; once nobody's
 * connections end, every byte is given back and the daemon's fd table is
 * as before. Run as root, the attacker as nobody.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, DEFAULT_HELPER_LIMITS, LOG_COMMAND } from '../../src';
import { openFdTable } from '../../src/fd';
import { statusOf, statusWhen } from '../util/helper-status';
import { DIST_SRC, isRoot, NOBODY, runAsNobody, type NobodyProcess } from '../util/nobody';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';

/**
 * nobody's client: `connections` log connections, each into a pipe that
 * takes nothing more (filled through a non-blocking open file of its write
 * end) and is never read; line i, of sizes[i] bytes, goes on connection
 * i % connections, and a round trip on that connection follows it, so the
 * daemon takes the lines in this order; it prints "sent" then. Then it
 * waits until `refusals` lines have failed, and prints which did, and how.
 */
const NOBODY_SCRIPT = (socketPath: string, sizes: number[], connections: number, refusals: number): string => `
const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
const fs = require('node:fs');
(async () => {
  const conns = [];
  for (let i = 0; i < ${connections}; i++) {
    const c = await L.connect('helper', { command: L.LOG_COMMAND, socketPath: ${JSON.stringify(socketPath)}, trustPeer: { uids: [0] } });
    const [r, w] = L.makePipe(); // r is never read
    const filler = fs.openSync('/proc/self/fd/' + w, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    try { for (;;) fs.writeSync(filler, Buffer.alloc(65536)); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
    fs.closeSync(filler);
    await c.call('redirectLogToFd', await c.dupFileDescriptor(w));
    L.closeFd(w);
    conns.push(c);
  }
  const failed = [];
  const sizes = ${JSON.stringify(sizes)};
  for (let i = 0; i < sizes.length; i++) {
    const c = conns[i % conns.length];
    c.call('log', 'n'.repeat(sizes[i])).catch((e) => failed.push({ line: i, name: e.name, code: e.code, quota: e.quota, message: e.message }));
    await c.call('where');
  }
  console.log(JSON.stringify({ sent: sizes.length }));
  while (failed.length < ${refusals}) await new Promise((r) => setTimeout(r, 10));
  await Promise.all(conns.map((c) => c.call('where')));
  console.log(JSON.stringify({ failed: failed.sort((a, b) => a.line - b.line) }));
  setInterval(() => {}, 1000);
})().catch((e) => console.log(JSON.stringify({ failed: 'script', error: String(e) })));
`;

/** Which lines the budget refuses, in the order the daemon takes them (each line is its text and a newline). */
function model(sizes: readonly number[], budget: number): { refused: number[]; held: number } {
  let held = 0;
  const refused: number[] = [];
  sizes.forEach((size, i) => {
    if (held + size + 1 > budget) refused.push(i);
    else held += size + 1;
  });
  return { refused, held };
}

let dir: string;
let daemon: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-log-bytes-'));
  socketPath = `@fdbridge-attack-log-bytes-${process.pid}`;
  daemon = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY)]);
});

afterAll(async () => {
  await daemon?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

(isRoot ? test : test.skip)(
  "generated: one uid's log lines waiting in pipes it never reads are refused past its budget, another uid's are written, and every byte and fd is given back",
  async () => {
    const budget = DEFAULT_HELPER_LIMITS.maxLogBytesPerUid;
    const daemonBefore = openFdTable(daemon.pid);
    const before = openFdTable(process.pid);
    let run = 0;
    await assertGuarded(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 196_000 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 4 }),
        async (sizes, connections) => {
          const expected = model(sizes, budget);
          let nobody: NobodyProcess | undefined = runAsNobody(NOBODY_SCRIPT(socketPath, sizes, connections, expected.refused.length));
          try {
            expect(await nobody.line('sent')).toEqual({ sent: sizes.length });
            // Every line taken: those within the budget are held, the others were never counted.
            expect((await statusOf(socketPath)).uids.find((u) => u.uid === NOBODY)?.logBytes).toBe(expected.held);
            const { failed } = await nobody.line<{ failed: Array<{ line: number; name: string; code: string; quota: string; message: string }> }>('failed');
            expect(failed.map((f) => f.line)).toEqual(expected.refused);
            for (const f of failed) {
              expect(f).toMatchObject({ name: 'QuotaExceededError', code: 'ERR_FDBRIDGE_QUOTA', quota: 'uidLogBytes' });
              expect(f.message).toMatch(new RegExp(`^quota uidLogBytes: a log line of ${sizes[f.line]! + 1} bytes would make \\d+ bytes of the log lines of uid ${NOBODY} waiting`));
            }

            // Root's lines are written meanwhile, the largest included.
            const file = join(dir, `root-${run++}.log`);
            const fd = openSync(file, 'a');
            const root = await connect('helper', { command: LOG_COMMAND, socketPath });
            try {
              await root.call('redirectLogToFd', await root.dupFileDescriptor(fd));
              await root.call('log', 'r'.repeat(196_000));
              await root.call('log', 'root');
            } finally {
              closeSync(fd);
              await root.close();
            }
            expect(readFileSync(file, 'utf8')).toBe(`${'r'.repeat(196_000)}\nroot\n`);

            nobody.kill(); // its connections end: the lines waiting fail, their bytes and copies are given back
            await nobody.exited();
            nobody = undefined;
            const after = await statusWhen(socketPath, (st) => !st.uids.some((u) => u.uid === NOBODY) && st.logBytes === 0);
            expect(after.logBytes).toBe(0);
            expect(await fdTableSettles(daemon.pid, daemonBefore)).toBe('');
          } finally {
            if (nobody) {
              nobody.kill();
              await nobody.exited();
            }
          }
        },
      ),
      // Enough of the largest lines on 3 connections to pass the budget; one line of each size at its edge.
      { numRuns: 5, examples: [[new Array<number>(30).fill(196_000), 3], [[1, 196_000, 1], 1]] },
    );
    const s = await statusOf(socketPath);
    expect(s.stats.quotaHits.uidLogBytes).toBeGreaterThanOrEqual(9); // the first example's: 30 lines of 196,001 bytes, 21 fit in 4 MiB
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(300000),
);
