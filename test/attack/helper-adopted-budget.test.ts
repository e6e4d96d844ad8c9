/**
 * A helper daemon's fd limits (--max-fds, --max-fds-per-uid) count the fds
 * a client gave its command until the command closes them: adopting one
 * (context.adoptFd, the probe command's adopt()) hands it to the command,
 * but it is still an fd of the daemon's, held for that client. Were an
 * adopted fd no longer counted, a client looping DUP + adopt would grow the
 * daemon's fd table without bound: to its RLIMIT_NOFILE, where accept4 and
 * recvmsg fail for every uid. Here an allowed user (uid 20301) does just
 * that against a daemon at RLIMIT_NOFILE 1024 (a common unit's limit): it
 * is refused at its uid's budget (QuotaExceededError 'uidFds', the DUP's
 * fds closed), the daemon's fd table stays within that budget, and another
 * allowed user (nobody) is served meanwhile. Run as root.
 *
 * The generated test checks the accounting as a model: random DUPs
 * (single fds and batches of several frames), adopts, closes of adopted
 * fds and reconnections on two connections of one uid, each DUP granted or
 * refused (and with which quota) exactly as the model of the per-client
 * and per-uid limits says, the daemon's own counts agreeing. A second one
 * has the command close what it adopted by itself (not closeClientFds),
 * the numbers then taken by the other connection's fds, by files opened
 * here, or by nothing: no DUP is refused for fds nobody holds. A third
 * has the command close copies by itself before adopting them, files
 * opened here taking their numbers: the adoptions are refused (those files
 * are not the client's), and the client is not refused for them either.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, makeMemfd, type Connection } from '../../src';
import { closeFds, diffFdTables, openFdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { MAX_FDS_PER_FRAME } from '../../src/protocol';
import { statusOf, statusWhen } from '../util/helper-status';
import { withAttackedDaemon } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY, spawnAsUid } from '../util/nobody';
import { openAt } from '../util/open-at';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/** The attacker: an allowed uid of its own (not nobody, which plays the other user served meanwhile). */
const ATTACKER = 20301;
/** The daemon's RLIMIT_NOFILE: a DUP + adopt loop of more rounds than this would take it to EMFILE. */
const NOFILE = 1024;
const ROUNDS = NOFILE + 200;

/**
 * `node -e` script, as ATTACKER: DUP + adopt through the probe command
 * until a DUP is refused (at most ROUNDS rounds), then one DUP on a second
 * connection of the same uid; prints {held}. Told a line on stdin, has the
 * command close one fd it adopted, DUPs again, hangs up and prints {result}.
 */
function attackerScript(socketPath: string): string {
  return `
  const { closeFd, connect, makeMemfd } = require(${JSON.stringify(DIST_SRC)});
  const options = { command: { name: 'probe' }, socketPath: ${JSON.stringify(socketPath)}, trustPeer: { uids: [0] }, timeoutMs: 20000 };
  const outcome = (p) => p.then(() => 'served', (e) => e.code + ':' + e.quota);
  (async () => {
    const c = await connect('helper', options);
    const fd = makeMemfd('adopted');
    const adopted = [];
    let refused;
    for (let i = 0; i < ${ROUNDS} && refused === undefined; i++) {
      try {
        const n = await c.dupFileDescriptor(fd);
        await c.call('adopt', [n]);
        adopted.push(n);
      } catch (e) {
        refused = { code: e.code, quota: e.quota };
      }
    }
    const c2 = await connect('helper', options);
    const second = await outcome(c2.dupFileDescriptor(fd));
    console.log(JSON.stringify({ held: { adopted: adopted.length, refused, second } }));
    await new Promise((resolve) => process.stdin.once('data', resolve));
    // The command closes one it adopted: room for one more.
    await c.call('closeAdopted', [adopted[0]]);
    const after = await outcome(c.dupFileDescriptor(fd));
    await c2.close();
    await c.close();
    closeFd(fd);
    console.log(JSON.stringify({ result: { after } }));
  })().catch((e) => console.log(JSON.stringify({ held: { error: String(e && e.stack) }, result: { error: String(e && e.stack) } })));`;
}

