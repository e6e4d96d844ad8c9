/**
 * closeClientFds closes only what the command holds as its client's: an fd
 * it adopted from its connection, or one that arrived on a socket of
 * fdbridge's it made as it ran, not closed through closeClientFds since and
 * still the file it came with. Any other number a command names (one its
 * client chose, another connection's adopted fd, the program's or the
 * command process's own fds, one it closed through closeClientFds before,
 * free now or taken by another file) is a SystemError EBADF naming it, and
 * nothing of the list is closed: on every transport, the command's process's
 * fd table is as it was.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, DatagramSocket, HelperDaemon, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { closeFds, makeMemfd, openFdTable } from '../../src/fd';
import { openAt } from '../util/open-at';
import { scaled } from '../util/time-scale';

const TRANSPORTS = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'] as const;
type Transport = (typeof TRANSPORTS)[number];
/** Where the command runs in this process: its numbers are this process's. */
const IN_PROCESS: readonly Transport[] = ['direct', 'worker', 'helper'];

const RAW_CLOSE = join(__dirname, 'fixtures', 'raw-close-command.js');
const RECEIVING = join(__dirname, 'fixtures', 'receiving-command.js');
/** The numbers whose files are compared before and after a refusal. */
const WATCHED = Array.from({ length: 128 }, (_, i) => i);

/** The call's value (null for none), or what it rejected with. */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => ({ ok: v ?? null }),
    (e: unknown) => e,
  );
}

/** A refusal naming `fd`: typed, EBADF, whatever the transport. */
function expectRefused(outcome: unknown, fd: number, what: unknown): void {
  const remote = (outcome as RemoteError).remote;
  expect({ what, remote: outcome instanceof RemoteError, name: remote?.name, code: remote?.code, names: String(remote?.message).includes(`fd ${fd} `) }).toEqual({
    what,
    remote: true,
    name: 'SystemError',
    code: 'EBADF',
    names: true,
  });
}

function specFor(transport: Transport, module: string, exportName: string): { command: { name: string } | { module: string; export: string } } {
  return transport === 'helper' ? { command: { name: exportName === 'RawCloseCommand' ? 'rawclose' : 'receiving' } } : { command: { module, export: exportName } };
}

