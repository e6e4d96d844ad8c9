/**
 * close() closes every fd given to the command and not adopted (README,
 * `Connection.close()`), and a pipe still gets its end of file when its
 * last writer goes, however many closes of another connection's block on
 * the background closer. A connection (direct or worker) whose command
 * was given as many lingering TCP sockets (SO_LINGER, unsent data; the
 * caller closed its own copies, as it may) as the closer has shared
 * threads, closed, leaves those closes blocked for the linger time, which
 * is expected. A later worker connection, whose command was given only a
 * pipe's write end, must still have that duplicate closed by the time its
 * close() resolves: its closes are another holder's, which gets a thread
 * of its own. Before, every worker thread's copy of the library numbered
 * its holders from the same start as the main thread's, so the second
 * connection's sweep shared the first's closer owner and waited behind its
 * blocked closes: close() gave up after 5 s with the duplicate still open,
 * and the pipe's reader saw no end of file until the lingering closes
 * ended (the linger time, an hour here).
 *
 * The scene (reported by an outside attacker, with 8 sockets, when one
 * owner's closes ran on 8 threads at most): test/util/linger-attacker.ts
 * makes the lingering sockets (lingeringSocket); the first connection's
 * command is given them, the caller closes its copies, and the connection
 * is closed (its closes block). A second, worker connection's command is
 * given a pipe's write end, the caller closes its own write end, and the
 * connection is closed. Then the pipe's read end (non-blocking) must read
 * end of file. Deterministic: the lingering closes stay blocked until the
 * peers are reset, at the end of the test.
 */
import { readSync } from 'node:fs';

import { closeFd, connect, makePipe, PROBE_COMMAND, setFdFlags } from '../../src';
import { closerThreads } from '../../src/test-hooks';
import { hasPython, lingeringSocket } from '../util/linger-attacker';

/** What a non-blocking read of `fd` gives now: 'eof', 'data' or the error's code. */
function readNow(fd: number): string {
  try {
    return readSync(fd, Buffer.alloc(16)) === 0 ? 'eof' : 'data';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

const CASES = [['direct'], ['worker']] as const;

(hasPython() ? test.each(CASES) : test.skip.each(CASES))(
  "a worker connection's close() closes its command's unadopted duplicate while %s's lingering closes fill the closer's shared threads (the pipe reads end of file)",
  async (first) => {
    const linger = await lingeringSocket(closerThreads().max);
    const [readEnd, writeEnd] = makePipe();
    let writeOpen = true;
    try {
      setFdFlags(readEnd, { nonblock: true });
      const blocked = await connect(first, { command: PROBE_COMMAND });
      await blocked.dupFileDescriptors(linger.fds);
      for (const fd of linger.fds) closeFd(fd); // the command's unadopted duplicates are now the last references
      await blocked.close(); // their closes block on the background closer (the linger time): expected

      const conn = await connect('worker', { command: PROBE_COMMAND });
      await conn.dupFileDescriptor(writeEnd); // not adopted: close() closes it
      closeFd(writeEnd);
      writeOpen = false;
      await conn.close();
      // Expected 'eof'. Failed with 'EAGAIN': the duplicate of the write end was
      // still open in this process after close() resolved (it gave up after 5 s).
      expect(readNow(readEnd)).toBe('eof');
    } finally {
      if (writeOpen) closeFd(writeEnd);
      await linger.end(); // resets the peers: the lingering closes end, and what waited behind them
      closeFd(readEnd);
    }
  },
  60000,
);
