/**
 * The command's side ends itself (process.exit in a child process, or in a
 * worker thread) while duplications are in flight on both sides of the exit
 * call. What it had been given dies with it (a worker shares our fd table:
 * the connection closes what the worker never adopted); everything pending
 * and everything after rejects with PeerExitedError carrying the exit code.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, openFdTable, PeerExitedError, PROBE_COMMAND } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, sleep } from './support/common';

const scenario: Scenario = {
  name: 'exit-peer-mid-transfer',
  description: 'a command process or worker that exits with duplications in flight fails them with PeerExitedError (its exit code) and leaves no fd behind',
  transports: ['worker', 'child'],
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['peer-death'],
  async run(ctx) {
    const source = makeMemfd('exit');
    const conn = await ctx.connect(PROBE_COMMAND);
    const baseline = openFdTable();
    try {
      const code = ctx.rng.int(3, 99);
      const before = Array.from({ length: ctx.rng.int(20, 80) }, () => conn.dupFileDescriptor(source));
      const exit = conn.call('exit', code);
      ctx.count('faultsInjected');
      const after = Array.from({ length: ctx.rng.int(20, 80) }, () => conn.dupFileDescriptors([source, source, source]));
      await assert.rejects(exit, (err: unknown) => err instanceof PeerExitedError && err.exitCode === code);
      const settled = await Promise.allSettled([...before, ...after]);
      for (const s of settled) {
        if (s.status === 'rejected') {
          assert.ok(s.reason instanceof PeerExitedError, `PeerExitedError, not ${String(s.reason)}`);
          assert.equal(s.reason.exitCode, code);
        }
      }
      if (ctx.transport !== 'worker') {
        // Over a socket, requests made after exit() queue behind it: none is served.
        assert.ok(settled.slice(before.length).every((s) => s.status === 'rejected'));
      }
      await assert.rejects(conn.dupFileDescriptor(source), PeerExitedError);
      // The worker's duplicates lived in this process: they are gone again,
      // once its environment's teardown has run (the row's time limit bounds the wait).
      while (openFdTable().size > baseline.size) await sleep(10);
      ctx.count('faultsSurvived');
    } finally {
      closeAll([source]);
      await conn.close();
    }
  },
};

export default scenario;