/** `node -e` script, as nobody: a round trip with the probe command (3 fds given, one adopted and closed); prints {result}. */
function otherUserScript(socketPath: string): string {
  return `
  const { closeFd, connect, makeMemfd } = require(${JSON.stringify(DIST_SRC)});
  (async () => {
    const c = await connect('helper', { command: { name: 'probe' }, socketPath: ${JSON.stringify(socketPath)}, trustPeer: { uids: [0] }, timeoutMs: 20000 });
    const fd = makeMemfd('other');
    const given = await c.dupFileDescriptors([fd, fd, fd]);
    await c.call('adopt', [given[0]]);
    await c.call('closeAdopted', [given[0]]);
    const echoed = await c.call('echo', 'served');
    await c.close();
    closeFd(fd);
    return echoed;
  })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: e.code ?? e.name })));`;
}

describeRoot("fds a command adopted stay charged to the client's uid (attacker: an allowed uid; another user served meanwhile)", () => {
  test("a client looping DUP + adopt is refused at its uid's budget, the daemon's fd table stays within it, nobody is served; the fd table returns", async () => {
    await withAttackedDaemon('adopted-budget', ['--allow-uid', `${ATTACKER},${NOBODY}`], { nofile: NOFILE }, async (d) => {
      const { daemon, socketPath, baseline } = d;
      const { limits } = await statusOf(socketPath);
      const attacker = spawnAsUid(ATTACKER, process.execPath, ['-e', attackerScript(socketPath)]);
      try {
        const held = await attacker.line<{ held: Record<string, unknown> }>('held');
        // Every fd it adopted is still the daemon's, held for uid 20301: the uid's budget
        // (a quarter of what RLIMIT_NOFILE leaves for clients' fds) bounds them, on any connection of its.
        expect(held.held).toEqual({
          adopted: limits.maxFdsPerUid,
          refused: { code: 'ERR_FDBRIDGE_QUOTA', quota: 'uidFds' },
          second: 'ERR_FDBRIDGE_QUOTA:uidFds',
        });
        const s = await statusOf(socketPath);
        expect(s.uids.find((u) => u.uid === ATTACKER)).toMatchObject({ connections: 2, fdsHeld: limits.maxFdsPerUid, fdsClosing: 0 });
        // The daemon's fd table: the adopted fds, and 3 a connection at most (its socket, the pidfd
        // watching its client, a log fd copy) for the attacker's two and the status connections.
        expect(diffFdTables(baseline, openFdTable(daemon.pid)).opened.length).toBeLessThanOrEqual(limits.maxFdsPerUid + 3 * 3);

        // Another allowed user is served meanwhile.
        const other = d.runAsNobody(otherUserScript(socketPath));
        expect(await other.line('result')).toEqual({ result: 'served' });
        await other.exited();

        // Nothing was lost: once its command closed one fd it adopted, the attacker has room for one more.
        attacker.child.stdin?.end('go\n');
        expect(await attacker.line('result')).toEqual({ result: { after: 'served' } });
      } finally {
        attacker.kill();
        await attacker.exited();
      }
      await statusWhen(socketPath, (st) => !st.uids.some((u) => u.uid === ATTACKER || u.uid === NOBODY) && st.fdsClosing === 0 && st.socketsClosing === 0);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(120000));
});

/** One step of the generated test, on connection `conn` (0 or 1). */
type Step =
  | { kind: 'dup'; conn: number; n: number }
  | { kind: 'adopt'; conn: number; pick: number; k: number }
  | { kind: 'closeAdopted'; conn: number; pick: number; k: number }
  | { kind: 'reconnect'; conn: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('dup' as const), conn: fc.nat(1), n: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 6 }) }, fc.integer({ min: 7, max: 3 * MAX_FDS_PER_FRAME })) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('adopt' as const), conn: fc.nat(1), pick: fc.nat(), k: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('closeAdopted' as const), conn: fc.nat(1), pick: fc.nat(), k: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reconnect' as const), conn: fc.nat(1) }) },
);

/** The frames a batch of `n` fds travels in (Connection.dupFileDescriptors). */
function frameSizes(n: number): number[] {
  const sizes: number[] = [];
  for (let left = n; left > 0; left -= MAX_FDS_PER_FRAME) sizes.push(Math.min(MAX_FDS_PER_FRAME, left));
  return sizes;
}

