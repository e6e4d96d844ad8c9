/**
 * On remote a pipe's read end is given as a relayed stream: the command
 * gets a pipe's read end over there, and the relay reads the caller's pipe
 * here. When the command closes its end, the stream must end: the relay
 * over there learned of it only when it next had bytes to write (a pipe's
 * writer sees its reader gone by EPIPE), so with the caller's pipe quiet
 * its copy here and the pipe over there stayed open until the connection
 * closed, and the first bytes the caller then wrote were read out of its
 * pipe by the relay and dropped. Now the relay's write end is watched for
 * its reader's close (POLLERR) while it has nothing to write.
 *
 * Generated: 1-5 read ends given and closed by the command; both fd
 * tables (the server's and this process's) back to their baselines, and
 * bytes written after stay in the caller's pipe.
 */
import { readSync, writeSync } from 'node:fs';

import fc from 'fast-check';

import { connect, PROBE_COMMAND } from '../../src';
import { closeFds, formatFdTableDiff, makePipe, openFdTable, setFdFlags } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';

test('generated: a relayed pipe read end the command closes ends its stream on both sides, and nothing written after is lost', async () => {
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  try {
    // The server's table once its runtime has settled (the first call opens what it opens lazily).
    await conn.call('where');
    const serverBaseline = openFdTable(conn.location.pid);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5 }), fc.string({ minLength: 1, maxLength: 64 }), async (count, text) => {
        const pipes = Array.from({ length: count }, () => makePipe());
        const baseline = openFdTable();
        try {
          const far = await conn.dupFileDescriptors(pipes.map(([r]) => r));
          await conn.call('adopt', far);
          await conn.call('closeAdopted', far);
          expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
          expect(formatFdTableDiff(await settleFdTable(process.pid, baseline, 2000))).toBe('');
          for (const [r, w] of pipes) {
            writeSync(w, text);
            setFdFlags(r, { nonblock: true });
            const buf = Buffer.alloc(4 * text.length + 16);
            expect(buf.subarray(0, readSync(r, buf)).toString()).toBe(text);
          }
        } finally {
          closeFds(pipes.flat());
        }
      }),
      { numRuns: 10, endOnFailure: true },
    );
  } finally {
    await conn.close();
  }
});
