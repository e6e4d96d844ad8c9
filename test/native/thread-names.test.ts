/**
 * Every thread the addon starts names itself as it starts (/proc/<pid>/task/
 * <tid>/comm): a log lane's "fdbridge-log", the background closer's
 * "fdbridge-close". A thread otherwise inherits the name of the thread that
 * made it, so a closer thread that a lane thread started (its copy's close
 * handed over with no closer thread idle) would be called "fdbridge-log" and,
 * as the closer keeps its last thread, look like a lane thread that never
 * ended to anyone who counts them by name (a test, a user's diagnosis).
 *
 * Each case runs in a process of its own, so that the closer has no thread
 * yet when the first lane write ends: its first closer thread is started
 * by a lane thread.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

import fc from 'fast-check';

import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { HangGuard } from '../util/wait-for';
import { collect, distFile, lastJson } from './helpers';

/**
 * The child: for each batch, its writes (into /dev/null, each on its owner's
 * lane) at once, until every callback came and the lanes count no thread;
 * then, once no thread is called fdbridge-log (never, where a closer thread
 * bears that name: the parent's hang guard ends the wait), the names of
 * this process's threads. Prints { results, names } as JSON.
 */
const CHILD = `
const { native } = require(${JSON.stringify(distFile('src/native.js'))});
const fs = require('node:fs');
const batches = JSON.parse(process.argv[1]);
const names = () => fs.readdirSync('/proc/self/task').flatMap((t) => {
  try { return [fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim()]; } catch { return []; }
});
(async () => {
  const fd = fs.openSync('/dev/null', 'w');
  const results = [];
  for (const batch of batches) {
    const group = native.laneGroup();
    results.push(...(await Promise.all(batch.map(({ owner, bytes }) =>
      new Promise((resolve) => native.laneWrite(fd, Buffer.alloc(bytes, 'x'), owner, group, resolve))))));
    while (native.laneWriters().threads > 0) await new Promise((r) => setTimeout(r, 5));
  }
  while (native.backgroundClosesPending() > 0) await new Promise((r) => setTimeout(r, 5));
  fs.closeSync(fd);
  // A lane thread leaves the count before it has ended: its name goes with it.
  while (names().includes('fdbridge-log')) await new Promise((r) => setTimeout(r, 5));
  console.log(JSON.stringify({ results, names: names() }));
})();
`;

/** `pid`'s threads now, each as tid:name:system call (for a wait's report). */
function threadsOf(pid: number | undefined): string {
  try {
    return readdirSync(`/proc/${String(pid)}/task`)
      .map((tid) => {
        try {
          const at = `/proc/${String(pid)}/task/${tid}`;
          return `${tid}:${readFileSync(`${at}/comm`, 'utf8').trim()}:${readFileSync(`${at}/syscall`, 'utf8').split(' ')[0]}`;
        } catch {
          return `${tid}:ended`;
        }
      })
      .join(' ');
  } catch {
    return `pid ${String(pid)}: gone`;
  }
}

test('generated: once the lanes have no thread left, no thread is called fdbridge-log; the closer threads lane threads started are fdbridge-close', async () => {
  const before = openFdTable(process.pid);
  const write = fc.record({ owner: fc.integer({ min: 1, max: 3 }), bytes: fc.integer({ min: 0, max: 70_000 }) });
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(write, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 3 }), async (batches) => {
      const guard = new HangGuard(20_000);
      const child = spawn(process.execPath, ['-e', CHILD, JSON.stringify(batches)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const done = collect(child);
      let r;
      try {
        // Fails (TimeoutError) where a closer thread inherits its creator's
        // name: the first close is handed over by a lane thread, and the
        // closer keeps that thread.
        r = await guard.within(done, 'the child writing its batches until no thread of it is called fdbridge-log', () => threadsOf(child.pid));
      } catch (err) {
        child.kill('SIGKILL');
        await done;
        throw err;
      }
      expect({ code: r.code, signal: r.signal, stderr: r.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
      const { results, names } = lastJson<{ results: number[]; names: string[] }>(r);
      expect(results).toEqual(batches.flat().map((w) => w.bytes));
      // The closer's threads, all named so (it keeps its last one).
      const ours = names.filter((name) => name.startsWith('fdbridge-'));
      expect(ours).toContain('fdbridge-close');
      expect(ours.filter((name) => name !== 'fdbridge-close')).toEqual([]);
    }),
    { numRuns: 8, endOnFailure: true },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120_000);
