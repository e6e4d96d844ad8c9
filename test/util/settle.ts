/**
 * Waiting for an fd table to come back after closes that happen
 * asynchronously (a child's pipes, a worker's exit, a daemon's closer
 * threads), without a wall-clock deadline.
 *
 * How long a table may stay different before that counts as a leak is
 * measured in time the process doing the closes had nothing to do: wall
 * time less what its threads spent running or waiting for a CPU (their
 * /proc/PID/task/TID/schedstat). On a loaded machine a daemon or a closer
 * thread can wait seconds in the run queue with nothing wrong; a real
 * leak is a table that stays different while the process sits idle.
 *
 * Real time from the modules (perf_hooks, timers/promises): jest's fake
 * timers replace the test's global setTimeout, Date and performance.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { diffFdTables, openFdTable, type FdTable, type FdTableDiff } from '../../src/fd';

/** Per thread of `pid` (but `exclude`): ns spent running plus ns spent waiting to run, since it started. */
function busyNs(pid: number, exclude: number | undefined): Map<string, number> {
  const busy = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return busy; // the process is gone: openFdTable says so, in its own words
  }
  for (const tid of tids) {
    if (Number(tid) === exclude) continue;
    try {
      const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
      busy.set(tid, (run ?? 0) + (wait ?? 0));
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return busy;
}

/**
 * Idle time of process `pid`, summed over the looks taken at it. The
 * calling thread is left out when `pid` is this process (it is the one
 * looking); its own event loop's closes are still given their turns: a look
 * adds at most CAP_MS, so a long wait for a CPU here does not use up the
 * time either.
 */
class IdleClock {
  static readonly CAP_MS = 100;
  readonly #pid: number;
  readonly #exclude: number | undefined;
  #busy: Map<string, number>;
  #at: number;
  idleMs = 0;

  constructor(pid: number) {
    this.#pid = pid;
    this.#exclude = pid === process.pid ? process.pid : undefined;
    this.#busy = busyNs(pid, this.#exclude);
    this.#at = performance.now();
  }

  look(): void {
    const at = performance.now();
    const busy = busyNs(this.#pid, this.#exclude);
    let busyMs = 0;
    for (const [tid, ns] of busy) busyMs += (ns - (this.#busy.get(tid) ?? 0)) / 1e6;
    this.idleMs += Math.max(0, Math.min(at - this.#at, IdleClock.CAP_MS) - busyMs);
    this.#busy = busy;
    this.#at = at;
  }
}

/**
 * Waits until the open-fd table of `pid` equals `baseline`, or until `pid`
 * has been idle for `idleMs` (see above) with it still different; returns
 * the difference left (empty once it settled).
 */
export async function settleFdTable(pid: number, baseline: FdTable, idleMs: number, pollMs = 20): Promise<FdTableDiff> {
  const clock = new IdleClock(pid);
  for (;;) {
    const diff = diffFdTables(baseline, openFdTable(pid));
    if (diff.opened.length === 0 && diff.closed.length === 0) return diff;
    clock.look();
    if (clock.idleMs > idleMs) return diff;
    await sleep(pollMs);
  }
}