/** `k` items of `list` from position `pick` on (wrapping). */
function slice(list: readonly number[], pick: number, k: number): number[] {
  if (list.length === 0) return [];
  const start = pick % list.length;
  return [...list.slice(start), ...list.slice(0, start)].slice(0, Math.min(k, list.length));
}

interface ModelConn {
  given: number[];
  adopted: number[];
}

/**
 * The outcome the limits give a batch of `n` fds on `conn`: its frames are
 * sent together and judged in order, each granted or refused whole (the
 * connection's limit first, then the uid's, then the daemon's total, which
 * only this uid uses), counting the frames granted
 * before it; one refused frame fails the batch with the first refusal's
 * quota, and the frames granted are released.
 */
function expectedDup(conns: readonly ModelConn[], conn: number, n: number, perClient: number, perUid: number, total = Infinity): string {
  const held = (c: ModelConn): number => c.given.length + c.adopted.length;
  const mine = held(conns[conn] as ModelConn);
  const uid = conns.reduce((a, c) => a + held(c), 0);
  let granted = 0;
  let refusal: string | undefined;
  for (const size of frameSizes(n)) {
    const quota = mine + granted + size > perClient ? 'fds' : uid + granted + size > perUid ? 'uidFds' : uid + granted + size > total ? 'totalFds' : undefined;
    if (quota === undefined) granted += size;
    else refusal ??= `ERR_FDBRIDGE_QUOTA:${quota}`;
  }
  return refusal ?? 'served';
}

test("generated: a uid's DUPs are granted or refused as its fds given, adopted and not yet closed say, on each of its connections", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 900 }), fc.array(stepArb, { minLength: 1, maxLength: 40 }), async (perClient, perUid, steps) => {
      const daemon = HelperDaemon.start({
        socketPath: `@fdbridge-adopted-model-${process.pid}`,
        diagnostics: true,
        limits: { maxFdsPerClient: perClient, maxFdsPerUid: perUid, maxFdsTotal: 4 * 900 },
      });
      const memfd = makeMemfd('model');
      const open = (): Promise<Connection> => connect('helper', { command: { name: 'probe' }, socketPath: daemon.socketPath });
      const conns: Connection[] = [];
      const model: ModelConn[] = [
        { given: [], adopted: [] },
        { given: [], adopted: [] },
      ];
      try {
        conns.push(await open(), await open());
        const baseline = openFdTable();
        for (const step of steps) {
          const m = model[step.conn] as ModelConn;
          const c = conns[step.conn] as Connection;
          if (step.kind === 'dup') {
            const expected = expectedDup(model, step.conn, step.n, perClient, perUid);
            const fds = new Array<number>(step.n).fill(memfd);
            const got = await (step.n === 1 ? c.dupFileDescriptor(memfd).then((fd) => [fd]) : c.dupFileDescriptors(fds)).then(
              (numbers) => numbers,
              (e: { code?: string; quota?: string }) => `${e.code}:${e.quota}`,
            );
            expect({ step, outcome: typeof got === 'string' ? got : 'served' }).toEqual({ step, outcome: expected });
            if (typeof got !== 'string') m.given.push(...got);
          } else if (step.kind === 'adopt') {
            const fds = slice(m.given, step.pick, step.k);
            if (fds.length === 0) continue;
            expect(await c.call('adopt', fds)).toBe(fds.length);
            m.given = m.given.filter((fd) => !fds.includes(fd));
            m.adopted.push(...fds);
          } else if (step.kind === 'closeAdopted') {
            const fds = slice(m.adopted, step.pick, step.k);
            if (fds.length === 0) continue;
            await c.call('closeAdopted', fds);
            m.adopted = m.adopted.filter((fd) => !fds.includes(fd));
          } else {
            // Its end closes what its command did not adopt, and the command's close() what it did.
            await c.close();
            conns[step.conn] = await open();
            m.given = [];
            m.adopted = [];
            // The daemon forgets the old one once it reads its hang-up.
            while (daemon.status().clients.length > 2) await new Promise((r) => setTimeout(r, 10));
          }
          const held = model.map((x) => x.given.length + x.adopted.length);
          const status = daemon.status();
          expect({ step, uidHeld: status.uids.map((u) => u.fdsHeld), clients: status.clients.map((x) => x.fdsHeld).sort((a, b) => a - b) }).toEqual({
            step,
            uidHeld: [held[0]! + held[1]!],
            clients: [...held].sort((a, b) => a - b),
          });
        }
        // What the daemon holds for the uid is in this process's fd table: never more than the uid's budget
        // (a reconnection's sockets may still be on their way to the closer: 3 a connection).
        expect(diffFdTables(baseline, openFdTable()).opened.length).toBeLessThanOrEqual(perUid + 2 * 3);
      } finally {
        for (const c of conns) await c.close();
        closeFd(memfd);
        await daemon.close();
      }
    }),
    { numRuns: 40, examples: [[4, 6, [{ kind: 'dup', conn: 0, n: 1 }, { kind: 'adopt', conn: 0, pick: 0, k: 1 }, { kind: 'dup', conn: 0, n: 4 }, { kind: 'dup', conn: 1, n: 2 }]]] },
  );
}, scaled(240000));

