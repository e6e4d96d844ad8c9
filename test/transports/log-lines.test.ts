/**
 * The log command's lines into fds that take nothing, on every transport:
 * each line is written or fails with a typed error, none is lost, and the
 * command's close() ends a line that waits for a pipe nobody reads (its
 * writes run on the process's log lanes, native/lane_writer.h, and are
 * cancelled with the command), so no copy of the client's fd stays open
 * behind it: the pipe's reader sees its end of file.
 */
import { readSync } from 'node:fs';

import { LOG_COMMAND } from '../../src';
import { closeFd, makePipe, setFdFlags } from '../../src/fd';
import { helperForSuite } from '../util/processes';
import { connectionsPerTest, TRANSPORTS } from '../util/transport-suite';

const suite = helperForSuite('fdbridge-log-lines-');

/** Reads the non-blocking read end `r` until its end of file (every write end closed), turning the event loop meanwhile. */
async function readToEof(r: number): Promise<number> {
  const buf = Buffer.alloc(65536);
  let total = 0;
  for (;;) {
    try {
      const n = readSync(r, buf, 0, buf.length, null);
      if (n === 0) return total;
      total += n;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

describe.each(TRANSPORTS)('%s transport', (transport) => {
  const { open } = connectionsPerTest(transport, suite);

  test("close() ends the lines waiting for a pipe nobody reads: each call fails, and the pipe's reader sees its end of file", async () => {
    const [r, w] = makePipe();
    try {
      const conn = await open({ command: LOG_COMMAND });
      await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
      closeFd(w);
      // More than the pipe holds: the first line waits for room, the second behind it.
      const lines = [conn.call('log', 'x'.repeat(100_000)), conn.call('log', 'after')].map((p) =>
        p.then(
          () => 'written',
          (e: unknown) => (e as Error).name,
        ),
      );
      await conn.call('where'); // a round trip: the command has both lines
      await conn.close();
      const outcomes = await Promise.all(lines);
      expect(outcomes.every((o) => o !== 'written')).toBe(true);
      setFdFlags(r, { nonblock: true });
      // Less than the first line: it was never written whole.
      expect(await readToEof(r)).toBeLessThan(100_001);
    } finally {
      closeFd(r);
    }
  });

  test('a pipe whose reader is gone: the line fails with EPIPE, and the next one too', async () => {
    const [r, w] = makePipe();
    const conn = await open({ command: LOG_COMMAND });
    await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
    closeFd(w);
    closeFd(r);
    for (const line of ['one', 'two']) {
      await expect(conn.call('log', line)).rejects.toMatchObject({ name: 'RemoteError', remote: expect.objectContaining({ code: 'EPIPE' }) });
    }
  });
});
