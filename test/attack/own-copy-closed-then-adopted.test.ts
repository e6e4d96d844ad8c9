/**
 * A command closes a copy it was given by itself (fs.closeSync), then
 * names its number: adoptFd(n), or context.closeClientFds([n]) once it had
 * adopted it (or not). The number is free then, or another fd has taken
 * it: in a helper daemon another client's copy (of another uid), adopted
 * by that client's command or not, or another client's connection socket;
 * in this process (direct, worker) another connection's copy or a new
 * connection's socket, or another connection's copy its command adopted,
 * or a file the program opens there; in a remote command's process the
 * program's file. adoptFd refuses a number whose copy is gone (a
 * SystemError EBADF, the number left alone), and closeClientFds refuses,
 * closing nothing of its list, any number that is not an fd the command
 * adopted and has not closed since (itself, or through closeClientFds):
 * a copy given and not adopted, one it closed itself, one it closed
 * through closeClientFds before, another uid's copy, the daemon's own
 * fds (its event loop's among them). No other client's fd is ever
 * closed, every refusal is typed, and the fd tables are as they were
 * afterwards.
 *
 * The helper daemon's part runs as root: client A here, its command the
 * one that closes behind fdbridge's back; client B as another uid.
 */
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, openFdTable, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { closeOwnFds } from '../../src/fd';
import { fillUpTo } from '../util/fill-up-to';
import { openAt } from '../util/open-at';
import { DIST_SRC, isRoot, spawnAsUid, type NobodyProcess } from '../util/nobody';
import { fdTableSettles, startHelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';

const describeRoot = isRoot ? describe : describe.skip;

/** The other user: an allowed uid of its own. */
const OTHER = 20301;
const FIXTURE = join(__dirname, 'fixtures', 'raw-close-command.js');

/** What the command's refusal must be: typed, EBADF, whatever the transport. */
function expectEbadf(outcome: unknown, what: string): void {
  expect({ what, remote: outcome instanceof RemoteError, name: (outcome as RemoteError).remote?.name, code: (outcome as RemoteError).remote?.code }).toEqual({
    what,
    remote: true,
    name: 'SystemError',
    code: 'EBADF',
  });
}

/** The file an fd is (device and inode). */
function identity(fd: number): string {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
}

/** The call's value (null for none), or what it rejected with. */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => ({ ok: v ?? null }),
    (e: unknown) => e,
  );
}

/**
 * Client B, as OTHER: on each stdin line (JSON `{ id, op }`) it connects
 * (`connect`: a new connection, whose socket the daemon accepts at its
 * lowest free number), DUPs its file on its newest connection (`dup`,
 * adopting it there when `adopt`; prints the daemon's number), `check`s
 * every connection (an echo) and every fd it gave (the file the daemon
 * holds there), or closes them all (`reset`); it prints `{ r<id>: ... }`.
 */
const CLIENT_B = `
const fs = require('node:fs');
const { connect, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const src = fs.openSync(process.env.B_FILE, 'r');
const st = fs.fstatSync(src, { bigint: true });
const file = { dev: String(st.dev), ino: String(st.ino) };
const options = { command: PROBE_COMMAND, socketPath: process.env.B_SOCKET, trustPeer: { uids: [0] } };
const conns = [];
const handle = async (m) => {
  if (m.op === 'connect') {
    conns.push({ c: await connect('helper', options), fds: [] });
    return conns.length;
  }
  if (m.op === 'dup') {
    const k = conns[conns.length - 1];
    const fd = await k.c.dupFileDescriptor(src);
    if (m.adopt) await k.c.call('adopt', [fd]);
    k.fds.push(fd);
    return fd;
  }
  if (m.op === 'check') {
    const out = [];
    for (const k of conns) {
      const echo = await k.c.call('echo', 'alive').catch((e) => e.constructor.name + ': ' + e.message);
      const ids = await k.c.call('identities', k.fds).catch((e) => e.constructor.name + ': ' + e.message);
      out.push({ echo, ids: Array.isArray(ids) ? ids.map((i) => (i.dev === file.dev && i.ino === file.ino ? 'mine' : i)) : ids, fds: k.fds.length });
    }
    return out;
  }
  for (const k of conns.splice(0)) await k.c.close();
  return 'reset';
};
let chain = Promise.resolve();
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line);
  chain = chain.then(() => handle(m)).then(
    (v) => console.log(JSON.stringify({ ['r' + m.id]: v })),
    (e) => console.log(JSON.stringify({ ['r' + m.id]: { failed: String(e && e.stack) } })),
  );
});
console.log(JSON.stringify({ started: true }));
`;

