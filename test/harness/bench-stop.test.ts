/**
 * `fdbridge bench` stopped mid-measurement. SIGTERM: it exits 143, every
 * process it started (the helper daemon, the C frame server, the anchor
 * child, the child and pidfd commands) exits, and nothing it made is left in
 * its TMPDIR. SIGKILL: those processes still exit (the daemon watches its
 * parent, the frame server reads the end of file of its stdin pipe, the
 * others lose their socket or IPC channel), and the two servers remove
 * their sockets.
 *
 * No step waits for a time: each waits for a line the bench prints, or for
 * a process's exit (its pidfd).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { childProcessesOf, CLI, exitOf, type SeenChild } from '../util/processes';

interface MidBench {
  bench: ChildProcess;
  /** Every process the bench had started when its first round began, with its command line. */
  children: SeenChild[];
}

/** Starts a small `fdbridge bench` and resolves as its first round of measurements begins. */
async function benchUntilFirstRound(tmp: string): Promise<MidBench> {
  const bench = spawn(process.execPath, [CLI, 'bench', '--time', '40', '--rounds', '2', '--count', '1000', '--clients', '1', '--no-relay', '--no-python'], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const exited = exitOf(bench);
  await new Promise<void>((resolve, reject) => {
    bench.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('fdbridge bench: round 1/2')) resolve();
    });
    void exited.then((how) => reject(new Error(`the bench ended (${JSON.stringify(how)}) before its first round:\n${err}`)));
  });
  return { bench, children: childProcessesOf(bench.pid as number) };
}

let tmp: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'fdbridge-bench-stop-'));
});
afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

test('SIGTERM mid-round: exit 143, every process it started exits, nothing left in TMPDIR', async () => {
  const { bench, children } = await benchUntilFirstRound(tmp);
  expect(children.map((c) => c.cmdline)).toEqual(
    expect.arrayContaining([expect.stringContaining(' helper --socket '), expect.stringContaining('frame_bench server --socket ')]),
  );
  bench.kill('SIGTERM');
  expect(await exitOf(bench)).toEqual({ code: 143, signal: null });
  await Promise.all(children.map((c) => c.exited));
  expect(readdirSync(tmp)).toEqual([]);
});

test('SIGKILL mid-round: every process it started exits; the daemon and the frame server remove their sockets', async () => {
  const { bench, children } = await benchUntilFirstRound(tmp);
  const servers = children.filter((c) => / helper --socket |frame_bench server --socket /.test(c.cmdline));
  expect(servers).toHaveLength(2);
  const sockets = servers.map((c) => /--socket (\S+)/.exec(c.cmdline)?.[1] as string);
  for (const s of sockets) expect(existsSync(s)).toBe(true);
  bench.kill('SIGKILL');
  expect(await exitOf(bench)).toEqual({ code: null, signal: 'SIGKILL' });
  // No deadline of their own: one that outlives the bench runs into the test's timeout.
  await Promise.all(children.map((c) => c.exited));
  for (const s of sockets) expect(existsSync(s)).toBe(false);
});
