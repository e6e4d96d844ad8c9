/**
 * Every delay a caller gives that ends up in a timer (setTimeout keeps at
 * most 2^31 - 1 ms, and fires anything past it, NaN or Infinity after 1 ms)
 * is refused at once: a RangeError from the API, a usage error from the CLI.
 * Generated bad values go through each entry point; none may start a wait,
 * call the function it guards, or leave an fd behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, connect, DatagramSocket, ProcessFdSnapshot, PROBE_COMMAND, settleFdSnapshots, UnixServer, UnixSocket } from '../../src';
import { closeFd, diffFdTables, formatFdTableDiff, makeMemfd, openFdTable } from '../../src/fd';
import { HelperDaemon } from '../../src/transports/helper-daemon';
import { MAX_TIMEOUT_MS } from '../../src/validate';
import { main as runMain } from '../../harness/cli/run';
import { parseTimeout, UsageError } from '../../harness/cli/usage';
import { runScenarios } from '../../harness/runner';
import { runCli } from '../util/processes';

/** Numbers setTimeout cannot wait for, and values that are no number. */
const badTimeout: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: -1 }),
  fc.nat(2 ** 30).map((n) => 2 ** 31 + n),
  fc.double({ min: 2 ** 31, noNaN: true }),
  fc.double({ noInteger: true }),
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e300, 3e9, 2 ** 53),
  fc.string(),
  fc.constantFrom(null, true, 10n, [100], { valueOf: () => 100 }, Symbol('ms')),
);

/** Every whole number of ms from `least` to 2^31 - 1 (setTimeout's range), its ends included, or no value at all. */
const goodTimeout = (least: number): fc.Arbitrary<number | undefined> =>
  fc.option(fc.oneof(fc.constantFrom(least, least + 1, MAX_TIMEOUT_MS - 1, MAX_TIMEOUT_MS), fc.integer({ min: least, max: MAX_TIMEOUT_MS })), { nil: undefined });

/** The RangeError `run` throws or rejects with, or what it did instead. */
async function outcome(run: () => unknown): Promise<unknown> {
  try {
    await run();
    return 'accepted';
  } catch (err) {
    return err;
  }
}

function expectRefused(err: unknown, name: string): void {
  expect(err).toBeInstanceOf(RangeError);
  expect((err as { code?: unknown }).code).toBe('ERR_OUT_OF_RANGE');
  expect((err as Error).message).toMatch(new RegExp(`^${name.replace(/[.()]/g, '\\$&')} must be an integer from [01] to 2147483647 \\(ms\\), not `));
}

let dir: string;
let before: ReturnType<typeof openFdTable>;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-timeout-ranges-'));
});
beforeEach(() => {
  before = openFdTable();
});
afterEach(() => {
  expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('generated: UnixSocket.receive and DatagramSocket.receive throw a RangeError for a timeoutMs setTimeout cannot wait for, and no receive waits', async () => {
  const [a, b] = UnixSocket.pair('seqpacket');
  const rx = DatagramSocket.bind(join(dir, 'rx.sock'));
  const tx = DatagramSocket.open();
  try {
    await fc.assert(
      fc.asyncProperty(badTimeout, async (timeoutMs) => {
        for (const socket of [a, rx]) {
          const err = await outcome(() => socket.receive({ timeoutMs: timeoutMs as number }));
          expectRefused(err, 'receive: timeoutMs');
        }
      }),
      { numRuns: 200 },
    );
    // No receive was left waiting: the next message goes to the next receive.
    await b.send(Buffer.from('after'));
    expect((await a.receive()).data.toString()).toBe('after');
    await tx.sendTo(join(dir, 'rx.sock'), Buffer.from('after'));
    expect((await rx.receive()).data.toString()).toBe('after');
  } finally {
    a.close();
    b.close();
    rx.close();
    tx.close();
  }
});

test('generated: UnixSocket.connect refuses a deadline that is no finite number of ms from 0 (NaN would retry a busy listener forever), and takes fractions', async () => {
  const nowhere = join(dir, 'nobody-listens.sock');
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.double({ max: -Number.MIN_VALUE, noNaN: true }),
        fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
        fc.string(),
        fc.constantFrom(null, true, 10n, [100], { valueOf: () => 100 }, Symbol('ms')),
      ),
      async (timeoutMs) => {
        const err = await outcome(() => UnixSocket.connect(nowhere, { timeoutMs: timeoutMs as number }));
        expect(err).toBeInstanceOf(RangeError);
        expect((err as Error).message).toMatch(/^UnixSocket\.connect: timeoutMs must be a finite number of ms from 0, not /);
        // The code of every other timeout's RangeError.
        expect((err as { code?: unknown }).code).toBe('ERR_OUT_OF_RANGE');
      },
    ),
    { numRuns: 100 },
  );
  // A fraction (a caller's remaining time), or a deadline past setTimeout's range (never given to a timer), is a deadline like
  // any other: the connect goes ahead (nobody listens there).
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e6, noNaN: true }), fc.double({ min: 2 ** 31, max: 2 ** 52, noNaN: true })), async (timeoutMs) => {
      expect(await outcome(() => UnixSocket.connect(nowhere, { timeoutMs }))).toMatchObject({ code: 'ENOENT' });
    }),
    { numRuns: 50 },
  );
});

