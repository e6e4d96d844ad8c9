/**
 * A helper daemon that reaches its fd limit stops accepting (accept4 fails
 * with EMFILE) and starts again shortly. Meanwhile it must stay up: with no
 * client connected, nothing else keeps its event loop alive, and a daemon
 * that ends there ends with exit status 0 (a service manager's
 * Restart=on-failure does not even restart it). Its quotas keep its clients
 * from taking it there (test/attack/helper-close-queue.test.ts,
 * helper-refused-flood.test.ts), so here its soft RLIMIT_NOFILE is lowered
 * under it (prlimit --pid), to the lowest number it has free: accept4 then
 * has no number to give. The daemon starts at 1024, as a service may.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

import { closeFd, connect, LOG_COMMAND } from '../../src';
import { rawConnect } from '../../src/testing';
import { startHelperProcess } from '../util/processes';

/** The lowest fd number `pid` has free now. */
function lowestFree(pid: number): number {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let n = 0;
  while (open.has(n)) n++;
  return n;
}

describe('a helper daemon at its fd limit', () => {
  test('stays up through EMFILE on accept with no client connected, and serves once fds are free again', async () => {
    const name = `fdbridge-attack-emfile-${process.pid}`;
    const daemon = await startHelperProcess(`@${name}`, ['--verbose'], { nofile: 1024 });
    let pending: number | undefined;
    try {
      // Every number below the soft limit taken: the next accept4 fails.
      execFileSync('prlimit', ['--pid', String(daemon.pid), `--nofile=${lowestFree(daemon.pid)}:1024`]);
      pending = rawConnect('seqpacket', name, true);
      // It did reach its limit (else this test shows nothing); no time limit
      // of its own: the daemon logs the failure, or the test times out.
      while (!/accept4 failed: EMFILE/.test(daemon.stderr())) await new Promise((r) => setTimeout(r, 20));
      execFileSync('prlimit', ['--pid', String(daemon.pid), '--nofile=1024:1024']);
      const conn = await connect('helper', { command: LOG_COMMAND, socketPath: `@${name}`, timeoutMs: 20000 });
      try {
        expect(await conn.call('where')).toMatchObject({ transport: 'helper' });
      } finally {
        await conn.close();
      }
      expect({ exitCode: daemon.child.exitCode, signal: daemon.child.signalCode }).toEqual({ exitCode: null, signal: null });
    } finally {
      if (pending !== undefined) closeFd(pending);
      await daemon.stop('SIGTERM');
    }
  }, 120000);
});
