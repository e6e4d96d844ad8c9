/**
 * A number the caller has closed is EBADF on every transport, never a copy
 * of some other file: the fds the library makes for itself (pins, queued
 * copies, the duplicates a direct or worker command receives, pidfd pins)
 * are numbered at or above a floor the caller's fds do not reach, and the
 * copies made of a batch sent in pieces go above every fd of the batch.
 *
 * Each case makes the hazard certain rather than likely: the closed number
 * is the lowest free one when the library next makes an fd (or, for a
 * batch, a number just above the pieces before it), exactly where an fd
 * taking the lowest free number would land.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';

import { SystemError, type Connection, type WireIdentity } from '../../src';
import { closeFd, closeFds, diffFdTables, dupFd, fdFloor, fdIdentity, makeMemfd, openFdTable } from '../../src/fd';
import { fdTableSettles, helperForSuite } from '../util/processes';
import { connectionsPerTest, TRANSPORTS } from '../util/transport-suite';

const PAST_FLOOR = join(__dirname, '..', 'fixtures', 'past-floor.js');

const suite = helperForSuite('fdbridge-numbering-');

function identityOf(fd: number): WireIdentity {
  const id = fdIdentity(fd);
  return { dev: String(id.dev), ino: String(id.ino), type: id.type };
}

/** The lowest free fd number of this process now. */
function lowestFree(): number {
  const fd = dupFd(0);
  closeFd(fd);
  return fd;
}

