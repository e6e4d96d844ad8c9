/**
 * A thread of the row process (harness/run-child.ts) that ends it when the
 * run that started it is gone and its main thread is blocked.
 *
 * When the run exits without stopping its row process (SIGKILL, the OOM
 * killer), the row process's IPC channel closes and its main thread stops
 * the row, the helper daemon, and removes the run's directories. A main
 * thread blocked by a scenario (the reason the run watched it) never sees
 * that: nobody else is left to kill it. This thread has an event loop of
 * its own: it watches the run's pid (a pidfd, src/parent-watch.ts), and
 * once the run is gone it pings the main thread; if a ping goes unanswered
 * for UNRESPONSIVE_MS, it removes the directories itself, SIGKILLs the row
 * process's children (the helper daemon, command processes) and then the
 * row process.
 *
 * workerData: { runPid }. Messages from the main thread: { dirs } (the
 * directories to remove then, replacing the last list), { pong }; to it:
 * { watching } once it watches (its fds are open: none opens later), { ping }.
 */
import { rmSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

import { watchParent } from '../src/parent-watch';
import { killDescendants, UNRESPONSIVE_MS } from './run-supervisor';

/** What the main thread tells this one. */
export type ToRowWatch = { type: 'dirs'; dirs: string[] } | { type: 'pong' };

const port = parentPort;
if (port === null) throw new Error('harness/run-child-watch.js runs as a worker thread of the row process');
const { runPid } = workerData as { runPid: number };
let dirs: string[] = [];
let heard = false;

port.on('message', (m: ToRowWatch) => {
  if (m.type === 'dirs') dirs = m.dirs;
  else heard = true;
});

function endRowProcess(): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  killDescendants(process.pid);
  process.kill(process.pid, 'SIGKILL');
}

watchParent(runPid, () => {
  port.postMessage({ type: 'ping' });
  // The main thread ends the process itself once it sees the run gone, if it can.
  setInterval(() => {
    if (!heard) endRowProcess();
    heard = false;
    port.postMessage({ type: 'ping' });
  }, UNRESPONSIVE_MS);
});
// Its fds (the pidfd's duplicate) are open now: the main thread takes its baselines after this.
port.postMessage({ type: 'watching' });
