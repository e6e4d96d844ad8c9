/**
 * A command that closed an fd it held as its client's itself (fs.closeSync)
 * must not close, through closeClientFds, the fd another command (or its
 * own code) got at that number since, even of the same file (/dev/null,
 * a file both were sent), when it got it by a way no command's record
 * sees: a UnixSocket receipt, a DatagramSocket made after an await. Only
 * the number's install generation tells the two fds apart (every fd
 * fdbridge's native code puts in the table gives the number a new one):
 * the close is refused (SystemError EBADF naming the number), nothing
 * closed, and the other fd stays open, its file still. On every transport:
 * the other fd is another connection's command's where commands share the
 * process (direct, worker threads, a helper daemon), the command's own
 * where it runs alone (child, pidfd).
 */
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, DatagramSocket, TimeoutError, type Connection } from '../../src';
import { daemonForSuite } from '../util/processes';
import { REFUSED, refusal, settle } from '../util/refusals';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const TRANSPORTS = ['direct', 'worker', 'helper', 'child', 'pidfd'] as const;
type Transport = (typeof TRANSPORTS)[number];
/** Where two connections' commands share one process (and its fd table). */
const SHARED: readonly Transport[] = ['direct', 'worker', 'helper'];

const FIXTURE = join(__dirname, 'fixtures', 'same-number-command.js');

/** How the other fd gets the number: a UnixSocket receipt, or a DatagramSocket made after an await. */
type How = 'unix' | 'later';


/** What `conn`'s command has received on its datagram sockets, once it has (its event loop reads in its own time). */
async function receivedBy(conn: Connection, what: string): Promise<number[]> {
  const guard = new HangGuard(scaled(20_000));
  for (let looks = 1; ; looks++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    const received = (await guard.within(conn.call('takeReceived'), `${what}: takeReceived`)) as number[];
    if (received.length > 0) return received;
    if (guard.leftMs === 0) throw new TimeoutError(`${what}: nothing received within the hang guard (${guard.ms} ms, ${looks} looks of takeReceived, each [])`);
  }
}

describe('closeClientFds of a number the command closed itself, that the same file took again by a way no record sees', () => {
  const suite = daemonForSuite('same-number', { commands: { samenumber: { module: FIXTURE, export: 'SameNumberCommand' } } });
  let shared: string;
  beforeAll(() => {
    shared = join(suite.dir, 'shared');
    writeFileSync(shared, 'both\n');
  });

  const open = (transport: Transport): Promise<Connection> =>
    connect(transport, {
      command: transport === 'helper' ? { name: 'samenumber' } : { module: FIXTURE, export: 'SameNumberCommand' },
      socketPath: suite.daemon.socketPath,
    });

  let runs = 0;
  /**
   * One run: A's command receives `path`'s file on a socket it made as it
   * ran (its client's), at number m, and closes it itself; B's (A's own
   * with `same`) gets the file at m by `how`; A's closeClientFds([m]) is
   * refused, and B's fd is still open there, the file it got.
   */
  async function run(transport: Transport, how: How, same: boolean, path: string): Promise<void> {
    runs++;
    const file = openSync(path, 'r');
    const st = statSync(path);
    const id = `${st.dev}:${st.ino}`;
    const sender = DatagramSocket.open();
    const sockets = mkdtempSync(join(suite.dir, 'sock-'));
    const a = await open(transport);
    const b = same ? a : await open(transport);
    let m: number | undefined;
    let bHolds = false;
    try {
      const pathA = join(sockets, 'a');
      const pathB = join(sockets, 'b');
      await a.call('listen', pathA);
      if (how === 'later') await b.call('listenLater', pathB);
      else await b.call('preparePair', path);
      await sender.sendTo(pathA, Buffer.from('fd'), [file]);
      const [got] = (await receivedBy(a, `run ${runs}: the fd sent to A`)) as [number];
      m = got;
      expect(await a.call('rawClose', [m])).toBe(1);
      await b.call('fillBelow', m);
      let at: number;
      try {
        if (how === 'later') {
          await sender.sendTo(pathB, Buffer.from('fd'), [file]);
          [at] = (await receivedBy(b, `run ${runs}: the fd sent to B`)) as [number];
        } else {
          at = (await b.call('unixReceive')) as number;
        }
        bHolds = true;
      } finally {
        await b.call('unfill');
      }
      // The scenario: B's fd of the same file is at the number A closed.
      expect({ at, files: await b.call('files', [at]) }).toEqual({ at: m, files: [id] });
      expect(refusal(await settle(a.call('closeClient', [m])), m)).toEqual(REFUSED);
      // B's fd is open there still, the same file (no close of it is queued behind the refusal).
      expect(await b.call('files', [m])).toEqual([id]);
    } finally {
      // B closes its fd itself, while it is still there (a close that went through took it already).
      if (bHolds && m !== undefined && (await b.call('files', [m]) as unknown[])[0] === id) await b.call('rawClose', [m]);
      await a.close();
      if (!same) await b.close();
      sender.close();
      closeSync(file);
      rmSync(sockets, { recursive: true, force: true });
    }
  }

  test.each(TRANSPORTS)(
    "generated, %s: A's closeClientFds of the number it closed itself, B's fd of the same file there now (UnixSocket receipt, DatagramSocket made after an await): refused, B's fd open",
    async (transport) => {
      await assertGuarded(
        fc.asyncProperty(
          fc.constantFrom<How>('unix', 'later'),
          SHARED.includes(transport) ? fc.boolean() : fc.constant(true),
          fc.constantFrom('/dev/null', 'shared'),
          async (how, same, which) => {
            const report = await checkFdLeaks(() => run(transport, how, same, which === 'shared' ? shared : which));
            expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
          },
        ),
        {
          numRuns: 6,
          examples: [
            ['unix', !SHARED.includes(transport), '/dev/null'],
            ['later', !SHARED.includes(transport), '/dev/null'],
            ['unix', true, 'shared'],
            ['later', true, 'shared'],
          ],
        },
      );
    },
    scaled(120_000),
  );
});