describe('closeClientFds of a number the command does not hold as its client\'s', () => {
  let daemon: HelperDaemon;
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-not-held-'));
    daemon = HelperDaemon.start({
      socketPath: `@fdbridge-not-held-${process.pid}`,
      diagnostics: true,
      commands: { rawclose: { module: RAW_CLOSE, export: 'RawCloseCommand' }, receiving: { module: RECEIVING, export: 'ReceivingCommand' } },
    });
  });
  afterAll(async () => {
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const open = (transport: Transport, module = RAW_CLOSE, exportName = 'RawCloseCommand'): Promise<Connection> =>
    connect(transport, { ...specFor(transport, module, exportName), socketPath: daemon.socketPath });

  test(
    'generated: on every transport, a list naming any number not held (chosen by the client, closed through closeClientFds before, a copy not adopted) among adopted fds is refused whole, the fd table unchanged',
    async () => {
      const file = makeMemfd('not-held');
      const conns = new Map<Transport, Connection>();
      try {
        const report = await checkFdLeaks(async () => {
          for (const t of TRANSPORTS) conns.set(t, await open(t));
          await fc.assert(
            fc.asyncProperty(
              fc.constantFrom(...TRANSPORTS),
              fc.integer({ min: 1, max: 4 }),
              fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
              fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
              fc.uniqueArray(fc.nat(WATCHED.length - 1), { minLength: 1, maxLength: 3 }),
              fc.nat(),
              async (transport, n, adoptMask, closeFirstMask, foreign, at) => {
                const conn = conns.get(transport) as Connection;
                const given = await conn.dupFileDescriptors(new Array<number>(n).fill(file));
                const adopted = given.filter((_, i) => adoptMask[i] === true);
                if (adopted.length > 0) expect(await conn.call('adopt', adopted)).toBe(adopted.length);
                // Some closed properly first: their numbers are no longer the command's.
                const closedFirst = adopted.filter((_, i) => closeFirstMask[i] === true);
                if (closedFirst.length > 0) expect(await settle(conn.call('closeClient', closedFirst))).toEqual({ ok: null });
                const held = adopted.filter((fd) => !closedFirst.includes(fd));
                // Not held: the client's choice of numbers (any in the command's process: its own, other connections', free
                // ones), the ones closed first, the copies given and not adopted.
                const notHeld = [...new Set([...foreign, ...closedFirst, ...given.filter((fd) => !adopted.includes(fd))])].filter((fd) => !held.includes(fd));
                const stranger = notHeld[at % notHeld.length] as number;
                const list = [...held];
                list.splice(at % (list.length + 1), 0, stranger);
                const watched = [...new Set([...WATCHED, ...given])];
                const before = await conn.call('files', watched);
                const outcome = await settle(conn.call('closeClient', list));
                const first = list.find((fd) => !held.includes(fd)) as number;
                expectRefused(outcome, first, { transport, list, held });
                // Nothing closed: every number holds what it held.
                expect(await conn.call('files', watched)).toEqual(before);
                // What it holds it still closes.
                if (held.length > 0) expect(await settle(conn.call('closeClient', held))).toEqual({ ok: null });
                // The copies it did not adopt: released by the connection's end, or here by adopting and closing them.
                const rest = given.filter((fd) => !adopted.includes(fd));
                if (rest.length > 0) {
                  expect(await conn.call('adopt', rest)).toBe(rest.length);
                  expect(await settle(conn.call('closeClient', rest))).toEqual({ ok: null });
                }
              },
            ),
            { numRuns: 100 },
          );
          for (const c of conns.values()) await c.close();
        });
        expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
      } finally {
        for (const c of conns.values()) await c.close();
        closeFds([file]);
      }
    },
    scaled(240_000),
  );

  /** Another connection's adopted fd, and the program's own file, in the process the command runs in. */
  test.each(IN_PROCESS)('%s: another connection\'s adopted fd and the program\'s own file are refused (EBADF) and stay open', async (transport) => {
    const path = join(dir, `${transport}-program`);
    writeFileSync(path, 'program\n');
    const mine = makeMemfd('other-conn');
    const report = await checkFdLeaks(async () => {
      const a = await open(transport);
      const other = await connect(transport, { command: PROBE_COMMAND, socketPath: daemon.socketPath });
      const program = openSync(path, 'r');
      try {
        const n = await other.dupFileDescriptor(mine);
        expect(await other.call('adopt', [n])).toBe(1);
        const ids = await other.call('identities', [n]);
        const before = openFdTable();
        expectRefused(await settle(a.call('closeClient', [n])), n, 'adopted by another connection');
        expectRefused(await settle(a.call('closeClient', [program])), program, "the program's file");
        expect(await other.call('identities', [n])).toEqual(ids);
        expect(openFdTable()).toEqual(before);
        expect(await settle(other.call('closeAdopted', [n]))).toEqual({ ok: null });
      } finally {
        closeSync(program);
        await a.close();
        await other.close();
      }
    });
    closeFds([mine]);
    expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
  }, scaled(30_000));

  /** A number closed through closeClientFds, then free, then another file's: refused each time, the file left open. */
  test.each(TRANSPORTS)('%s: a number closed through closeClientFds once is refused again, free or taken by another file', async (transport) => {
    const path = join(dir, `${transport}-reuse`);
    writeFileSync(path, 'reuse\n');
    const given = makeMemfd('reuse');
    const report = await checkFdLeaks(async () => {
      const a = await open(transport);
      let opened: number | undefined;
      let openedThere = false;
      try {
        const n = await a.dupFileDescriptor(given);
        expect(await a.call('adopt', [n])).toBe(1);
        expect(await settle(a.call('closeClient', [n]))).toEqual({ ok: null });
        // Free now (in its process): refused, not a silent success.
        if (!IN_PROCESS.includes(transport)) expect(await a.call('files', [n])).toEqual([null]);
        expectRefused(await settle(a.call('closeClient', [n])), n, 'closed before, free');
        // Another file takes the number: in this process, or in the command's.
        if (IN_PROCESS.includes(transport)) opened = openAt(path, n);
        else openedThere = (await a.call('openAt', path, n)) === n;
        const [id] = (await a.call('files', [n])) as string[];
        expect(id).not.toBeNull();
        expectRefused(await settle(a.call('closeClient', [n])), n, 'closed before, another file there');
        expect(await a.call('files', [n])).toEqual([id]);
        if (openedThere) expect(await a.call('rawClose', [n])).toBe(1);
      } finally {
        if (opened !== undefined) closeSync(opened);
        await a.close();
      }
    });
    closeFds([given]);
    expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
  }, scaled(30_000));

  /**
   * The fds that arrive on a datagram socket the command made as it ran are
   * its client's (the log command's redirects): closed once, refused after.
   * One made after an await was made by no running command: refused.
   */
  test.each(TRANSPORTS)('%s: fds received on a socket the command made as it ran are closed once; on one made after an await, refused', async (transport) => {
    const file = makeMemfd('received');
    const report = await checkFdLeaks(async () => {
      const a = await open(transport, RECEIVING, 'ReceivingCommand');
      const sender = DatagramSocket.open();
      const socketDir = mkdtempSync(join(dir, 'sock-'));
      try {
        for (const later of [false, true]) {
          const path = join(socketDir, later ? 'later' : 'now', 's');
          await a.call(later ? 'listenLater' : 'listen', path);
          await sender.sendTo(path, Buffer.from('fd'), [file]);
          let received: number[] = [];
          // The command's event loop reads it in its own time (on direct, this one's: let it turn).
          while (received.length === 0) {
            await new Promise((resolve) => setTimeout(resolve, 5));
            received = (await a.call('takeReceived')) as number[];
          }
          const fd = received[0] as number;
          const [id] = (await a.call('files', [fd])) as string[];
          if (later) {
            expectRefused(await settle(a.call('closeClient', [fd])), fd, 'received on a socket made after an await');
            expect(await a.call('files', [fd])).toEqual([id]);
            expect(await a.call('rawClose', [fd])).toBe(1);
          } else {
            expect(await settle(a.call('closeClient', [fd]))).toEqual({ ok: null });
            expectRefused(await settle(a.call('closeClient', [fd])), fd, 'received, closed once');
          }
        }
      } finally {
        sender.close();
        await a.close();
        rmSync(socketDir, { recursive: true, force: true });
      }
    });
    closeFds([file]);
    expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
  }, scaled(30_000));
});
