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
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import fc from 'fast-check';

import { checkFdLeaks, connect, DatagramSocket, PROBE_COMMAND, RemoteError, TimeoutError, type Connection } from '../../src';
import { closeFds, closeOwnFds, makeMemfd, openFdTable } from '../../src/fd';
import { fillUpTo } from '../util/fill-up-to';
import { DIST_SRC } from '../util/nobody';
import { openAt } from '../util/open-at';
import { daemonForSuite } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const TRANSPORTS = ['direct', 'worker', 'child', 'helper', 'pidfd', 'remote'] as const;
type Transport = (typeof TRANSPORTS)[number];
/** Where the command runs in this process: its numbers are this process's. */
const IN_PROCESS: readonly Transport[] = ['direct', 'worker', 'helper'];

const RAW_CLOSE = join(__dirname, 'fixtures', 'raw-close-command.js');
const RECEIVING = join(__dirname, 'fixtures', 'receiving-command.js');
const TRACKED = join(__dirname, 'fixtures', 'tracked-command.js');
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

/**
 * What the command has received on its socket (takeReceived), once it has
 * received something: its event loop reads it in its own time (on direct,
 * this one's: let it turn). Past a hang guard (a datagram lost or refused):
 * a TimeoutError saying how many looks found nothing.
 */
async function receivedBy(a: Connection, what: string): Promise<number[]> {
  const guard = new HangGuard(scaled(20_000));
  for (let looks = 1; ; looks++) {
    await sleep(5);
    const received = (await guard.within(a.call('takeReceived'), `${what}: takeReceived`)) as number[];
    if (received.length > 0) return received;
    if (guard.leftMs === 0) throw new TimeoutError(`${what}: nothing received within the hang guard (${guard.ms} ms, ${looks} looks of takeReceived, each [])`);
  }
}

/** Binds the command's socket at `path` as it runs, sends it `file`, and returns the number the command received it at. */
async function receiveOne(a: Connection, sender: DatagramSocket, path: string, file: number): Promise<number> {
  await a.call('listen', path);
  await sender.sendTo(path, Buffer.from('fd'), [file]);
  const received = await receivedBy(a, `the fd sent to ${path}`);
  expect(received.length).toBe(1);
  return received[0] as number;
}

function specFor(transport: Transport, module: string, exportName: string): { command: { name: string } | { module: string; export: string } } {
  return transport === 'helper' ? { command: { name: exportName === 'RawCloseCommand' ? 'rawclose' : 'receiving' } } : { command: { module, export: exportName } };
}

