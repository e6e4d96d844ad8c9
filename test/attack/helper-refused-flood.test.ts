/**
 * A uid the helper daemon does not serve can still connect to it (an
 * abstract name has no permissions; a socket file may be open to a group).
 * Every such connection is accepted, told REFUSED and closed: it must cost
 * the daemon nothing that its clients need. The daemon promises that its fd
 * limits keep it below its own RLIMIT_NOFILE, "so accept4 and recvmsg never
 * start failing for everyone"; a flood of connections it refuses must not
 * break that either. Run as root, the attackers as nobody; the daemon with
 * the low limit a service may have (1024).
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { connect, LOG_COMMAND, makeMemfd, closeFd } from '../../src';
import { exitOf, CLI } from '../util/processes';
import { DIST_SRC, isRoot, runAsNobody, type NobodyProcess } from '../util/nobody';

const describeRoot = isRoot ? describe : describe.skip;

/** Connects to @NAME as fast as it can for HOLD ms, keeping every connection open, then prints {made}. */
const FLOOD = (name: string, holdMs: number): string => `
  const { rawConnect } = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
  const held = [];
  const end = Date.now() + ${holdMs};
  let eagain = 0;
  const burst = () => {
    for (let i = 0; i < 100; i++) {
      try { held.push(rawConnect('seqpacket', ${JSON.stringify(name)}, true)); } catch (e) { eagain++; break; }
    }
    if (Date.now() < end && held.length < 6000) setImmediate(burst);
    else console.log(JSON.stringify({ made: held.length, eagain }));
  };
  console.log(JSON.stringify({ started: true }));
  burst();
  setInterval(() => {}, 1000);`;

describeRoot('connections from a uid the daemon refuses (attackers: nobody)', () => {
  test('a flood of refused connections never takes the daemon to its fd limit, and its clients are served meanwhile', async () => {
    const name = `fdbridge-attack-refused-${process.pid}`;
    const daemon = spawn('prlimit', ['--nofile=1024:1024', process.execPath, CLI, 'helper', '--socket', `@${name}`, '--verbose', '--exit-with-parent', String(process.pid)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    daemon.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const attackers: NobodyProcess[] = [];
    const memfd = makeMemfd('refused-flood');
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        daemon.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('listening on')) resolve();
        });
        void exitOf(daemon).then(({ code }) => reject(new Error(`helper exited with ${code} before listening: ${log}`)));
      });
      // A client already served when the flood starts, and what it holds.
      const client = await connect('helper', { command: LOG_COMMAND, socketPath: `@${name}`, timeoutMs: 10000 });
      const fdsAtStart = readdirCount(daemon.pid as number);
      for (let i = 0; i < 2; i++) attackers.push(runAsNobody(FLOOD(name, 4000)));
      for (const a of attackers) await a.line('started');
      let peak = fdsAtStart;
      const outcomes: string[] = [];
      let flooding = true;
      const floodDone = Promise.all(attackers.map((a) => a.line<{ made: number }>('made'))).finally(() => (flooding = false));
      while (flooding) {
        peak = Math.max(peak, readdirCount(daemon.pid as number));
        try {
          const [there] = await client.dupFileDescriptors([memfd]);
          await client.call('redirectLogToFd', there);
          const other = await connect('helper', { command: LOG_COMMAND, socketPath: `@${name}`, timeoutMs: 10000 });
          await other.close();
          outcomes.push('served');
        } catch (err) {
          outcomes.push(`${(err as Error).name}: ${(err as Error).message}`);
        }
      }
      const made = (await floodDone).map((m) => m.made);
      await client.close();
      // The attackers did connect, many times over what the daemon could hold for a second each.
      expect(made.reduce((a, b) => a + b, 0)).toBeGreaterThan(1000);
      expect({
        failedClientSteps: outcomes.filter((o) => o !== 'served'),
        emfile: log.split('\n').filter((l) => /EMFILE/.test(l)).slice(0, 3),
        // What refused peers cost the daemon at most, in fds, over what it had with one client:
        // well inside the 512 it keeps for itself (those it holds for them to read REFUSED, and
        // the closes of those it let go, which the background closer may not have reached yet).
        peakOverStart: peak - fdsAtStart <= 256 ? 'at most 256' : peak - fdsAtStart,
      }).toEqual({ failedClientSteps: [], emfile: [], peakOverStart: 'at most 256' });
    } finally {
      for (const a of attackers) a.kill();
      for (const a of attackers) await a.exited();
      closeFd(memfd);
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
      await exitOf(daemon);
    }
  }, 120000);
});

/** How many fds process `pid` has open. */
function readdirCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}
