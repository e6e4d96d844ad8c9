/**
 * A process that exits while fdbridge's background closer is blocked in
 * closes of its copies (duplicates a direct or worker command did not
 * adopt, each a lingering TCP socket's last reference: a close that waits
 * out the linger time, an hour here) exits all the same: with
 * process.exit() right after close() is called, and when its event loop
 * runs out once close() has given up on those closes (5 s). The closer's
 * threads are detached and hold nothing the exit waits for; the kernel
 * ends their closes with the process.
 *
 * The scene: this process makes the lingering sockets
 * (test/util/linger-attacker.ts: lingeringSocket) and hands them to a
 * child Node process as its fds 3 and up, then closes its own copies; the
 * child gives them to a connection's command, closes its copies, closes
 * the connection and exits. Should the child hang in its exit, the test
 * fails on jest's timeout (the hang guard), and its end resets the
 * sockets' peers, which ends any close still blocked.
 *
 * Generated: the transport, how many sockets (1 to 20), and how the child
 * ends.
 */
import { spawn } from 'node:child_process';

import fc from 'fast-check';

import { closeFd } from '../../src';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { DIST_SRC } from '../util/nobody';

/** The child: fds 3..3+count-1 are its lingering sockets. Prints a line once close() is called (and once it resolved, when it waits). */
const CHILD = `
const { closeFd, connect, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const [transport, count, end] = process.argv.slice(1);
(async () => {
  const fds = Array.from({ length: Number(count) }, (_, i) => 3 + i);
  const conn = await connect(transport, { command: PROBE_COMMAND });
  await conn.dupFileDescriptors(fds);
  for (const fd of fds) closeFd(fd);
  const closing = conn.close();
  console.log('closing');
  if (end === 'process.exit') process.exit(0);
  await closing;
  console.log('closed');
})().catch((err) => { console.log(String(err)); process.exit(1); });`;

(hasPython() ? test : test.skip)('a process whose closer threads are blocked in lingering closes of its copies exits (process.exit, or its loop running out)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('direct', 'worker'),
      fc.integer({ min: 1, max: 20 }),
      fc.constantFrom('process.exit', 'loop ends'),
      async (transport, count, end) => {
        const linger = await lingeringSocket(count);
        try {
          const child = spawn(process.execPath, ['-e', CHILD, transport, String(count), end], {
            stdio: ['ignore', 'pipe', 'inherit', ...linger.fds],
          });
          for (const fd of linger.fds) closeFd(fd); // the child's copies are the last references now
          let out = '';
          child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
          const code = await new Promise((resolve) => child.once('exit', (c, signal) => resolve(c ?? signal)));
          expect({ code, out: out.trim().split('\n') }).toEqual({ code: 0, out: end === 'process.exit' ? ['closing'] : ['closing', 'closed'] });
        } finally {
          await linger.end();
        }
      },
    ),
    { numRuns: 6 },
  );
}, 120_000);
