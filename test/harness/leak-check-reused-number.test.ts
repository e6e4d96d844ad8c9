/**
 * An fd fdbridge registered as its own (a child, pidfd or helper
 * connection's socket, a child's pidfd) that the code under test closes
 * behind fdbridge's back, whose number is then taken by another file:
 * fdbridge's next duplicate (a direct command's), or a file the test opens.
 * fdbridge never closes, writes into or polls that number again: the file
 * there stays open and the same, a duplicate there stays valid for its
 * command, the connection whose socket it was ends with a ClosedError that
 * says so (its pidfd lost, it goes on working), and a leak check around it
 * blames the close on the code under test (`closed`, `fdbridgeOwn`), never
 * sets it aside as fdbridge's own (`ownClosed`).
 */
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, ClosedError, connect, openFdTable, PROBE_COMMAND, type Connection, type FdLeakReport } from '../../src';
import { openAt } from '../util/open-at';
import { helperForSuite } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { scaled } from '../util/time-scale';

const suite = helperForSuite('fdbridge-reused-number-');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-reused-number-files-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

type Transport = 'child' | 'pidfd' | 'helper';
/** Which of the connection's fds the program closes: its socket, or the pidfd watching its process (child, pidfd). */
type Victim = 'socket' | 'pidfd';
/** Who takes the number then: fdbridge (a direct command's duplicate), the program (a file it opens), or nobody. */
type Reuser = 'fdbridge' | 'program' | 'nobody';

interface Case {
  transport: Transport;
  victim: Victim;
  reuser: Reuser;
  inCheck: boolean;
}

/** The connection's fd of that kind among those it registered. */
function victimOf(victim: Victim, own: ReadonlyMap<number, string>): number {
  const kind = victim === 'pidfd' ? 'anon_inode:[pidfd]' : 'socket:';
  const found = [...own].find(([, target]) => target.startsWith(kind));
  if (!found) throw new Error(`no ${kind} fd among the connection's own: ${JSON.stringify([...own])}`);
  return found[0];
}

const identity = (fd: number): string => {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
};

/**
 * Duplicates `file` into `direct`'s command until a duplicate takes `fd`
 * (fdbridge's fds take the lowest free number at or above its floor).
 * Returns every duplicate made, the last at `fd`.
 */
async function dupAt(direct: Connection, file: number, fd: number): Promise<number[]> {
  const made: number[] = [];
  for (;;) {
    const d = await direct.dupFileDescriptor(file);
    made.push(d);
    if (d === fd) return made;
    if (d > fd) throw new Error(`fdbridge's duplicates skipped fd ${fd} (got ${d})`);
  }
}

/**
 * One case: connect, close the victim behind fdbridge's back, have the
 * number taken, use the connection and close it. Returns what the check
 * reported (inCheck), and checks everything else on the way.
 */
let serial = 0;

async function runCase(c: Case): Promise<{ report?: FdLeakReport; victim: number; target: string }> {
  serial++;
  const path = join(dir, `file-${serial}`);
  writeFileSync(path, `file ${serial}\n`);
  const file = openSync(path, 'r');
  const fileIdentity = identity(file);
  const had = registeredFds();
  const conn = await connect(c.transport, { command: PROBE_COMMAND, socketPath: suite.socketPath });
  const direct = await connect('direct', { command: PROBE_COMMAND });
  try {
    await conn.call('echo', 1);
    const table = openFdTable();
    const own = registeredSince(had);
    const victim = victimOf(c.victim, own);
    const target = table.get(victim) as string;
    const body = async (): Promise<void> => {
      // Waiting for its reply when the fd goes: it fails, typed, whatever else happens.
      const pending = expect(conn.call('hang')).rejects.toBeInstanceOf(ClosedError);
      closeSync(victim);
      let reused: number | undefined;
      let dups: number[] = [];
      if (c.reuser === 'program') reused = openAt(path, victim);
      if (c.reuser === 'fdbridge') dups = await dupAt(direct, file, victim);
      if (c.victim === 'socket') {
        // Ended: typed, now and for every later request, and nothing is written to the number.
        await expect(conn.call('echo', 2)).rejects.toThrow(ClosedError);
        await expect(conn.call('echo', 3)).rejects.toThrow(`its socket (fd ${victim}) was closed by someone other than fdbridge`);
        await expect(conn.dupFileDescriptor(file)).rejects.toBeInstanceOf(ClosedError);
      } else {
        // Its socket is intact: the connection goes on working.
        await expect(conn.call('echo', 2)).resolves.toBe(2);
        expect(await conn.dupFileDescriptor(file)).toBeGreaterThanOrEqual(0);
      }
      await conn.close();
      await pending;
      if (reused !== undefined) {
        // The program's file is still open at its number, and is still that file.
        expect(identity(reused)).toBe(fileIdentity);
        expect(openFdTable().get(reused)).toBe(path);
        closeSync(reused);
      }
      if (dups.length > 0) {
        // fdbridge's duplicates, the one at the number included, are still the command's and valid.
        const ids = (await direct.call('identities', dups)) as Array<{ dev: string; ino: string }>;
        expect(ids.map((id) => `${id.dev}:${id.ino}`)).toEqual(dups.map(() => fileIdentity));
        expect(openFdTable().get(victim)).toBe(path);
      }
      await direct.close();
    };
    if (!c.inCheck) {
      await body();
      return { victim, target };
    }
    const report = await checkFdLeaks(body, { settleMs: 100 });
    return { report, victim, target };
  } finally {
    await conn.close();
    await direct.close();
    closeSync(file);
  }
}

const cases = fc
  .record({
    transport: fc.constantFrom<Transport>('child', 'pidfd', 'helper'),
    victim: fc.constantFrom<Victim>('socket', 'pidfd'),
    reuser: fc.constantFrom<Reuser>('fdbridge', 'program', 'nobody'),
    inCheck: fc.boolean(),
  })
  // A helper connection has no pidfd of fdbridge's in this process: its socket is its only fd.
  .filter((c) => !(c.transport === 'helper' && c.victim === 'pidfd'));

test('generated: a registered fd closed behind fdbridge\'s back whose number another file takes: that file is never closed or written, the connection ends typed (socket), and a check blames the close', async () => {
  await fc.assert(
    fc.asyncProperty(cases, async (c) => {
      const { report, victim, target } = await runCase(c);
      if (report === undefined) return;
      expect(report.leaks).toEqual([]);
      expect(report.closed).toEqual([{ pid: process.pid, role: 'self', fd: victim, target, fdbridgeOwn: true }]);
      expect((report.ownClosed ?? []).map((e) => e.fd)).not.toContain(victim);
    }),
    { seed: Number(process.env.FDBRIDGE_TEST_SEED ?? 20261201), numRuns: Number(process.env.FDBRIDGE_TEST_RUNS ?? 10) },
  );
  // Each case spawns a process (or talks to the daemon): a hang guard for a loaded machine.
}, scaled(120_000));

test.each([
  ['child', 'pidfd', 'fdbridge'],
  ['child', 'socket', 'program'],
  ['pidfd', 'pidfd', 'program'],
  ['helper', 'socket', 'fdbridge'],
] as const)('%s connection, its %s closed behind fdbridge\'s back, the number taken by %s, in a leak check', async (transport, victim, reuser) => {
  const { report, victim: fd, target } = await runCase({ transport, victim, reuser, inCheck: true });
  expect(report?.closed).toEqual([{ pid: process.pid, role: 'self', fd, target, fdbridgeOwn: true }]);
});