/** Sends B one request and waits for its answer. */
let requests = 0;
async function ask<T>(b: NobodyProcess, op: string, extra: Record<string, unknown> = {}): Promise<T> {
  const id = ++requests;
  b.child.stdin?.write(`${JSON.stringify({ id, op, ...extra })}\n`);
  const answer = (await b.line<Record<string, unknown>>(`r${id}`))[`r${id}`];
  if (answer !== null && typeof answer === 'object' && 'failed' in answer) throw new Error(`client B: ${String((answer as { failed: unknown }).failed)}`);
  return answer as T;
}

/** One step of A's command, or of client B. */
type Step =
  | { kind: 'give'; n: number }
  | { kind: 'closeOwn'; pick: number }
  | { kind: 'adopt'; pick: number }
  | { kind: 'closeClient'; picks: number[] }
  | { kind: 'otherDup'; adopt: boolean }
  | { kind: 'otherConnect' }
  | { kind: 'closeOthers'; pick: number }
  | { kind: 'closeDaemons'; pick: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('give' as const), n: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('closeOwn' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('adopt' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('closeClient' as const), picks: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('otherDup' as const), adopt: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('otherConnect' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('closeOthers' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('closeDaemons' as const), pick: fc.nat() }) },
);

/**
 * What a number A's command was given is, as A sees it: its copy there
 * (`given`), adopted (`adopted`), closed by the command itself before or
 * after it adopted it (`closedGiven`, `closedAdopted`), or none of its any
 * more (`gone`: forgotten by the connection on a refused adoption, or
 * closed through closeClientFds).
 */
type Status = 'given' | 'adopted' | 'closedGiven' | 'closedAdopted' | 'gone';

/** `list[pick % length]`, or undefined for an empty list. */
const pickOf = <T,>(list: readonly T[], pick: number): T | undefined => (list.length === 0 ? undefined : list[pick % list.length]);

describeRoot("a helper command's own copy closed by itself, then adopted or closed with closeClientFds: another uid's fds stay that uid's", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-own-copy-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('generated: give, close its own copy, adopt, closeClientFds (A) among another uid\'s DUPs and connections (B)', async () => {
    const socketPath = `@fdbridge-own-copy-${process.pid}`;
    const daemon = await startHelperProcess(socketPath, ['--allow-uid', String(OTHER), '--command', `rawclose=${FIXTURE}#RawCloseCommand`]);
    let runs = 0;
    try {
      const baseline = openFdTable(daemon.pid);
      /** One run: A's steps and B's, then B's check, everything closed. */
      const runSteps = async (bFile: string, sameFile: boolean, steps: Step[]): Promise<void> => {
          runs++;
          const aPath = join(dir, `a-${runs}`);
          writeFileSync(aPath, `a ${runs}\n`);
          // A's file, or B's (one both users may open): then only who holds a number tells A's fd from B's.
          const aFile = openSync(sameFile ? bFile : aPath, 'r');
          const b = spawnAsUid(OTHER, process.execPath, ['-e', CLIENT_B], { B_FILE: bFile, B_SOCKET: socketPath });
          let a: Connection | undefined;
          const status = new Map<number, Status>();
          /** The daemon's numbers of B's copies. */
          const bFds: number[] = [];
          const withStatus = (...wanted: Status[]): number[] => [...status].filter(([, s]) => wanted.includes(s)).map(([fd]) => fd);
          try {
            await b.line('started');
            a = await connect('helper', { command: { name: 'rawclose' }, socketPath });
            const conn = a;
            await ask(b, 'connect');
            for (const step of steps) {
              if (step.kind === 'give') {
                for (const fd of await conn.dupFileDescriptors(new Array<number>(step.n).fill(aFile))) status.set(fd, 'given');
              } else if (step.kind === 'closeOwn') {
                const fd = pickOf(withStatus('given', 'adopted'), step.pick);
                if (fd === undefined) continue;
                expect(await conn.call('rawClose', [fd])).toBe(1);
                status.set(fd, status.get(fd) === 'given' ? 'closedGiven' : 'closedAdopted');
              } else if (step.kind === 'adopt') {
                const fd = pickOf(withStatus('given', 'closedGiven', 'adopted'), step.pick);
                if (fd === undefined) continue;
                const outcome = await settle(conn.call('adopt', [fd]));
                if (status.get(fd) === 'given') {
                  expect({ step, outcome }).toEqual({ step, outcome: { ok: 1 } });
                  status.set(fd, 'adopted');
                } else {
                  // Its copy is gone (closed by the command, the number free or another's), or adopted already.
                  expectEbadf(outcome, `adopt ${fd} (${status.get(fd)})`);
                  if (status.get(fd) === 'closedGiven') status.set(fd, 'gone');
                }
              } else if (step.kind === 'closeClient') {
                const numbers = [...status.keys()];
                const fds = [...new Set(step.picks.map((p) => pickOf(numbers, p) as number).filter((fd) => fd !== undefined))];
                if (fds.length === 0) continue;
                // Refused, nothing closed, unless every one is an fd A's command adopted and has
                // not closed since (itself or through closeClientFds): not a copy still given, not
                // one it closed itself, not a number it closed through closeClientFds before,
                // whether free now or B's (or the daemon's).
                const refused = fds.some((fd) => status.get(fd) !== 'adopted');
                const outcome = await settle(conn.call('closeClient', fds));
                if (refused) {
                  expectEbadf(outcome, `closeClient ${JSON.stringify(fds.map((fd) => [fd, status.get(fd)]))}`);
                } else {
                  expect({ step, fds, outcome }).toEqual({ step, fds, outcome: { ok: null } });
                  for (const fd of fds) status.set(fd, 'gone');
                }
              } else if (step.kind === 'otherDup') {
                const fd = await ask<number>(b, 'dup', { adopt: step.adopt });
                bFds.push(fd);
                // It took a number A's command freed (or another free one): A's copy there, if any, is gone.
                if (status.has(fd)) status.set(fd, 'gone');
              } else if (step.kind === 'closeOthers' || step.kind === 'closeDaemons') {
                // A's command names a number that is not its own: one of B's copies (adopted or
                // not), or any fd of the daemon's (its event loop's, its listening socket, B's
                // sockets); A's own adopted fds are left out.
                const numbers = step.kind === 'closeOthers' ? bFds : [...openFdTable(daemon.pid).keys()].sort((x, y) => x - y);
                const fd = pickOf(
                  numbers.filter((n) => status.get(n) !== 'adopted'),
                  step.pick,
                );
                if (fd === undefined) continue;
                const table = openFdTable(daemon.pid);
                expectEbadf(await settle(conn.call('closeClient', [fd])), `closeClient ${fd}, not A's (${step.kind}, ${String(status.get(fd))})`);
                // Nothing of the daemon's closed: its fd table as it was.
                expect(openFdTable(daemon.pid)).toEqual(table);
              } else {
                await ask(b, 'connect');
              }
              // A's own new copies can take a number it had before: that one is a copy again (set above).
            }
            // Every fd of B's is its file still, and every connection of B's answers.
            const checked = await ask<Array<{ echo: unknown; ids: unknown; fds: number }>>(b, 'check');
            expect(checked).toEqual(checked.map((c) => ({ echo: 'alive', ids: new Array<string>(c.fds).fill('mine'), fds: c.fds })));
            // What A adopted and kept is still its file: closeClientFds takes it (it would refuse another file).
            const kept = withStatus('adopted');
            if (kept.length > 0) expect(await settle(conn.call('closeClient', kept))).toEqual({ ok: null });
            await ask(b, 'reset');
          } finally {
            await a?.close();
            b.child.stdin?.end();
            b.kill();
            await b.exited();
            closeSync(aFile);
          }
      };
      await assertGuarded(
        fc.asyncProperty(fc.constantFrom('/dev/null', '/etc/hostname', '/etc/passwd'), fc.boolean(), fc.array(stepArb, { minLength: 1, maxLength: 25 }), async (bFile, sameFile, steps) => {
          // This process's fd table too: A's connection, its file, B's pipes.
          const report = await checkFdLeaks(() => runSteps(bFile, sameFile, steps), { settleMs: 2000 });
          expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
          expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
        }),
        {
          numRuns: 16,
          examples: [
            // A's copy closed by its command and adopted; B's copy lands there; A closes "its" adopted fd.
            ['/etc/passwd', false, [{ kind: 'give', n: 1 }, { kind: 'closeOwn', pick: 0 }, { kind: 'adopt', pick: 0 }, { kind: 'otherDup', adopt: false }, { kind: 'closeClient', picks: [0] }]],
            // The same, B's new connection's socket landing there.
            ['/dev/null', false, [{ kind: 'give', n: 1 }, { kind: 'closeOwn', pick: 0 }, { kind: 'adopt', pick: 0 }, { kind: 'otherConnect' }, { kind: 'closeClient', picks: [0] }]],
            // A adopts and closes its fd through closeClientFds; B's copy lands there and B's command adopts it; A
            // closes the number again.
            ['/etc/passwd', false, [{ kind: 'give', n: 1 }, { kind: 'adopt', pick: 0 }, { kind: 'closeClient', picks: [0] }, { kind: 'otherDup', adopt: true }, { kind: 'closeClient', picks: [0] }]],
            // A names B's adopted copy, and then B's copy not adopted.
            ['/etc/hostname', false, [{ kind: 'otherDup', adopt: true }, { kind: 'closeOthers', pick: 0 }, { kind: 'otherDup', adopt: false }, { kind: 'closeOthers', pick: 1 }]],
            // A names the daemon's own fds, its lowest ones (the event loop's) among them.
            ['/dev/null', false, [{ kind: 'closeDaemons', pick: 0 }, { kind: 'closeDaemons', pick: 3 }, { kind: 'closeDaemons', pick: 5 }, { kind: 'closeDaemons', pick: 7 }, { kind: 'closeDaemons', pick: 9 }, { kind: 'closeDaemons', pick: 11 }, { kind: 'closeDaemons', pick: 13 }]],
            // A adopts, closes its adopted fd itself; B's copy of the same file lands there and B's command adopts it: a
            // file check passes, but the number is B's command's now.
            ['/etc/passwd', true, [{ kind: 'give', n: 1 }, { kind: 'adopt', pick: 0 }, { kind: 'closeOwn', pick: 0 }, { kind: 'otherDup', adopt: true }, { kind: 'closeClient', picks: [0] }]],
            // A adopts, closes its adopted fd itself; B's copy lands there and B's command adopts it.
            ['/etc/hostname', false, [{ kind: 'give', n: 2 }, { kind: 'adopt', pick: 0 }, { kind: 'closeOwn', pick: 1 }, { kind: 'otherDup', adopt: true }, { kind: 'closeClient', picks: [0] }]],
            // A's command closes its copy unadopted; B's copy lands there and B's command adopts it (no fd of fdbridge's
            // at the number then); A closes the number.
            ['/dev/null', false, [{ kind: 'give', n: 1 }, { kind: 'closeOwn', pick: 0 }, { kind: 'otherDup', adopt: true }, { kind: 'closeClient', picks: [0] }, { kind: 'adopt', pick: 0 }]],
          ],
        },
      );
    } finally {
      await daemon.stop('SIGKILL');
    }
  }, scaled(300000));
});