/**
 * A command that adopts fds and closes them itself (the model command's
 * discard(): adoptFd, then closeFd), not through closeClientFds: the
 * daemon is not told, and the number goes back to the kernel, where
 * another connection's fds (or any file the process opens) usually take it,
 * not this connection's. Such an fd is no longer held for the client, and
 * must stop counting against its limits by the time they would refuse a
 * DUP: a client whose command discards what it was given is never refused
 * for fds nobody holds.
 */
type DiscardStep =
  | { kind: 'dup'; conn: number; n: number }
  | { kind: 'discard'; conn: number; pick: number; k: number }
  | { kind: 'open'; k: number }
  | { kind: 'closeOpened'; pick: number; k: number };

const discardStepArb: fc.Arbitrary<DiscardStep> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('dup' as const), conn: fc.nat(1), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('discard' as const), conn: fc.nat(1), pick: fc.nat(), k: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('open' as const), k: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('closeOpened' as const), pick: fc.nat(), k: fc.integer({ min: 1, max: 4 }) }) },
);

const DISCARDING_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'model-command.js'), export: 'ModelCommand' };

test("generated: fds a command adopted and closed by itself stop counting against its client's and uid's limits once their numbers are another file's or free", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 20 }), fc.array(discardStepArb, { minLength: 1, maxLength: 30 }), async (perClient, perUid, total, steps) => {
      const daemon = HelperDaemon.start({
        socketPath: `@fdbridge-adopted-discard-${process.pid}`,
        commands: { discarding: DISCARDING_COMMAND },
        limits: { maxFdsPerClient: perClient, maxFdsPerUid: perUid, maxFdsTotal: total },
      });
      // Each connection gives a file of its own: the number of one it discarded holds the other's, or a file opened here, or nothing.
      const files = [makeMemfd('discard-a'), makeMemfd('discard-b')];
      const opened: number[] = [];
      const conns: Connection[] = [];
      const given: number[][] = [[], []];
      try {
        for (let i = 0; i < 2; i++) conns.push(await connect('helper', { command: { name: 'discarding' }, socketPath: daemon.socketPath }));
        for (const step of steps) {
          if (step.kind === 'dup') {
            const live = given.map((g) => ({ given: g, adopted: [] }));
            const expected = expectedDup(live, step.conn, step.n, perClient, perUid, total);
            const fd = files[step.conn] as number;
            const got = await (conns[step.conn] as Connection).dupFileDescriptors(new Array<number>(step.n).fill(fd)).then(
              (numbers) => numbers,
              (e: { code?: string; quota?: string }) => `${e.code}:${e.quota}`,
            );
            expect({ step, outcome: typeof got === 'string' ? got : 'served' }).toEqual({ step, outcome: expected });
            if (typeof got !== 'string') (given[step.conn] as number[]).push(...got);
          } else if (step.kind === 'discard') {
            const fds = slice(given[step.conn] as number[], step.pick, step.k);
            if (fds.length === 0) continue;
            expect(await (conns[step.conn] as Connection).call('discard', fds)).toBe(fds.length);
            given[step.conn] = (given[step.conn] as number[]).filter((fd) => !fds.includes(fd));
          } else if (step.kind === 'open') {
            for (let i = 0; i < step.k; i++) opened.push(makeMemfd('discard-other'));
          } else {
            const fds = slice(opened, step.pick, step.k);
            closeFds(fds);
            opened.splice(0, opened.length, ...opened.filter((fd) => !fds.includes(fd)));
          }
          // Never less than what the commands hold: a discarded fd is refunded, a live one never.
          const status = daemon.status();
          const held = given.map((g) => g.length);
          expect({ step, uidHeld: (status.uids[0]?.fdsHeld ?? 0) >= held[0]! + held[1]! }).toEqual({ step, uidHeld: true });
        }
      } finally {
        for (const c of conns) await c.close();
        closeFds([...files, ...opened]);
        await daemon.close();
      }
    }),
    {
      numRuns: 40,
      examples: [
        // The client's limit: 3 given and discarded, their numbers taken by the other connection's fds.
        [3, 16, 20, [{ kind: 'dup', conn: 0, n: 3 }, { kind: 'discard', conn: 0, pick: 0, k: 3 }, { kind: 'dup', conn: 1, n: 3 }, { kind: 'dup', conn: 0, n: 1 }]],
        // The uid's limit: the other connection's fds take the numbers, and are refused for the discarded ones.
        [10, 4, 20, [{ kind: 'dup', conn: 0, n: 4 }, { kind: 'discard', conn: 0, pick: 0, k: 4 }, { kind: 'dup', conn: 1, n: 4 }]],
        // The total, the same way.
        [10, 16, 4, [{ kind: 'dup', conn: 0, n: 4 }, { kind: 'discard', conn: 0, pick: 0, k: 4 }, { kind: 'dup', conn: 1, n: 4 }]],
        // Files opened here take the numbers.
        [2, 16, 20, [{ kind: 'dup', conn: 0, n: 2 }, { kind: 'discard', conn: 0, pick: 0, k: 2 }, { kind: 'open', k: 2 }, { kind: 'dup', conn: 0, n: 2 }]],
      ],
    },
  );
}, scaled(240000));