describe('closeClientFds of a number the command does not hold as its client\'s', () => {
  const suite = daemonForSuite('not-held', {
    diagnostics: true,
    commands: { rawclose: { module: RAW_CLOSE, export: 'RawCloseCommand' }, receiving: { module: RECEIVING, export: 'ReceivingCommand' } },
  });

  const open = (transport: Transport, module = RAW_CLOSE, exportName = 'RawCloseCommand'): Promise<Connection> =>
    connect(transport, { ...specFor(transport, module, exportName), socketPath: suite.daemon.socketPath });

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
                // The client's choice may name only numbers it holds (its copies landed there): then another number, the
                // lowest it does not hold, is the stranger.
                const stranger = notHeld.length > 0 ? (notHeld[at % notHeld.length] as number) : (WATCHED.find((fd) => !held.includes(fd)) as number);
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
    const path = join(suite.dir, `${transport}-program`);
    writeFileSync(path, 'program\n');
    const mine = makeMemfd('other-conn');
    const report = await checkFdLeaks(async () => {
      const a = await open(transport);
      const other = await connect(transport, { command: PROBE_COMMAND, socketPath: suite.daemon.socketPath });
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
    const path = join(suite.dir, `${transport}-reuse`);
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
   * A held fd (adopted, or received on the command's socket) that the
   * command closed itself with fs.closeSync, its number another file's
   * since: refused, on every transport (a child's or pidfd command's
   * adopted fds too, which the connection keeps without their file), that
   * file left open.
   */
  test.each(TRANSPORTS.flatMap((t) => (['adopted', 'received'] as const).map((how) => [t, how] as const)))(
    '%s: an fd %s, closed by the command itself, then another file at its number: refused (EBADF), the file left open',
    async (transport, how) => {
      const path = join(suite.dir, `${transport}-${how}-closed-itself`);
      writeFileSync(path, 'another file\n');
      const st = statSync(path);
      const file = makeMemfd('closed-itself');
      const report = await checkFdLeaks(async () => {
        const a = await open(transport, RECEIVING, 'ReceivingCommand');
        const sender = DatagramSocket.open();
        const socketDir = mkdtempSync(join(suite.dir, 'sock-'));
        let opened: number | undefined;
        let openedThere = false;
        try {
          let n: number;
          if (how === 'adopted') {
            n = await a.dupFileDescriptor(file);
            expect(await a.call('adopt', [n])).toBe(1);
          } else {
            n = await receiveOne(a, sender, join(socketDir, 's'), file);
          }
          expect(await a.call('rawClose', [n])).toBe(1);
          if (IN_PROCESS.includes(transport)) opened = openAt(path, n);
          else openedThere = (await a.call('openAt', path, n)) === n;
          expect(await a.call('files', [n])).toEqual([`${st.dev}:${st.ino}`]);
          expectRefused(await settle(a.call('closeClient', [n])), n, `${how}, closed by the command, another file there`);
          expect(await a.call('files', [n])).toEqual([`${st.dev}:${st.ino}`]);
          if (openedThere) expect(await a.call('rawClose', [n])).toBe(1);
        } finally {
          if (opened !== undefined) closeSync(opened);
          sender.close();
          await a.close();
          rmSync(socketDir, { recursive: true, force: true });
        }
      });
      closeFds([file]);
      expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
    },
    scaled(30_000),
  );

  /**
   * A command's adopted fd it closed itself, whose number another
   * connection's copy of the same file took, adopted by that connection's
   * command: a file check cannot tell the two apart, but the number is the
   * other command's now, so the first is refused (EBADF), and the other's fd
   * stays open; in a helper daemon, another client's.
   */
  test.each(IN_PROCESS)("%s: a number the command closed itself, then another connection's adopted copy of the same file: refused, that fd left open", async (transport) => {
    const file = makeMemfd('same-file');
    const report = await checkFdLeaks(async () => {
      const a = await open(transport);
      const other = await connect(transport, { command: PROBE_COMMAND, socketPath: suite.daemon.socketPath });
      const fillers: number[] = [];
      try {
        const n = await a.dupFileDescriptor(file);
        expect(await a.call('adopt', [n])).toBe(1);
        // The other connection's next copy takes n once it is free: fdbridge's own copies from its floor up to n
        // (direct, worker), every lower number (a helper daemon's copies are received at the lowest free one).
        if (transport === 'helper') {
          for (;;) {
            const fd = openSync('/dev/null', 'r');
            if (fd > n) {
              closeSync(fd);
              break;
            }
            fillers.push(fd);
          }
        } else {
          fillers.push(...fillUpTo(n, file));
        }
        expect(await a.call('rawClose', [n])).toBe(1);
        expect(await other.dupFileDescriptor(file)).toBe(n);
        expect(await other.call('adopt', [n])).toBe(1);
        closeOwnFds(fillers.splice(0));
        const ids = (await other.call('identities', [n])) as Array<{ dev: string; ino: string }>;
        // The same file: only who holds the number tells them apart.
        expect(await a.call('files', [n])).toEqual(ids.map((id) => `${id.dev}:${id.ino}`));
        expectRefused(await settle(a.call('closeClient', [n])), n, "another connection's adopted copy of the same file");
        expect(await other.call('identities', [n])).toEqual(ids);
        expect(await settle(other.call('closeAdopted', [n]))).toEqual({ ok: null });
      } finally {
        closeOwnFds(fillers);
        await a.close();
        await other.close();
      }
    });
    closeFds([file]);
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
      const socketDir = mkdtempSync(join(suite.dir, 'sock-'));
      try {
        for (const later of [false, true]) {
          const path = join(socketDir, later ? 'later' : 'now', 's');
          await a.call(later ? 'listenLater' : 'listen', path);
          await sender.sendTo(path, Buffer.from('fd'), [file]);
          const [fd] = (await receivedBy(a, `the fd sent to ${path}`)) as [number];
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

  /**
   * What a command holds is recorded with its connection, not the process:
   * once connections end, nothing keeps their records (a process that
   * serves command after command does not grow). Run in a process of its
   * own, whose garbage collector can be asked to run: 100 direct and 100
   * helper commands each adopt fds, close one through closeClientFds and
   * the rest themselves, receive fds on a socket of their own and close
   * those as they end; then no record of theirs is left.
   */
  test('the records of ended connections are dropped: none outlives its connection', async () => {
    const script = `
const { join } = require('node:path');
const fs = require('node:fs');
const { connect, DatagramSocket, HelperDaemon } = require(${JSON.stringify(DIST_SRC)});
const FIXTURE = ${JSON.stringify(TRACKED)};
const { records } = require(FIXTURE);
(async () => {
  const HANG_GUARD_MS = Number(process.env.HANG_GUARD_MS);
  const deadline = Date.now() + HANG_GUARD_MS;
  const daemon = HelperDaemon.start({ socketPath: '@fdbridge-tracked-' + process.pid, commands: { tracked: { module: FIXTURE, export: 'TrackedCommand' } } });
  const file = fs.openSync('/dev/null', 'r');
  const sender = DatagramSocket.open();
  for (let i = 0; i < 100; i++) {
    for (const transport of ['direct', 'helper']) {
      const command = transport === 'helper' ? { name: 'tracked' } : { module: FIXTURE, export: 'TrackedCommand' };
      const c = await connect(transport, { command, socketPath: daemon.socketPath });
      await c.call('adoptAndClose', await c.dupFileDescriptors([file, file, file]));
      const path = join(process.env.DIR, transport + i, 's');
      await c.call('listen', path);
      await sender.sendTo(path, Buffer.from('fds'), [file, file]);
      for (let looks = 1, count = 0; (count = await c.call('receivedCount')) < 2; looks++) {
        if (Date.now() > deadline) throw new Error(transport + ' ' + i + ': ' + count + ' of 2 fds received after ' + looks + ' looks, within the hang guard (' + HANG_GUARD_MS + ' ms)');
        await new Promise((r) => setTimeout(r, 2));
      }
      await c.close();
    }
  }
  sender.close();
  fs.closeSync(file);
  await daemon.close();
  // A WeakRef is cleared only once the job that read it has ended: a turn
  // between collections, and collections until none is alive, or the hang
  // guard has passed (a record kept alive: the count says how many).
  const alive = () => records.filter((r) => r.deref() !== undefined).length;
  let collections = 0;
  do {
    await new Promise((r) => setTimeout(r, 10));
    global.gc();
    collections++;
  } while (alive() > 0 && Date.now() < deadline);
  console.log(JSON.stringify({ made: records.length, alive: alive() }));
  if (alive() > 0) console.error('alive after ' + collections + ' collections');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;
    const socketDir = mkdtempSync(join(suite.dir, 'tracked-'));
    try {
      let out = '';
      const report = await checkFdLeaks(async () => {
        out = await new Promise<string>((resolve, reject) =>
          execFile(
            process.execPath,
            ['--expose-gc', '-e', script],
            // The script's own waits end by its hang guard; the kill only if it hangs past that.
            { env: { ...process.env, DIR: socketDir, HANG_GUARD_MS: String(scaled(40_000)) }, timeout: scaled(50_000), killSignal: 'SIGKILL' },
            (err, stdout, stderr) =>
            err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
          ),
        );
      });
      expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
      expect(JSON.parse(out.trim())).toEqual({ made: 200, alive: 0 });
    } finally {
      rmSync(socketDir, { recursive: true, force: true });
    }
  }, scaled(60_000));
});