test('generated: UnixSocket.connect retries a listener whose backlog is full until its deadline: it connects once the listener accepts a turn later; with 0 ms it does not retry', async () => {
  const path = join(dir, 'busy.sock');
  const server = UnixServer.listen(path, { backlog: 0 });
  // Queued: the backlog of 0 is full now, and stays full (each accept below takes the oldest connection, and the new one waits).
  const queued = await UnixSocket.connect(path);
  try {
    expect(await outcome(() => UnixSocket.connect(path, { timeoutMs: 0 }))).toMatchObject({ code: 'EAGAIN' });
    await fc.assert(
      fc.asyncProperty(fc.option(fc.oneof(fc.double({ min: 1000, max: 1e6, noNaN: true }), fc.integer({ min: 1000, max: MAX_TIMEOUT_MS })), { nil: undefined }), async (timeoutMs) => {
        // Room in the backlog comes only after the first try found it full.
        const accepted = new Promise<UnixSocket>((resolve, reject) => setImmediate(() => server.accept().then(resolve, reject)));
        const connected = await UnixSocket.connect(path, { timeoutMs });
        connected.close();
        (await accepted).close();
      }),
      { numRuns: 20 },
    );
  } finally {
    queued.close();
    await server.close();
  }
});

test('generated: connect and dupFileDescriptorSync refuse the same values with the same RangeError', async () => {
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    await fc.assert(
      fc.asyncProperty(badTimeout, async (timeoutMs) => {
        // connect's least is 1 ms: 0 is refused there as well.
        expectRefused(await outcome(() => connect('direct', { command: PROBE_COMMAND, timeoutMs: timeoutMs as number })), 'connect: options.timeoutMs');
        expectRefused(await outcome(() => conn.dupFileDescriptorSync(0, { timeoutMs: timeoutMs as number })), 'dupFileDescriptorSync: timeoutMs');
      }),
      { numRuns: 100 },
    );
  } finally {
    await conn.close();
  }
});

test('generated: checkFdLeaks refuses such a settleMs before calling its function', async () => {
  let called = 0;
  await fc.assert(
    fc.asyncProperty(badTimeout, async (settleMs) => {
      const err = await outcome(() => checkFdLeaks(() => void called++, { settleMs: settleMs as number }));
      expectRefused(err, 'checkFdLeaks: options.settleMs');
    }),
    { numRuns: 200 },
  );
  expect(called).toBe(0);
});

test('generated: settleFdSnapshots refuses such a settleMs before it looks', async () => {
  const snapshot = new ProcessFdSnapshot(process.pid, 'self');
  try {
    await fc.assert(
      fc.asyncProperty(badTimeout, async (settleMs) => {
        expectRefused(await outcome(() => settleFdSnapshots([snapshot], { settleMs: settleMs as number })), 'settleMs');
      }),
      { numRuns: 200 },
    );
  } finally {
    snapshot.release();
  }
});

test('generated: the settle is waited as given: an fd the function leaves for a later turn to close is a leak with settleMs 0, and none with the default or 1 s or more', async () => {
  await fc.assert(
    fc.asyncProperty(fc.option(fc.oneof(fc.constant(0), fc.integer({ min: 1000, max: MAX_TIMEOUT_MS })), { nil: undefined }), async (settleMs) => {
      let fd = -1;
      const report = await checkFdLeaks(
        () => {
          fd = makeMemfd('settle');
          // After the first look (the check reads the tables as the function returns).
          setImmediate(() => closeFd(fd));
        },
        { settleMs },
      );
      expect(report.leaks.map((l) => l.fd)).toEqual(settleMs === 0 ? [fd] : []);
      await new Promise((resolve) => setImmediate(resolve));
    }),
    { numRuns: 20 },
  );
});

test('generated: HelperDaemon.idle throws a RangeError for such a timeoutMs', async () => {
  const daemon = HelperDaemon.start({ socketPath: join(dir, 'helper.sock') });
  try {
    fc.assert(
      fc.property(badTimeout, (timeoutMs) => {
        let err: unknown = 'accepted';
        try {
          void daemon.idle(timeoutMs as number);
        } catch (e) {
          err = e;
        }
        expectRefused(err, 'idle: timeoutMs');
      }),
      { numRuns: 200 },
    );
  } finally {
    await daemon.close();
  }
});

test('generated: runScenarios refuses such a timeoutMs or settleMs before running a row', async () => {
  const empty = mkdtempSync(join(dir, 'scenarios-'));
  await fc.assert(
    fc.asyncProperty(badTimeout, fc.boolean(), async (ms, asTimeout) => {
      const given = asTimeout ? { timeoutMs: ms as number } : { settleMs: ms as number };
      const err = await outcome(() => runScenarios({ bench: false, repeat: 1, seed: 1, scenariosDir: empty, transports: ['direct'], isolation: 'none', ...given }));
      expectRefused(err, asTimeout ? 'runScenarios: options.timeoutMs' : 'runScenarios: options.settleMs');
    }),
    { numRuns: 100 },
  );
});

