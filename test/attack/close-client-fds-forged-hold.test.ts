/**
 * Hostile code in the process cannot make a command hold, as its client's,
 * a number the command neither adopted nor received on a socket of its
 * own: closeClientFds of it is refused (SystemError EBADF naming it),
 * whichever command is asked, and the fd stays open, its file as it was.
 * The record a running command publishes on the global object (for the
 * datagram sockets it makes, whatever copy of the library they come from)
 * holds only what the addon says such a socket received, once. Generated:
 * the number (the program's own fd, another command's adopted fd or copy
 * given and not adopted, the program's UnixSocket receipt, a pin, an fd of
 * fdbridge's own socket pair), the path the hostile command takes (the
 * running command's record, every other command's record caught by a trap
 * on the global property, a datagram socket made with a caught receipt
 * tag, its context), on the direct, worker and in-process helper daemon
 * transports.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, HelperDaemon, UnixSocket, type Connection } from '../../src';
import { REFUSED, refusal, settle } from '../util/refusals';
import { closeFds, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { holdOwnCopy } from '../../src/test-hooks';
import { closeOwnFd } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const FIXTURE = join(__dirname, 'fixtures', 'forging-command.js');
const TRANSPORTS = ['direct', 'worker', 'helper'] as const;
type Transport = (typeof TRANSPORTS)[number];
/** Where every connection's command runs on the test's own thread (and so sees the same global object). */
const ONE_THREAD: readonly Transport[] = ['direct', 'helper'];

const TARGETS = ['program memfd', "another command's adopted fd", "another command's given copy", "the program's UnixSocket receipt", 'pin', 'own socket pair end'] as const;
type Target = (typeof TARGETS)[number];
const WAYS = ['running', 'caught', 'tagged', 'context'] as const;
type Way = (typeof WAYS)[number];


describe("forged holds: closeClientFds of a number no command's record may hold", () => {
  let daemon: HelperDaemon;
  beforeAll(() => {
    daemon = HelperDaemon.start({
      socketPath: `@fdbridge-forged-hold-${process.pid}`,
      commands: { forging: { module: FIXTURE, export: 'ForgingCommand' } },
    });
  });
  afterAll(() => daemon.close());

  const open = (transport: Transport): Promise<Connection> =>
    connect(transport, {
      command: transport === 'helper' ? { name: 'forging' } : { module: FIXTURE, export: 'ForgingCommand' },
      socketPath: daemon.socketPath,
    });

  /** An fd of `target`'s kind, `other` the connection whose command an adopted or given one is. */
  async function make(target: Target, other: Connection): Promise<{ fd: number; end(): void }> {
    switch (target) {
      case 'program memfd': {
        const fd = makeMemfd('forged-hold-program');
        return { fd, end: () => void closeFds([fd]) };
      }
      case "another command's adopted fd":
      case "another command's given copy": {
        const memfd = makeMemfd('forged-hold-given');
        const copy = await other.dupFileDescriptor(memfd);
        if (target === "another command's adopted fd") await other.call('adopt', copy);
        return { fd: copy, end: () => void closeFds([memfd]) };
      }
      case "the program's UnixSocket receipt": {
        const [a, b] = UnixSocket.pair('seqpacket');
        const memfd = makeMemfd('forged-hold-receipt');
        await a.send(Buffer.from('fd'), [memfd]);
        const [fd] = (await b.receive()).fds as [number];
        closeFds([memfd]);
        a.close();
        b.close();
        return { fd, end: () => void closeFds([fd]) };
      }
      case 'pin': {
        const memfd = makeMemfd('forged-hold-pin');
        const pin = holdOwnCopy(memfd);
        return {
          fd: pin,
          end: () => {
            closeOwnFd(pin);
            closeFds([memfd]);
          },
        };
      }
      case 'own socket pair end': {
        const [a, b] = UnixSocket.pair('seqpacket', { own: true });
        return {
          fd: a.fd,
          end: () => {
            a.close();
            b.close();
          },
        };
      }
    }
  }

  test.each(TRANSPORTS)(
    'generated, %s: every forged hold leaves closeClientFds refused (EBADF naming the fd), the fd open, its file as it was',
    async (transport) => {
      const before = openFdTable();
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...TARGETS), fc.constantFrom(...WAYS), async (target, way) => {
          runs++;
          const hostile = await open(transport);
          const victim = await open(transport);
          const other = await open(transport);
          try {
            await hostile.call('trap');
            // The victim runs: its record is published, and caught where it shares the hostile command's thread.
            expect(await victim.call('caughtCount')).toBe(0);
            expect(await hostile.call('caughtCount')).toBe(ONE_THREAD.includes(transport) ? 1 : 0);
            const made = await make(target, other);
            try {
              const file = fdIdentity(made.fd);
              await hostile.call('forge', way, made.fd);
              for (const asked of [hostile, victim]) {
                expect({ run: runs, refusal: refusal(await settle(asked.call('closeNamed', [made.fd])), made.fd) }).toEqual({ run: runs, refusal: REFUSED });
              }
              // Nothing was closed behind the refusal (no close of it queued either): the same file at the number.
              expect(fdIdentity(made.fd)).toEqual(file);
            } finally {
              await hostile.call('untrap');
              await other.close();
              made.end();
            }
          } finally {
            await hostile.close();
            await victim.close();
            await other.close();
          }
        }),
        { numRuns: 16, examples: TARGETS.flatMap((t) => WAYS.map((w) => [t, w] as [Target, Way])) },
      );
      expect(await fdTableSettles(process.pid, before)).toBe('');
    },
    scaled(300_000),
  );
});
