/**
 * `fdbridge run` under a low RLIMIT_NOFILE (a CI container's ulimit -n):
 * each limit that lets Node start must end the run with an exit status
 * (rows failing with EMFILE, or one line saying what could not be done),
 * never with a signal. When spawn(2) of a command's process fails with
 * EMFILE, Node's ChildProcess keeps a handle with no pid: a kill() of it
 * then sends the signal to whatever pid the handle's memory holds, 0
 * (kill(0, SIGKILL): this process's whole process group, the shell and CI
 * job that ran it) or any other process. Each run here is started in a
 * session of its own, so such a kill takes nothing else with it.
 */
import { spawn } from 'node:child_process';

import { CLI } from '../util/processes';

/** Runs the CLI under `prlimit --nofile=N` in a new session; resolves with how it ended and its last output. */
function runLimited(nofile: number, args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; tail: string }> {
  return new Promise((resolve) => {
    const child = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, process.execPath, CLI, ...args], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('close', (code, signal) => resolve({ code, signal, tail: out.trim().split('\n').slice(-3).join('\n') }));
  });
}

// Node itself needs about 18 fds to start; 26 is enough for a child row to pass here.
test.each([20, 22, 23, 24, 25, 26])('run --transport child,helper at RLIMIT_NOFILE %i ends with an exit status and a typed reason, never a signal', async (nofile) => {
  for (const transport of ['child', 'helper']) {
    const r = await runLimited(nofile, ['run', '--transport', transport, '--scenario', 'duplicate-pipe']);
    expect({ transport, signal: r.signal, exitedWith: [0, 1, 3].includes(r.code ?? -1) ? 'an exit status' : r.code, untyped: /TypeError|Cannot read properties/.test(r.tail) ? r.tail : 'no' }).toEqual({
      transport,
      signal: null,
      exitedWith: 'an exit status',
      untyped: 'no',
    });
  }
}, 120000);
