/**
 * A client of a helper daemon whose log line is stuck (a pipe it never
 * reads) redirects its log again and again: each redirect hands the daemon
 * a new fd, which the log command adopts (no longer counted by the fd
 * limits), and the one it replaces must be closed at once, not kept until
 * the stuck line is written. Kept, one connection makes the daemon hold as
 * many fds as it likes, past every fd limit, up to EMFILE. The lines logged
 * meanwhile go, in order, to the log fd of the moment their turn comes.
 */
import { readFileSync } from 'node:fs';

import fc from 'fast-check';

import { connect, LOG_COMMAND, makeMemfd } from '../../src';
import { closeFds, makePipe, openFdTable } from '../../src/fd';
import { statusWhen } from '../util/helper-status';
import { fdTableSettles, helperForSuite } from '../util/processes';
import { drainPipe } from '../util/pipe-read';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';

const suite = helperForSuite('fdbridge-attack-log-redirects-');

/** How many of `pid`'s fds name the memfd called `name`. */
function memfdsNamed(pid: number, name: string): number {
  return [...openFdTable(pid).values()].filter((t) => t === `/memfd:${name} (deleted)`).length;
}

test('generated: redirects made while a line is stuck leave one log fd in the daemon; the lines waiting go to the last one, in order', async () => {
  const { helper, socketPath } = suite;
  const before = openFdTable(process.pid);
  const daemonBefore = openFdTable(helper.pid);
  let run = 0;
  await assertGuarded(
    fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 300 }), async (logAfter) => {
      const name = `redirects-${run++}`;
      const memfd = makeMemfd(name);
      const [r, w] = makePipe(); // r is read only at the end
      const conn = await connect('helper', { command: LOG_COMMAND, socketPath });
      const lines: Array<Promise<unknown>> = [];
      try {
        await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
        // More than a pipe holds: stuck until r is read.
        lines.push(conn.call('log', 's'.repeat(150_000)));
        const expected: string[] = [];
        for (const [i, log] of logAfter.entries()) {
          await conn.call('redirectLogToFd', await conn.dupFileDescriptor(memfd));
          if (log) {
            lines.push(conn.call('log', `line ${i}`));
            expected.push(`line ${i}\n`);
          }
        }
        await conn.call('where');
        // The replaced ones are closed (on the background closer): one is left, the log fd now.
        await statusWhen(socketPath, (s) => s.fdsClosing === 0);
        expect(memfdsNamed(helper.pid, name)).toBe(1);
        // The pipe read at last: the stuck line whole, then the others, in order, in the memfd.
        expect(await drainPipe(r, 150_001)).toBe(150_001);
        await Promise.all(lines);
        expect(readFileSync(`/proc/self/fd/${memfd}`, 'utf8')).toBe(expected.join(''));
      } finally {
        await conn.close();
        closeFds([r, w, memfd]);
      }
      await Promise.allSettled(lines);
    }),
    { numRuns: 5, examples: [[new Array<boolean>(300).fill(false)], [[true, true, false, true]]] },
  );
  expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120000));