type Transport = 'direct' | 'worker' | 'remote';
/**
 * Who takes the number once the command closed its copy: nobody, another connection's copy, another connection's
 * copy that its command adopted, a new child connection's socket, a file the program opens there (another file than
 * the copy's: on remote, the command's process opens it).
 */
type Taker = 'none' | 'copy' | 'adopted' | 'socket' | 'program';
/** What the command does: adopt the closed copy's number; close it (closeClientFds) adopted before it closed it, or not adopted. */
type Act = 'adopt' | 'closeAdopted' | 'closeUnadopted';

const ACTS = ['adopt', 'closeAdopted', 'closeUnadopted'] as const;
// A remote command's process holds no fd of fdbridge's at such a number: the number is free, or the program's file.
const cases = [
  ...(['direct', 'worker'] as const).flatMap((transport) =>
    (['none', 'copy', 'adopted', 'socket', 'program'] as const).flatMap((taker) => ACTS.map((act) => ({ transport, taker, act }))),
  ),
  ...(['none', 'program'] as const).flatMap((taker) => ACTS.map((act) => ({ transport: 'remote' as const, taker, act }))),
];

describe("a direct, worker or remote command's own copy closed by itself, then adopted or closed with closeClientFds", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-own-copy-local-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each(cases)(
    '$transport, the number taken by $taker, the command does $act: refused (EBADF), and what took the number is untouched',
    async ({ transport, taker, act }: { transport: Transport; taker: Taker; act: Act }) => {
      const path = join(dir, `${transport}-${taker}-${act}`);
      writeFileSync(path, 'given\n');
      const report = await checkFdLeaks(() => runLocalCase(transport, taker, act, path));
      expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
    },
    scaled(30_000),
  );
});