test('generated: `run --timeout` and `run --settle` are usage errors past 2^31 - 1 ms (and below their least)', async () => {
  const text = fc.oneof(
    badTimeout.filter((v) => typeof v === 'number').map(String),
    fc.nat(2 ** 30).map((n) => String(2 ** 31 + n)),
    fc.constantFrom('2147483648', '3000000000', '1e300', 'Infinity', 'NaN', '-1', '1.5', ''),
    // Numbers in range that Number() reads but are no whole number as written.
    fc.constantFrom('1e3', '0x10', '0b11', '+5', '12.0', '5 5', '7ms', 'ms7'),
  );
  await fc.assert(
    fc.asyncProperty(text, fc.constantFrom('--timeout', '--settle'), async (value, flag) => {
      const err = await outcome(() => runMain([`${flag}=${value}`, '--list']));
      expect(err).toBeInstanceOf(UsageError);
      // An empty value is refused as every option's is (`needs a value`).
      expect((err as Error).message.startsWith(`${flag} `)).toBe(true);
    }),
    { numRuns: 100 },
  );
  // As a user sees it: exit 2, the error first, one line.
  for (const flag of ['--timeout', '--settle']) {
    const r = await runCli(['run', flag, '2147483648', '--list']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toBe(`fdbridge run: ${flag} must be an integer from ${flag === '--timeout' ? 1 : 0} to 2147483647 (ms), not "2147483648"`);
  }
});

test('generated: every whole number of ms from the least to 2^31 - 1 is taken, and so is no value at all (the default), by every entry point', async () => {
  const [a, b] = UnixSocket.pair('seqpacket');
  const rx = DatagramSocket.bind(join(dir, 'rx-good.sock'));
  const tx = DatagramSocket.open();
  const conn = await connect('direct', { command: PROBE_COMMAND });
  const daemon = HelperDaemon.start({ socketPath: join(dir, 'helper-good.sock') });
  const memfd = makeMemfd('timeout-ranges');
  const empty = mkdtempSync(join(dir, 'scenarios-'));
  try {
    await fc.assert(
      fc.asyncProperty(goodTimeout(0), goodTimeout(1), fc.constantFrom('', ' ', '\t', '\n'), async (fromZero, fromOne, pad) => {
        // A message already sent is received, whatever the deadline.
        await b.send(Buffer.from('m'));
        expect((await a.receive({ timeoutMs: fromZero })).data.toString()).toBe('m');
        await tx.sendTo(join(dir, 'rx-good.sock'), Buffer.from('d'));
        expect((await rx.receive({ timeoutMs: fromZero })).data.toString()).toBe('d');
        if (fromZero === undefined) {
          // No deadline: a receive waits for a message sent turns later.
          const later = a.receive({ timeoutMs: fromZero });
          await new Promise((resolve) => setTimeout(resolve, 20));
          await b.send(Buffer.from('later'));
          expect((await later).data.toString()).toBe('later');
        }
        // The command's copy (closed with the connection).
        expect(conn.dupFileDescriptorSync(memfd, { timeoutMs: fromZero })).toBeGreaterThanOrEqual(0);
        await (await connect('direct', { command: PROBE_COMMAND, timeoutMs: fromOne })).close();
        expect((await checkFdLeaks(() => undefined, { settleMs: fromZero })).leaks).toEqual([]);
        const snapshot = new ProcessFdSnapshot(process.pid, 'self');
        try {
          expect((await settleFdSnapshots([snapshot], { settleMs: fromZero })).leaks).toEqual([]);
        } finally {
          snapshot.release();
        }
        await daemon.idle(fromZero);
        // Taken: runScenarios goes on to look for scenarios (there are none there).
        const run = await outcome(() => runScenarios({ bench: false, repeat: 1, seed: 1, scenariosDir: empty, transports: ['direct'], isolation: 'none', timeoutMs: fromOne, settleMs: fromZero }));
        expect((run as Error).message).toBe(`no scenarios: ${empty} has no *.scenario.ts or *.scenario.js file`);
        // UnixSocket.connect's deadline goes ahead (nobody listens there).
        expect(await outcome(() => UnixSocket.connect(join(dir, 'nobody-listens.sock'), { timeoutMs: fromZero }))).toMatchObject({ code: 'ENOENT' });
        // The CLI's --timeout (least 1) and --settle (least 0), as written (blanks around it too).
        if (fromOne !== undefined) expect(parseTimeout('--timeout', `${pad}${fromOne}${pad}`, 1)).toBe(fromOne);
        if (fromZero !== undefined) expect(parseTimeout('--settle', `${pad}${fromZero}`, 0)).toBe(fromZero);
      }),
      { numRuns: 40 },
    );
  } finally {
    closeFd(memfd);
    a.close();
    b.close();
    rx.close();
    tx.close();
    await conn.close();
    await daemon.close();
  }
});
