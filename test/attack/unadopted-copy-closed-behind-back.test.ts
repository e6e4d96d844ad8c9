/**
 * A duplicate fdbridge gave a direct or worker command, which the command
 * has not adopted, that the program closes behind fdbridge's back, its
 * number then taken by another file: a file the program opens there,
 * fdbridge's next duplicate (another connection's), or a new connection's
 * socket; before the connection's close() is called, or while it is under
 * way (its command's close() running, the sweep of its unadopted
 * duplicates still to come). The connection's close leaves that number
 * alone: the file there stays open and the same, a duplicate there stays
 * its command's, a socket there goes on serving its connection; and a leak
 * check around it blames the close on the code under test (`closed`,
 * `fdbridgeOwn`), never sets it aside as fdbridge's own. Before, the sweep
 * closed the number, whatever file it held then.
 */
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkFdLeaks, connect, openFdTable, PROBE_COMMAND, type CommandSpec, type Connection, type FdLeakReport } from '../../src';
import { closeOwnFds } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';
import { fillUpTo } from '../util/fill-up-to';
import { openAt } from '../util/open-at';
import { scaled } from '../util/time-scale';

type Transport = 'direct' | 'worker';
/** Who takes the number: the program (a file it opens), fdbridge (another connection's duplicate), a new child connection's socket. */
type Taker = 'program' | 'copy' | 'socket';
/** When: before the connection's close() is called, or while its command's close() runs. */
type When = 'before' | 'during';

interface Case {
  transport: Transport;
  taker: Taker;
  when: When;
  inCheck: boolean;
}

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-unadopted-copy-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The command whose close() ends once `gate` exists (test/fixtures/gated-close-command.js). */
const gated = (gate: string): CommandSpec => ({
  module: join(__dirname, '..', 'fixtures', 'gated-close-command.js'),
  export: 'GatedCloseCommand',
  args: [gate],
});

const identity = (fd: number): string => {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
};


/** The number taken, what to check of it once the connection is closed, and how to let it go. */
interface Taken {
  check(): Promise<void>;
  release(): Promise<void>;
}

/** `taker` takes the free number `n` with `file` (a file of the test's), or a socket of a new connection. */
async function take(taker: Taker, n: number, file: number, path: string, other: Connection | undefined): Promise<Taken> {
  if (taker === 'program') {
    expect(openAt(path, n)).toBe(n);
    return {
      check: async () => {
        // The program's file is still open at its number, and is still that file.
        expect(identity(n)).toBe(identity(file));
        expect(openFdTable().get(n)).toBe(path);
      },
      release: async () => closeSync(n),
    };
  }
  if (taker === 'copy') {
    const conn = other as Connection;
    expect(await conn.dupFileDescriptor(file)).toBe(n);
    return {
      check: async () => {
        // fdbridge's duplicate there is still the other command's, and valid.
        const [id] = (await conn.call('identities', [n])) as Array<{ dev: string; ino: string }>;
        expect(`${id?.dev}:${id?.ino}`).toBe(identity(file));
      },
      release: () => conn.close(),
    };
  }
  const conn = await connect('child', { command: PROBE_COMMAND });
  const target = openFdTable().get(n);
  expect(target).toMatch(/^socket:/);
  const socket = identity(n);
  return {
    check: async () => {
      // The new connection's socket is still there, and its connection works.
      expect(identity(n)).toBe(socket);
      await expect(conn.call('echo', 1)).resolves.toBe(1);
    },
    release: () => conn.close(),
  };
}

let serial = 0;

/**
 * One case: a duplicate given to `transport`'s command, closed behind
 * fdbridge's back and its number taken, the connection closed. Returns
 * what the check reported (inCheck), and checks everything else on the way.
 */