const RAW_CLOSE_COMMAND = { module: join(__dirname, 'fixtures', 'raw-close-command.js'), export: 'RawCloseCommand' };

/**
 * A command that closes copies it was given by itself (fs.closeSync)
 * before adopting them: a file this process opens then takes each number.
 * Each adoption is refused (a SystemError EBADF: the number holds another
 * file than the copy was given with, which is not the client's), and the
 * connection forgets that copy: it stops counting against the client's
 * limit, as the discarded ones above do. The client, its limit full, is
 * served as many fds again as its command closed, and refused one more.
 */
test("generated: copies a command closed itself, whose numbers files opened here took, are refused adoption and stop counting against the client's limit", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.nat(), fc.integer({ min: 1, max: 6 }), async (perClient, pick, k) => {
      const daemon = HelperDaemon.start({
        socketPath: `@fdbridge-adopted-reopened-${process.pid}`,
        commands: { rawclose: RAW_CLOSE_COMMAND },
        limits: { maxFdsPerClient: perClient, maxFdsPerUid: 100, maxFdsTotal: 100 },
      });
      const file = makeMemfd('reopened-client');
      const opened: number[] = [];
      let c: Connection | undefined;
      try {
        c = await connect('helper', { command: { name: 'rawclose' }, socketPath: daemon.socketPath });
        const given = await c.dupFileDescriptors(new Array<number>(perClient).fill(file));
        const closed = slice(given, pick, k).sort((a, b) => a - b);
        expect(await c.call('rawClose', closed)).toBe(closed.length);
        for (const fd of closed) opened.push(openAt('/dev/null', fd));
        for (const fd of closed) {
          const refused = await (c as Connection).call('adopt', [fd]).then(
            () => 'adopted',
            (e: { remote?: { code?: string } }) => e.remote?.code,
          );
          expect({ fd, refused }).toEqual({ fd, refused: 'EBADF' });
        }
        const outcome = (n: number): Promise<string> =>
          (c as Connection).dupFileDescriptors(new Array<number>(n).fill(file)).then(
            () => 'served',
            (e: { code?: string; quota?: string }) => `${e.code}:${e.quota}`,
          );
        expect({ again: await outcome(closed.length), more: await outcome(1) }).toEqual({ again: 'served', more: 'ERR_FDBRIDGE_QUOTA:fds' });
      } finally {
        await c?.close();
        closeFds([file, ...opened]);
        await daemon.close();
      }
    }),
    { numRuns: 25, examples: [[2, 0, 1]] },
  );
}, scaled(120000));
