/**
 * A shared helper daemon's --verbose line about a request that failed
 * ("pid N: call <method>() failed: <stack>") quotes what the client chose,
 * the method's name and, through the command, the error's message: each is
 * cut to a bound (LOG_WHAT_BYTES, LOG_STACK_BYTES: 17 KiB as JSON counts,
 * at most four times that escaped), saying how much was cut, whatever the
 * client sent. One client could otherwise have the daemon write a line of
 * megabytes per request.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, openFdTable, RemoteError } from '../../src';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const FIXTURE = join(__dirname, 'fixtures', 'throwing-command.js');
const THROWING = { name: 'throwing', module: FIXTURE, export: 'ThrowingCommand' };
/** What a line may take at most: the two quotes' bounds, their escapes (at most four times what JSON counts: a DEL's 1 byte written \x7f), and the rest of the line. */
const MOST_LINE_BYTES = 4 * (1024 + 16 * 1024) + 200;

const UNITS = ['a', '"', '\n', '\x01', '\x7f', 'é', '😀', '\u2028'];

let dir: string;
let helper: HelperProcess;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-verbose-line-'));
  helper = await startHelperProcess(join(dir, 'helper.sock'), ['--command', `throwing=${FIXTURE}#ThrowingCommand`, '--verbose']);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const failedLines = (): string[] => helper.stderr().split('\n').filter((l) => / failed: /.test(l));

test('generated: a method name and an error message of any length: each request\'s line is bounded, and says what it cut', async () => {
  const before = openFdTable();
  const helperBefore = openFdTable(helper.pid);
  const conn = await connect('helper', { command: THROWING, socketPath: join(dir, 'helper.sock') });
  let requests = failedLines().length;
  const guard = new HangGuard(scaled(240_000));
  try {
    await assertGuarded(
      fc.asyncProperty(fc.constantFrom(...UNITS), fc.oneof(fc.nat(100), fc.integer({ min: 20_000, max: 2_000_000 })), fc.boolean(), async (unit, times, byName) => {
        // A method of that name (20,000 units at most: a CALL holds 192 KiB of JSON, a \x01 6 bytes of it), or an error of that message.
        const call = byName ? conn.call(`m${unit.repeat(Math.min(times, 20_000))}`) : conn.call('throwIt', 'error', unit, times);
        const err = await call.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(RemoteError);
        requests++;
        const lines = await guard.until('the request\'s log line', failedLines, (seen) => seen.length >= requests, { describe: (seen) => `${seen.length} of ${requests} lines` });
        const line = lines[requests - 1] as string;
        expect(Buffer.byteLength(line)).toBeLessThanOrEqual(MOST_LINE_BYTES);
        // Long enough to be cut: it says so.
        if (unit.length * times > 16 * 1024) expect(line).toMatch(/… \(cut: \d+ more characters\)/);
      }),
      { numRuns: 20 },
    );
  } finally {
    await conn.close();
  }
  expect(helper.child.exitCode).toBeNull();
  expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 600_000);
