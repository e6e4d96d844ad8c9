/**
 * Fault: a client process dies (SIGKILL) with duplications in flight to the
 * helper daemon, its fds half sent and half served. The daemon closes every
 * fd that client's command was given and its open-fd table returns to its
 * baseline; it keeps serving others.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { diffFdTables, formatFdTableDiff, openFdTable, PROBE_COMMAND } from '../src';
import { packageRoot } from '../src/paths';
import type { Scenario } from '../harness/types';
import { sleep } from './support/common';

/**
 * A client that connects to the helper and duplicates fds without end. It
 * keeps every duplicate, so after about 58 batches (tens of ms) the daemon
 * refuses it (its per-client quota, 4096 fds): it goes on through the
 * refusals (their fds still travel and are closed over there), so that it
 * dies by the SIGKILL, however late that comes, and never by a rejection.
 */
const DOOMED_CLIENT = `
const src = require(process.argv[1]);
(async () => {
  const conn = await src.connect('helper', { command: src.PROBE_COMMAND, socketPath: process.argv[2] });
  const fds = [src.makeMemfd('doomed-client'), ...src.makePipe()];
  process.stdout.write('connected ' + conn.location.pid + '\\n');
  let n = 0;
  for (;;) {
    const batch = [];
    for (let i = 0; i < 50; i++) batch.push(i % 5 ? conn.dupFileDescriptor(fds[i % 3]) : conn.dupFileDescriptors(fds));
    await Promise.allSettled(batch);
    if (++n === 3) process.stdout.write('busy\\n');
  }
})();
`;

const scenario: Scenario = {
  name: 'kill-client-mid-transfer',
  description: "a client SIGKILLed with duplications in flight leaves nothing in the helper daemon: its fd table returns to the baseline",
  transports: ['helper'],
  tags: ['fault', 'peer-death'],
  async run(ctx) {
    const probe = await ctx.connect(PROBE_COMMAND);
    const helperPid = probe.location.pid;
    const socketPath = ctx.helper?.socketPath;
    if (socketPath === undefined) return ctx.skip('the harness does not name the helper socket (ctx.helper)');
    const baseline = openFdTable(helperPid);
    const client = spawn(process.execPath, ['-e', DOOMED_CLIENT, join(packageRoot, 'dist', 'src', 'index.js'), socketPath], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => client.once('exit', (c, s) => resolve(s ?? c)));
    try {
      let said = '';
      client.stdout.setEncoding('utf8').on('data', (d: string) => (said += d));
      // A Node process starting on a loaded machine: no bound but the row's time limit.
      while (!said.includes('busy') && client.exitCode === null) await sleep(5);
      assert.ok(said.includes('busy'), `the client got going (${said})`);
      await sleep(ctx.rng.int(0, 20));
      client.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      ctx.count('faultsInjected');
      // The helper sees EOF, closes the command and everything it was given.
      // (On its closer threads: the row's time limit bounds the wait.)
      while (formatFdTableDiff(diffFdTables(baseline, openFdTable(helperPid))) !== '') await sleep(20);
      // And it still serves this client.
      assert.equal(await probe.call('echo', 'still here'), 'still here');
      ctx.count('faultsSurvived');
    } finally {
      if (client.exitCode === null && client.signalCode === null) client.kill('SIGKILL');
      await exited;
      await probe.close();
    }
  },
};

export default scenario;