async function runCase(c: Case): Promise<{ report?: FdLeakReport; n: number; target: string }> {
  serial++;
  const gate = join(dir, `gate-${serial}`);
  const givenPath = join(dir, `given-${serial}`);
  const takerPath = join(dir, `taker-${serial}`);
  writeFileSync(givenPath, `given ${serial}\n`);
  writeFileSync(takerPath, `taker ${serial}\n`);
  const given = openSync(givenPath, 'r');
  const takerFile = openSync(takerPath, 'r');
  const conn = await connect(c.transport, { command: gated(gate) });
  const other = c.taker === 'copy' ? await connect(c.transport, { command: PROBE_COMMAND }) : undefined;
  try {
    const n = await conn.dupFileDescriptor(given); // not adopted: the connection's close sweeps it
    const target = openFdTable().get(n) as string;
    const registration = fdRegistration(n);
    const body = async (): Promise<void> => {
      // The program's file opens at the lowest free number (openAt fills
      // those below it); fdbridge's next fd at the lowest free one at or
      // above its floor, which the copies make `n`.
      const fillers = c.taker === 'program' ? [] : fillUpTo(n, given);
      try {
        if (c.when === 'before') writeFileSync(gate, '');
        const closing = c.when === 'during' ? conn.close() : undefined;
        closeSync(n); // behind fdbridge's back
        const taken = await take(c.taker, n, takerFile, takerPath, other);
        if (c.when === 'during') writeFileSync(gate, '');
        await (closing ?? conn.close());
        // The copy's registration has ended: the number is the program's
        // file's (none there) or the new fd of fdbridge's (its own).
        expect(fdRegistration(n) === 0).toBe(c.taker === 'program');
        expect(fdRegistration(n)).not.toBe(registration);
        await taken.check();
        await taken.release();
      } finally {
        closeOwnFds(fillers);
      }
    };
    if (!c.inCheck) {
      await body();
      return { n, target };
    }
    const report = await checkFdLeaks(body, { settleMs: 100 });
    return { report, n, target };
  } finally {
    writeFileSync(gate, '');
    await conn.close();
    await other?.close();
    closeSync(given);
    closeSync(takerFile);
  }
}

/** Every case: transport x taker x when x in a leak check or not. */
const cases: Case[] = (['direct', 'worker'] as const).flatMap((transport) =>
  (['program', 'copy', 'socket'] as const).flatMap((taker) =>
    (['before', 'during'] as const).flatMap((when) => [false, true].map((inCheck) => ({ transport, taker, when, inCheck }))),
  ),
);

test.each(cases)(
  "$transport, taken by $taker, $when the close, in a leak check: $inCheck: an unadopted duplicate closed behind fdbridge's back whose number another file takes: the connection's close leaves that file alone, and a check blames the close",
  async (c) => {
    // runCase has checked the taker's file and the copy's registration.
    const { report, n, target } = await runCase(c);
    expect(report !== undefined).toBe(c.inCheck);
    if (report !== undefined) {
      expect(report.leaks).toEqual([]);
      expect(report.closed).toEqual([{ pid: process.pid, role: 'self', fd: n, target, fdbridgeOwn: true }]);
      expect((report.ownClosed ?? []).map((e) => e.fd)).not.toContain(n);
    }
  },
  // A worker, or a child process, started per case: a hang guard for a loaded machine.
  scaled(30_000),
);

test.each([['direct'], ['worker']] as const)(
  "%s: a command cannot adopt its duplicate once the program closed it and another connection's duplicate took the number; that one stays the other command's to adopt",
  async (transport) => {
    const path = join(dir, `adopt-${transport}`);
    writeFileSync(path, 'adopt\n');
    const file = openSync(path, 'r');
    const first = await connect(transport, { command: PROBE_COMMAND });
    const second = await connect(transport, { command: PROBE_COMMAND });
    try {
      const n = await first.dupFileDescriptor(file);
      const fillers = fillUpTo(n, file);
      try {
        closeSync(n); // behind fdbridge's back
        expect(await second.dupFileDescriptor(file)).toBe(n);
        await expect(first.call('adopt', [n])).rejects.toThrow(`adoptFd(${n}): this fd was not duplicated into this command, or was adopted already`);
        expect(await second.call('adopt', [n])).toBe(1);
        await second.call('closeAdopted', [n]);
      } finally {
        closeOwnFds(fillers);
      }
    } finally {
      await first.close();
      await second.close();
      closeSync(file);
    }
  },
  scaled(30_000),
);
