/**
 * The helper daemon is shared, and "no one uid can lock the others out"
 * (README, "The helper daemon"). Its built-in `log` command writes each
 * line on libuv's thread pool (4 threads) into the fd its client
 * redirected it to. An allowed other user (nobody, `--allow-uid 65534`)
 * redirects the log of four connections into pipes it never reads, and
 * logs more than a pipe holds on each: every pool thread then waits in a
 * pipe write for as long as nobody likes, and root's own `log()` (into a
 * file root opened) is not written, nor answered, until nobody lets go.
 * The closer has per-uid shares and a reserve for such cases; the log's
 * writes have none (the README says other clients' lines "wait behind
 * four such": it is the lock-out the per-uid limits exist to prevent).
 *
 * The scene: a daemon of this test's own allows nobody; nobody's script
 * makes four log connections into pipes it never reads and logs 4 lines
 * of 60,000 bytes on each; the test waits until the daemon has four
 * threads in a pipe write (its /proc task list: deterministic, whatever
 * the load), or both threads of nobody's log lane waiting for its pipes
 * to take more. Then root logs one line into a file, and meanwhile makes 100
 * status round trips with the daemon (served: the event loop is free).
 * Expected: root's line was answered by the time the daemon has served
 * those. Fails: it is answered only once nobody is killed (its pipes'
 * readers gone, the writes fail with EPIPE).
 */
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, LOG_COMMAND } from '../../src';
import { statusOf } from '../util/helper-status';
import { DIST_SRC, isRoot, runAsNobody, type NobodyProcess } from '../util/nobody';
import { startHelperProcess, type HelperProcess } from '../util/processes';

const NOBODY_SCRIPT = (socketPath: string): string => `
const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
(async () => {
  for (let i = 0; i < 4; i++) {
    const c = await L.connect('helper', { command: L.LOG_COMMAND, socketPath: ${JSON.stringify(socketPath)}, trustPeer: { uids: [0] } });
    const [r, w] = L.makePipe(); // r is never read
    await c.call('redirectLogToFd', await c.dupFileDescriptor(w));
    L.closeFd(w);
    for (let k = 0; k < 4; k++) c.call('log', 'y'.repeat(60000)).catch(() => {});
  }
  console.log(JSON.stringify({ ready: true }));
  setInterval(() => {}, 1000);
})().catch((e) => { console.log(JSON.stringify({ ready: false, error: String(e) })); });
`;

/**
 * How many of `pid`'s threads wait in a pipe write now (`pipeWrites`: a
 * write on a pool thread), and how many of its log lane threads (named
 * fdbridge-log) wait in poll for a pipe to take more (`laneWaits`).
 */
function blockedWrites(pid: number): { pipeWrites: number; laneWaits: number } {
  const n = { pipeWrites: 0, laneWaits: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const wchan = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8');
      if (/pipe_write|pipe_wait_writable/.test(wchan)) n.pipeWrites++;
      else if (/poll/.test(wchan) && readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'fdbridge-log') n.laneWaits++;
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return n;
}

/**
 * Whether nobody's writes hold every thread they can: the pool's 4 (each in
 * a pipe write), or its uid's log lane threads (laneWriters().perOwner, 2,
 * each waiting for room in a pipe).
 */
function nobodyHoldsAll(pid: number): boolean {
  const n = blockedWrites(pid);
  return n.pipeWrites >= 4 || n.laneWaits >= 2;
}

(isRoot ? test : test.skip)("an allowed other user's log writes into pipes it never reads do not hold back root's log line", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-log-pool-'));
  const socketPath = `@fdbridge-attack-log-pool-${process.pid}`;
  let daemon: HelperProcess | undefined;
  let nobody: NobodyProcess | undefined;
  const file = openSync(join(dir, 'root.log'), 'a');
  try {
    daemon = await startHelperProcess(socketPath, ['--allow-uid', '65534']);
    nobody = runAsNobody(NOBODY_SCRIPT(socketPath));
    expect(await nobody.line('ready')).toEqual({ ready: true });
    while (!nobodyHoldsAll(daemon.pid)) await new Promise((r) => setTimeout(r, 20));

    const root = await connect('helper', { command: LOG_COMMAND, socketPath });
    try {
      await root.call('redirectLogToFd', await root.dupFileDescriptor(file));
      let answered = false;
      const line = root.call('log', 'root line').then(() => {
        answered = true;
      });
      for (let i = 0; i < 100; i++) await statusOf(socketPath); // the daemon serves root meanwhile
      const answeredWhileNobodyHeld = answered;
      nobody.kill(); // its pipes' readers go: the pool's writes fail with EPIPE
      await nobody.exited();
      nobody = undefined;
      await line;
      // Expected true. Fails with false: root's line waited behind nobody's writes.
      expect(answeredWhileNobodyHeld).toBe(true);
    } finally {
      await root.close();
    }
  } finally {
    if (nobody) {
      nobody.kill();
      await nobody.exited();
    }
    closeSync(file);
    if (daemon) await daemon.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}, 120000);