describe.each(TRANSPORTS)('%s transport', (transport) => {
  const connections = connectionsPerTest(transport, suite);
  let conn: Connection;

  beforeEach(async () => {
    conn = await connections.open();
  });

  const farTable = async (): Promise<Map<number, string>> => new Map(await conn.call<Array<[number, string]>>('openFds'));

  test.each([253, 300, 505, 599])(
    'a 600-fd batch whose fds[%i] is closed rejects with EBADF and leaves none of the batch in the command',
    async (closedAt) => {
      // Seven files, so that a slot answered with another slot's file shows.
      const files = Array.from({ length: 7 }, (_, i) => makeMemfd(`numbering-batch-${i}`));
      // Taken from the lowest free numbers: mostly consecutive, so the closed
      // one is just above the earlier pieces, where their copies would go.
      const fds = Array.from({ length: 600 }, (_, i) => dupFd(files[i % 7]!));
      try {
        closeFd(fds[closedAt]!);
        const before = await farTable();
        const err = await conn.dupFileDescriptors(fds).then(
          (remote) => new Error(`resolved; slot ${closedAt} holds ${JSON.stringify(remote[closedAt])}`),
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(SystemError);
        expect(err).toMatchObject({ code: 'EBADF' });
        // All or nothing: the pieces that did arrive were released again.
        expect(await farTable()).toEqual(before);
        // And the connection still works.
        const [one] = await conn.dupFileDescriptors([fds[0]!]);
        expect(await conn.call('identities', [one])).toEqual([identityOf(fds[0]!)]);
      } finally {
        closeFds(fds.filter((_, i) => i !== closedAt));
        closeFds(files);
      }
    },
  );

  test('a number closed before duplications made in the same tick is EBADF, never a copy of another call\'s fd', async () => {
    const a = makeMemfd('numbering-a');
    // Taken after `a`, at the lowest free number: closed, it is the lowest again.
    const b = makeMemfd('numbering-b');
    try {
      closeFd(b);
      expect(lowestFree()).toBe(b);
      // Two of `a` first: on every transport at least one of them makes an
      // fd in this process (a direct or worker duplicate, a pin).
      const settled = await Promise.allSettled([conn.dupFileDescriptor(a), conn.dupFileDescriptor(a), conn.dupFileDescriptor(b)]);
      const [first, second, third] = settled;
      expect(third).toMatchObject({ status: 'rejected', reason: { code: 'EBADF' } });
      const remote = [first, second].map((s) => (s?.status === 'fulfilled' ? s.value : -1));
      expect(await conn.call('identities', remote)).toEqual([identityOf(a), identityOf(a)]);
      await conn.call('adopt', remote);
      await conn.call('closeAdopted', remote);
    } finally {
      closeFd(a);
    }
  });

  test("a number closed before a new connection is made is EBADF, never one of that connection's own fds", async () => {
    const b = makeMemfd('numbering-b');
    closeFd(b);
    expect(lowestFree()).toBe(b);
    const helperBefore = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
    const before = openFdTable();
    // Its socket would be made at the lowest free number, `b`, if the
    // library took numbers as open(2) does.
    const second = await connections.open();
    const made = diffFdTables(before, openFdTable()).opened;
    expect(made.filter(({ fd, target }) => target.startsWith('socket:') && fd < fdFloor())).toEqual([]);
    // Whatever it holds here, wherever numbered (a worker's event loop
    // opens its fds at the lowest free numbers), is refused as closed.
    for (const { fd, target } of made) {
      await expect(conn.dupFileDescriptor(fd).then(() => `fd ${fd} -> ${target} was sent`)).rejects.toMatchObject({ code: 'EBADF' });
    }
    for (const c of [conn, second]) {
      await expect(c.dupFileDescriptor(b)).rejects.toMatchObject({ code: 'EBADF' });
      await expect(c.dupFileDescriptors([b])).rejects.toMatchObject({ code: 'EBADF' });
      if (transport !== 'pidfd') expect(() => c.dupFileDescriptorSync(b)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    }
    if (helperBefore) {
      // The daemon's side: the connection it accepted (and the watch on the
      // client's process) above its floor too, where a number a command
      // closed cannot be.
      const [soft] = await second.call<[number, number]>('fdLimit');
      const daemonFloor = Math.min(Math.floor(soft / 2), 8192);
      const accepted = diffFdTables(helperBefore, openFdTable(suite.helper.pid)).opened;
      expect(accepted.some(({ target }) => target.startsWith('socket:'))).toBe(true);
      expect(accepted.filter(({ fd }) => fd < daemonFloor)).toEqual([]);
    }
  });

  test('a batch, then a number closed after it in the same tick: EBADF', async () => {
    const a = makeMemfd('numbering-a');
    // Taken after `a`, at the lowest free number: closed, it is the lowest again.
    const b = makeMemfd('numbering-b');
    try {
      const batch = conn.dupFileDescriptors([a, a]);
      const lone = conn.dupFileDescriptor(a);
      closeFd(b);
      const late = conn.dupFileDescriptor(b).catch((e: unknown) => e);
      const lateBatch = conn.dupFileDescriptors([a, b]).catch((e: unknown) => e);
      const remote = [...(await batch), await lone];
      expect(await late).toMatchObject({ code: 'EBADF' });
      expect(await lateBatch).toMatchObject({ code: 'EBADF' });
      expect(await conn.call('identities', remote)).toEqual([identityOf(a), identityOf(a), identityOf(a)]);
      await conn.call('adopt', remote);
      await conn.call('closeAdopted', remote);
    } finally {
      closeFd(a);
    }
  });
});

/**
 * Past the floor, the floor keeps nothing apart: the caller's fds take the
 * numbers the library's own fds take. The library then knows its own fds
 * by number (a process-wide registry) and refuses any the caller names, as
 * closed. Each run is a process of its own (test/fixtures/past-floor.js)
 * that lowers its RLIMIT_NOFILE (1024: floor 512) or keeps the inherited
 * one (floor 8192), and opens fds until the lowest free number is past the
 * floor.
 */
describe.each(TRANSPORTS)('%s transport, with the caller\'s fds past the floor', (transport) => {
  test.each(['1024', 'keep'])('RLIMIT_NOFILE %s: a number closed in the same tick is EBADF, never a copy of the library\'s own fd', async (limit) => {
    const helperBefore = openFdTable(suite.helper.pid);
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [PAST_FLOOR, transport, suite.socketPath, limit], { maxBuffer: 1 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      ),
    );
    const report = JSON.parse(out) as {
      floor: number;
      cases: Record<string, { a: number; bFd: number; b: unknown; aDelivered: boolean; aFailed: string[]; error?: string }>;
      tableDiff: string;
      ownedLeft: number;
    };
    expect(report.floor).toBe(limit === 'keep' ? 8192 : 512);
    const cases = Object.entries(report.cases);
    // pidfd has no synchronous form: one case fewer.
    expect(cases).toHaveLength(transport === 'pidfd' ? 5 : 6);
    for (const [name, r] of cases) {
      // The setting up: `a` and `b` past the floor.
      expect({ name, past: r.a > report.floor && r.bFd > report.floor, error: r.error }).toEqual({ name, past: true, error: undefined });
      expect({ name, b: r.b }).toEqual({ name, b: { rejected: 'SystemError', code: 'EBADF' } });
      expect({ name, aDelivered: r.aDelivered, aFailed: r.aFailed }).toEqual({ name, aDelivered: true, aFailed: [] });
    }
    expect(report.tableDiff).toBe('');
    expect(report.ownedLeft).toBe(0);
    expect(await fdTableSettles(suite.helper.pid, helperBefore)).toBe('');
  });
});
