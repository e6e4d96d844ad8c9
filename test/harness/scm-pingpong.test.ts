/**
 * The C ping-pong anchor (native/bench/scm_pingpong.c) in each of its
 * modes, batch and single, with the peer closing after its ack or keeping
 * what arrived until the untimed close request (--keep), both sides
 * blocking, both waiting in epoll (--event-loop) or the peer alone
 * (--peer-event-loop). The peer exits 1
 * on anything out of order (fds with a close request, a batch before the
 * last one's close request, a truncated control message) and the parent
 * then fails, so a clean exit with every sample says both sides kept to the
 * protocol. No timing is judged here: the bench does that. (--pidfd needs
 * pidfd_getfd, as the pidfd transport's tests do.)
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { scmPingpongPath } from '../../harness/anchor-build';

const execFileAsync = promisify(execFile);

interface PingpongOutput {
  fdsPerMessage: number;
  samples: number;
  samplesUs?: number[];
  sameCpuFraction: number;
}

async function run(args: string[]): Promise<PingpongOutput> {
  const { stdout } = await execFileAsync(scmPingpongPath(), [...args, '--iterations', '200', '--warmup', '20', '--samples'], { timeout: 60_000 });
  return JSON.parse(stdout) as PingpongOutput;
}

describe('scm_pingpong', () => {
  const modes: string[][] = [[], ['--keep'], ['--event-loop'], ['--event-loop', '--keep'], ['--peer-event-loop'], ['--peer-event-loop', '--keep'], ['--pidfd'], ['--pidfd', '--keep']];
  test.each(modes.flatMap((mode) => [1, 253].map((fds) => ({ label: mode.join(' ') || '(plain)', mode, fds }))))(
    '$label with $fds fd(s) per message: every round trip timed, the peer kept to the protocol',
    async ({ mode, fds }) => {
      const out = await run([...mode, '--fds', String(fds)]);
      expect(out.fdsPerMessage).toBe(fds);
      expect(out.samples).toBeGreaterThanOrEqual(200);
      expect(out.samplesUs).toHaveLength(out.samples);
      expect(out.samplesUs?.every((v) => Number.isFinite(v) && v > 0)).toBe(true);
      expect(out.sameCpuFraction).toBeGreaterThanOrEqual(0);
      expect(out.sameCpuFraction).toBeLessThanOrEqual(1);
    },
  );
});
