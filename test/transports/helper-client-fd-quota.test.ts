/**
 * A helper daemon's per-client fd quota (maxFdsPerClient, `--max-fds`) is
 * checked per DUP frame, each granted or refused whole: a batch
 * (dupFileDescriptors) is one frame of up to MAX_FDS_PER_FRAME fds; single
 * dupFileDescriptor calls made while another is in flight are folded into
 * frames of up to MAX_FDS_PER_FRAME sent together. So calls made one after
 * another reach the quota exactly, and a burst of concurrent calls is
 * refused from the first frame that would pass it: up to
 * MAX_FDS_PER_FRAME - 1 fds short of it, never past it.
 */
import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, makeMemfd } from '../../src';
import { MAX_FDS_PER_FRAME } from '../../src/protocol';
import { scaled } from '../util/time-scale';

/**
 * Which of `calls` concurrent dupFileDescriptor calls (made in one tick,
 * none in flight before) are granted under a quota of `quota` fds: the
 * first goes out alone, the others folded MAX_FDS_PER_FRAME a frame; each
 * frame fits whole or is refused whole, in the order sent.
 */
function grantedByFrames(calls: number, quota: number): boolean[] {
  const frames = calls === 0 ? [] : [1];
  for (let left = calls - 1; left > 0; left -= MAX_FDS_PER_FRAME) frames.push(Math.min(MAX_FDS_PER_FRAME, left));
  let held = 0;
  return frames.flatMap((size) => {
    const fits = held + size <= quota;
    if (fits) held += size;
    return new Array<boolean>(size).fill(fits);
  });
}

test('concurrent dupFileDescriptor calls are granted by whole frames, never past the quota; calls one after another reach it exactly', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 900 }), async (quota, calls) => {
      const daemon = HelperDaemon.start({ socketPath: `@fdbridge-client-fd-quota-${process.pid}`, limits: { maxFdsPerClient: quota } });
      const memfd = makeMemfd('quota');
      try {
        const conn = await connect('helper', { command: { name: 'log' }, socketPath: daemon.socketPath });
        const burst = await Promise.allSettled(Array.from({ length: calls }, () => conn.dupFileDescriptor(memfd)));
        const expected = grantedByFrames(calls, quota);
        expect(burst.map((r) => r.status === 'fulfilled')).toEqual(expected);
        for (const r of burst) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'fds' });
        const granted = expected.filter(Boolean).length;
        expect(daemon.status().fdsHeld).toBe(granted);
        // One after another, the quota is reached exactly: the call past it is refused.
        for (let i = granted; i < quota; i++) await conn.dupFileDescriptor(memfd);
        expect(daemon.status().fdsHeld).toBe(quota);
        await expect(conn.dupFileDescriptor(memfd)).rejects.toMatchObject({ quota: 'fds', message: expect.stringMatching(`1 more fd\\(s\\) would make ${quota + 1} held for this client \\(at most ${quota}\\)`) });
        await conn.close();
      } finally {
        closeFd(memfd);
        await daemon.close();
      }
    }),
    { numRuns: 8, examples: [[4096, 5000], [253, 254], [254, 508]] },
  );
}, scaled(120000));
