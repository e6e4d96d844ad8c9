/**
 * A helper daemon stops reading a uid's connections while that uid's fds
 * waiting to be closed put it past its fd limits, and reads them again once
 * those closes end. Every close counted there must end the hold, not only a
 * refused DUP's: a client whose duplications and log calls go past its
 * uid's limit at once (the refused DUPs' fds, and the copies it released,
 * waiting on the closer together) must have every request settled, and its
 * connection read again; none may be left waiting for a hold nothing ends.
 * The daemon runs with the low RLIMIT_NOFILE a service may have (1024), so
 * its per-uid limit is small; the burst's size and mix are generated.
 */
import { spawn } from 'node:child_process';

import fc from 'fast-check';

import { connect, closeFd, LOG_COMMAND, makeMemfd, openFdTable, type LogCommand } from '../../src';
import { NOBODY_HANG_GUARD_MS } from '../util/nobody';
import { CLI, exitOf, fdTableSettles } from '../util/processes';
import { within } from '../util/within';

test('generated: a burst of duplications and log calls past the uid fd limit: every request settles and the connection is read again', async () => {
  const before = openFdTable();
  const name = `fdbridge-attack-hold-back-${process.pid}`;
  const daemon = spawn('prlimit', ['--nofile=1024:1024', process.execPath, CLI, 'helper', '--socket', `@${name}`, '--verbose', '--exit-with-parent', String(process.pid)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  daemon.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const memfd = makeMemfd('hold-back');
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      daemon.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('listening on')) resolve();
      });
      void exitOf(daemon).then(({ code }) => reject(new Error(`helper exited with ${code} before listening: ${log}`)));
    });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1000, max: 3000 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 }), async (rounds, dupsPerRound, callsPerRound) => {
        const client = await connect('helper', { command: LOG_COMMAND, socketPath: `@${name}`, timeoutMs: 10000 });
        try {
          const proxy = client.proxy<LogCommand>();
          await proxy.redirectLogToFd(await client.dupFileDescriptor(memfd));
          const requests: Array<Promise<string>> = [];
          const outcome = (p: Promise<unknown>): Promise<string> =>
            p.then(
              () => 'ok',
              (err: Error & { code?: string }) => err.code ?? err.name,
            );
          for (let i = 0; i < rounds; i++) {
            for (let d = 0; d < dupsPerRound; d++) requests.push(outcome(client.dupFileDescriptor(memfd)));
            for (let c = 0; c < callsPerRound; c++) requests.push(outcome(proxy.log('y'.repeat(1000))));
          }
          const outcomes = await within(Promise.all(requests), NOBODY_HANG_GUARD_MS, `${requests.length} requests of a client past its uid's fd limit`);
          // Past the limit, a duplication is refused with a typed quota error; nothing else fails.
          expect([...new Set(outcomes)].filter((o) => o !== 'ok' && o !== 'ERR_FDBRIDGE_QUOTA')).toEqual([]);
          expect(outcomes).toContain('ERR_FDBRIDGE_QUOTA');
          // The connection is read again: a call after the burst is answered.
          await within(proxy.log('after'), NOBODY_HANG_GUARD_MS, 'a log call after the burst');
        } finally {
          await client.close();
        }
      }),
      { numRuns: 3, examples: [[3000, 1, 1]] },
    );
    expect(log).toContain('its connections are not read until they are closed');
  } finally {
    closeFd(memfd);
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
    await exitOf(daemon);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 180000);
