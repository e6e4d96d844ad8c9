/**
 * The remote transport's channel is lost mid-transfer: the server's parent
 * (the local `sh` the harness uses as the via, or sshd's session through
 * ssh) is SIGKILLed while bytes stream both ways through relayed pipes and
 * calls and duplications are pending. Every pending request rejects with
 * PeerExitedError naming the signal, new requests fail at once, every
 * relayed fd on this side is closed (the leak oracle checks the client's
 * table), and the server, whose stdin ended, closes its command and exits.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

import { makePipe, PeerExitedError, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, sleep } from './support/common';
import { killWithRequestsPending } from './support/faults';

/** The parent pid of `pid` (/proc/PID/stat, the field after the state). */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

const scenario: Scenario = {
  name: 'kill-via-mid-transfer',
  description: "SIGKILL of the remote transport's via process mid-transfer fails every pending request with PeerExitedError, closes every relayed fd, and the server exits",
  transports: ['remote'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    const [upR, upW] = makePipe();
    const [downR, downW] = makePipe();
    const conn = await ctx.connect(PROBE_COMMAND);
    const server = conn.location.pid;
    const via = parentOf(server);
    assert.notEqual(via, process.pid, 'the server runs under a via process of its own');
    // Upward: a writer offers far more than the window to a command end nobody reads.
    const feeder = spawn('head', ['-c', String(ctx.rng.int(64, 256) << 20), '/dev/zero'], { stdio: ['ignore', upW, 'ignore'] });
    try {
      await conn.dupFileDescriptor(upR);
      const farDown = await conn.dupFileDescriptor(downW);
      const requests: Array<Promise<unknown>> = [conn.call('hang')];
      for (let i = 0; i < ctx.rng.int(50, 150); i++) {
        const pick = ctx.rng.int(0, 2);
        requests.push(pick === 0 ? conn.dupFileDescriptor(downW) : pick === 1 ? conn.call('write', farDown, `line ${i}\n`) : conn.dupFileDescriptors([upR, downR]));
      }
      await sleep(ctx.rng.int(0, 20));
      // The hang at least is pending when the kill lands.
      const { rejected, elapsedMs } = await killWithRequestsPending(ctx, via, requests, (reason) => {
        assert.equal(reason.transport, 'remote');
        // A local via is the server's parent, and it is what died. Through
        // ssh, the parent is sshd's session: the ssh client then exits on
        // its own (255), and the error says so.
        if (reason.pid === via) assert.equal(reason.signal, 'SIGKILL');
        else assert.ok(reason.exitCode !== null || reason.signal !== null, `how the via ended: ${reason.message}`);
      });
      await assert.rejects(conn.call('echo', 1), PeerExitedError);
      await assert.rejects(conn.dupFileDescriptor(downW), PeerExitedError);
      // The orphaned server sees its stdin end, closes its command and exits (the row's time limit bounds this wait).
      while (existsSync(`/proc/${server}`)) await sleep(20);
      ctx.note(`${rejected.length} of ${requests.length} requests rejected ${elapsedMs.toFixed(0)} ms after SIGKILL of the via (pid ${via}); the server (pid ${server}) exited`);
      ctx.count('faultsSurvived');
    } finally {
      feeder.kill('SIGKILL');
      await new Promise((r) => (feeder.exitCode !== null || feeder.signalCode !== null ? r(null) : feeder.once('exit', r)));
      closeAll([upR, upW, downR, downW]);
      await conn.close();
    }
  },
};

export default scenario;
