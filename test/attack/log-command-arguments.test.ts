/**
 * The log command's methods take what a client sends (JSON values over a
 * helper daemon's connection): a value of the wrong type is a TypeError, a
 * number that is no fd a RangeError, each naming the method and the value
 * given, before anything is done with it (nothing written, no fd taken,
 * nothing bound). listenForRedirects takes a path: an `{ abstract: name }`
 * address would bind a name with no permissions, where another user
 * (nobody) could send "redirect" with an fd of its own and read every line
 * the client logs after.
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFds, connect, LOG_COMMAND, RemoteError, type Connection } from '../../src';
import { makePipe, openFdTable, setFdFlags } from '../../src/fd';
import { describeValue } from '../../src/validate';
import { DIST_SRC, isRoot, runAsNobody } from '../util/nobody';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-log-args-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the command's `method` threw for `value`, as the daemon described it (a RemoteError's remote). */
async function thrownBy(connection: Connection, method: string, value: unknown): Promise<{ name: string; code?: string; message: string }> {
  try {
    await connection.call(method, value);
  } catch (err) {
    expect(err).toBeInstanceOf(RemoteError);
    return (err as RemoteError).remote;
  }
  throw new Error(`${method}(${JSON.stringify(value)}) did not throw`);
}

/** Runs `fn` on a new connection to the daemon's log command, then closes it; both fd tables are the same afterwards. */
async function onConnection(fn: (connection: Connection) => Promise<void>): Promise<void> {
  const daemonBefore = openFdTable(helper.pid);
  const testBefore = openFdTable();
  const connection = await connect('helper', { command: LOG_COMMAND, socketPath });
  try {
    await fn(connection);
  } finally {
    await connection.close();
  }
  expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
  expect(openFdTable()).toEqual(testBefore);
}

test('model: log and redirectLogToFd refuse a value of the wrong type (TypeError) or a number that is no fd (RangeError), naming the method and the value', () =>
  onConnection(async (connection) => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().filter((v) => typeof v !== 'string'),
          fc.constantFrom(null, {}, [], { toString: 1 }, { valueOf: 3 }, true),
        ),
        async (line) => {
          const err = await thrownBy(connection, 'log', line);
          expect(err.name).toBe('TypeError');
          expect(err.code).toBe('ERR_INVALID_ARG_TYPE');
          expect(err.message).toBe(`log.log: line must be a string, not ${describeValue(line)}`);
        },
      ),
      { numRuns: 60 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().filter((v) => typeof v !== 'number'),
          fc.constantFrom('0', '3', null, {}, { valueOf: 3 }, [2]),
          fc.oneof(fc.integer({ max: -1 }), fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)), fc.constant(1e12), fc.constant(2 ** 31)),
        ),
        async (fd) => {
          const err = await thrownBy(connection, 'redirectLogToFd', fd);
          expect(err.name).toBe(typeof fd === 'number' ? 'RangeError' : 'TypeError');
          expect(err.code).toBe(typeof fd === 'number' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE');
          expect(err.message).toBe(`log.redirectLogToFd: fd must be an integer from 0 to 2147483647, not ${typeof fd === 'number' ? fd : describeValue(fd)}`);
        },
      ),
      { numRuns: 60 },
    );
    // Nothing was taken or written: the connection still works.
    expect(await connection.call('where')).toMatchObject({ transport: 'helper', pid: helper.pid });
  }));

/** The abstract names bound in this network namespace now (/proc/net/unix), without their '@'. */
function abstractNames(): Set<string> {
  return new Set(
    readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/)[7] ?? '')
      .filter((path) => path.startsWith('@'))
      .map((path) => path.slice(1)),
  );
}

test('model: listenForRedirects refuses anything but a non-empty path (TypeError naming the value), an abstract address included: nothing is bound', () =>
  onConnection(async (connection) => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 40 }).map((name) => ({ abstract: `fdbridge-attack-${name}` })),
          fc.jsonValue().filter((v) => typeof v !== 'string'),
          fc.constantFrom('', null, {}, [], ['/tmp/x.sock'], { toString: '/tmp/x.sock' }),
        ),
        async (path) => {
          const err = await thrownBy(connection, 'listenForRedirects', path);
          expect(err.name).toBe('TypeError');
          expect(err.code).toBe('ERR_INVALID_ARG_TYPE');
          expect(err.message).toBe(`log.listenForRedirects: path must be a non-empty path, not ${describeValue(path)}`);
          const name = (path as { abstract?: unknown } | null)?.abstract;
          if (typeof name === 'string') expect(abstractNames().has(name)).toBe(false);
        },
      ),
      { numRuns: 60 },
    );
    expect(await connection.call('where')).toMatchObject({ transport: 'helper', pid: helper.pid });
  }));

(isRoot ? test : test.skip)("another user cannot take a client's log: an abstract address to listenForRedirects is refused, so nobody's \"redirect\" reaches no one and the lines stay in the client's fd", async () => {
  const name = `fdbridge-attack-redirects-${process.pid}`;
  const [r, w] = makePipe();
  setFdFlags(r, { nonblock: true }); // the line is there once log() resolved: an empty pipe is EAGAIN, not a wait
  try {
    await onConnection(async (connection) => {
      await connection.call('redirectLogToFd', await connection.dupFileDescriptor(w));
      await expect(connection.call('listenForRedirects', { abstract: name })).rejects.toBeInstanceOf(RemoteError);
      // nobody sends "redirect" with a pipe of its own to the name, and reads what arrives there.
      const nobody = runAsNobody(`
        const { DatagramSocket, makePipe } = require(${JSON.stringify(DIST_SRC)});
        const { closeSync, readSync } = require('node:fs');
        (async () => {
          const [r, w] = makePipe();
          const s = DatagramSocket.open();
          let sent;
          try { await s.sendTo({ abstract: ${JSON.stringify(name)} }, Buffer.from('redirect'), [w]); sent = 'ok'; } catch (e) { sent = e.code; }
          closeSync(w);
          s.close();
          console.log(JSON.stringify({ sent }));
          // Told by the test (stdin) once the client has logged its line.
          readSync(0, Buffer.alloc(1));
          const buf = Buffer.alloc(4096);
          let got = '';
          try { got = buf.subarray(0, readSync(r, buf)).toString(); } catch (e) { got = e.code; }
          console.log(JSON.stringify({ got }));
        })();
      `);
      nobody.child.stdout?.setEncoding('utf8');
      expect(await nobody.line<{ sent: string }>('sent')).toEqual({ sent: 'ECONNREFUSED' });
      await connection.call('log', 'a line of the client');
      nobody.child.stdin?.end('x');
      // nobody's pipe has no writer left and got nothing: end of file.
      expect(await nobody.line<{ got: string }>('got')).toEqual({ got: '' });
      await nobody.exited();
      const buf = Buffer.alloc(4096);
      expect(buf.subarray(0, readSync(r, buf)).toString()).toBe('a line of the client\n');
    });
  } finally {
    closeFds([r, w]);
  }
});
