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
import fc from 'fast-check';

import { connect, closeFd, LOG_COMMAND, makeMemfd, openFdTable, type LogCommand } from '../../src';
import { NOBODY_HANG_GUARD_MS } from '../util/nobody';
import { fdTableSettles, startHelperProcess } from '../util/processes';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

test('generated: a burst of duplications and log calls past the uid fd limit: every request settles and the connection is read again', async () => {
  const before = openFdTable();
  const name = `fdbridge-attack-hold-back-${process.pid}`;
  const daemon = await startHelperProcess(`@${name}`, ['--verbose'], { nofile: 1024 });
  const memfd = makeMemfd('hold-back');
  try {
    await assertGuarded(
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
    expect(daemon.stderr()).toContain('its connections are not read until they are closed');
  } finally {
    closeFd(memfd);
    await daemon.stop();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 180000);