/** One case of the direct, worker or remote part: checks what it can on the way. */
async function runLocalCase(transport: Transport, taker: Taker, act: Act, path: string): Promise<void> {
  const file = openSync(path, 'r');
  const a = await connect(transport, { command: { module: FIXTURE, export: 'RawCloseCommand' } });
  const other = taker === 'copy' || taker === 'adopted' ? await connect(transport, { command: PROBE_COMMAND }) : undefined;
  let socketConn: Connection | undefined;
  let programFile: number | undefined;
  let remoteProgramFile = false;
  // The other connection's file: another than the copy's, which a file check tells apart.
  let otherFile: number | undefined;
  try {
    const n = await a.dupFileDescriptor(file);
    if (act === 'closeAdopted') expect(await a.call('adopt', [n])).toBe(1);
    // In this process, fdbridge's next fd takes n once it is closed (a remote command's process has none).
    const fillers = taker === 'none' || transport === 'remote' ? [] : fillUpTo(n, file);
    try {
      expect(await a.call('rawClose', [n])).toBe(1);
      let check: () => Promise<void> = async () => undefined;
      if (taker === 'copy' || taker === 'adopted') {
        const conn = other as Connection;
        writeFileSync(`${path}.other`, 'other\n');
        otherFile = openSync(`${path}.other`, 'r');
        expect(await conn.dupFileDescriptor(otherFile)).toBe(n);
        if (taker === 'adopted') expect(await conn.call('adopt', [n])).toBe(1);
        const [id] = (await conn.call('identities', [n])) as Array<{ dev: string; ino: string }>;
        check = async () => {
          const [now] = (await conn.call('identities', [n])) as Array<{ dev: string; ino: string }>;
          expect(now).toEqual(id);
        };
      } else if (taker === 'program') {
        const programPath = `${path}.program`;
        writeFileSync(programPath, 'program\n');
        if (transport === 'remote') {
          // The command's process opens it there.
          expect(await a.call('openAt', programPath, n)).toBe(n);
          remoteProgramFile = true;
          const [id] = (await a.call('files', [n])) as string[];
          const st = statSync(programPath);
          expect(id).toBe(`${st.dev}:${st.ino}`);
          check = async () => {
            // The program's file is still open at its number, and is still that file.
            expect(await a.call('files', [n])).toEqual([id]);
          };
        } else {
          programFile = openAt(programPath, n);
          const id = identity(n);
          expect(id).not.toBe(identity(file));
          check = async () => {
            // The program's file is still open at its number, and is still that file.
            expect(identity(n)).toBe(id);
            expect(openFdTable().get(n)).toBe(programPath);
          };
        }
      } else if (taker === 'socket') {
        socketConn = await connect('child', { command: PROBE_COMMAND });
        const conn = socketConn;
        // A new connection's socket takes the lowest free number at or above the floor: the closed copy's.
        const target = openFdTable().get(n);
        expect(target).toMatch(/^socket:/);
        check = async () => {
          expect(openFdTable().get(n)).toBe(target);
          await expect(conn.call('echo', 1)).resolves.toBe(1);
        };
      } else if (transport === 'remote') {
        // Nothing took it: the number is free in the command's process.
        expect(await a.call('files', [n])).toEqual([null]);
      }
      const outcome = await settle(act === 'adopt' ? a.call('adopt', [n]) : a.call('closeClient', [n]));
      // Whatever is at the number (nothing, another's fd, the program's file) is not the command's copy any more.
      expectEbadf(outcome, `${act} ${n} taken by ${taker}`);
      await check();
    } finally {
      closeOwnFds(fillers);
      if (programFile !== undefined) closeSync(programFile);
    }
    if (remoteProgramFile) expect(await a.call('rawClose', [n])).toBe(1);
  } finally {
    await a.close();
    await other?.close();
    await socketConn?.close();
    closeSync(file);
    if (otherFile !== undefined) closeSync(otherFile);
  }
}
