/**
 * An error of any size and any shape is answered, and the process serving
 * the command serves on: a message that echoes a client's input past one
 * frame (MAX_FRAME_BYTES) is cut to fit, saying how much was cut, its name
 * and code kept; a thrown value whose getters or Proxy traps throw is
 * described with what could be read. On a shared helper daemon either used
 * to throw out of the reply's encoding and end the daemon, every client's
 * calls and fds with it; on child and pidfd, the command's process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect, openFdTable, RemoteError, type Connection, type TransportName } from '../../src';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { decodeFrame, encodeJson, FrameType, HEADER_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../../src/protocol';
import { connectRaw, sayHello } from '../../scenarios/support/hostile';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { TRANSPORTS } from '../util/transport-suite';

const FIXTURE = join(__dirname, 'fixtures', 'throwing-command.js');
const THROWING = { name: 'throwing', module: FIXTURE, export: 'ThrowingCommand' };

/** The transports whose replies are frames of at most MAX_FRAME_BYTES. */
const FRAMED = new Set<string>(['child', 'helper', 'pidfd']);

/** Each kind of thrown value the fixture makes, and the name the caller's RemoteError must carry for it. */
const KINDS = {
  error: 'Error',
  typeError: 'TypeError',
  rejects: 'RangeError',
  messageGetterThrows: 'RangeError',
  nameToStringThrows: 'Error',
  stackGetterThrows: 'SyntaxError',
  hugeStack: 'SyntaxError',
  proxyError: 'Error',
  proxyObject: 'Error',
  null: 'Error',
  symbol: 'Error',
  toStringThrows: 'Error',
} as const;
type Kind = keyof typeof KINDS;

/** Kinds whose message is the text itself (when it fits). */
const TEXT_IS_MESSAGE = new Set<Kind>(['error', 'typeError', 'rejects', 'nameToStringThrows', 'stackGetterThrows']);

/** Code units JSON escapes or UTF-8 widens: 2, 6 and 3 bytes, a pair's 4, a lone surrogate's 6. */
const UNITS = ['"', '\\', '\x01', '\n', '\u001f', '\u2028', 'é', '😀', '\ud800', 'a'];
const unit = fc.array(fc.constantFrom(...UNITS), { minLength: 1, maxLength: 3 }).map((a) => a.join(''));
/** Text lengths (code units): short, around one frame, far past it. */
const length = fc.oneof(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 25_000, max: 200_000 }), fc.integer({ min: 200_000, max: 2_000_000 }));

const CUT = /^([\s\S]*)… \(cut: (\d+) more characters\)$/;

/** Checks `message` is `text`, or `text` cut where it had to be, saying how much was cut. */
function expectTextOrCut(message: string, text: string, name: string, code: string | undefined, framed: boolean): void {
  if (message === text) return;
  const m = CUT.exec(message);
  expect({ framed, cutNoted: m !== null }).toEqual({ framed: true, cutNoted: true });
  const kept = (m as RegExpExecArray)[1] as string;
  expect({ keptIsStart: text.startsWith(kept), total: kept.length + Number((m as RegExpExecArray)[2]) }).toEqual({ keptIsStart: true, total: text.length });
  // Cut only when the whole would not have fit.
  const whole = Buffer.byteLength(JSON.stringify({ name, message: text, ...(code !== undefined ? { code } : {}) }));
  expect(whole + HEADER_BYTES).toBeGreaterThan(MAX_FRAME_BYTES);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('the call resolved');
}

describe('an error of any size or shape is answered, and the command is served on', () => {
  let dir: string;
  let socketPath: string;
  let helper: HelperProcess;

  // A daemon per test: one that a test ends shows as that test's failure alone.
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-error-sizes-'));
    socketPath = join(dir, 'helper.sock');
    helper = await startHelperProcess(socketPath, ['--command', `throwing=${FIXTURE}#ThrowingCommand`]);
  });

  afterEach(async () => {
    await helper?.stop('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test.each([...TRANSPORTS, 'remote' as TransportName])('%s: generated thrown values and texts: a RemoteError of the right name, then the next call served', async (transport) => {
    const before = openFdTable();
    const helperBefore = openFdTable(helper.pid);
    const conn: Connection = await connect(transport, { command: THROWING, socketPath, ...(transport === 'remote' ? LOCAL_REMOTE : {}) });
    try {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...(Object.keys(KINDS) as Kind[])), unit, length, async (kind, u, n) => {
          const times = Math.ceil(n / u.length);
          const text = u.repeat(times);
          const err = await rejection(conn.call('throwIt', kind, u, times));
          expect({ kind, type: (err as Error).constructor.name }).toEqual({ kind, type: 'RemoteError' });
          const remote = (err as RemoteError).remote;
          expect({ kind, name: remote.name }).toEqual({ kind, name: KINDS[kind] });
          expect(typeof remote.message).toBe('string');
          if (kind === 'error') expect(remote.code).toBe('ERR_GENERATED');
          if (TEXT_IS_MESSAGE.has(kind)) expectTextOrCut(remote.message, text, remote.name, remote.code, FRAMED.has(transport));
          if (kind === 'messageGetterThrows') expect(remote.message.startsWith('(its message could not be read: reading it threw Error')).toBe(true);
          expect(await conn.call('ping')).toBe('pong');
        }),
        { numRuns: 40 },
      );
    } finally {
      await conn.close();
    }
    expect(helper.child.exitCode).toBeNull();
    expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 600_000);

  test.each([...TRANSPORTS, 'remote' as TransportName])('%s: a constructor throwing any of those shapes fails connect with a RemoteError of the right name; the next connection is served', async (transport) => {
    const before = openFdTable();
    const helperBefore = openFdTable(helper.pid);
    const extra = transport === 'remote' ? LOCAL_REMOTE : {};
    // A rejected promise is no constructor's throw.
    for (const kind of (Object.keys(KINDS) as Kind[]).filter((k) => k !== 'rejects')) {
      const err = await rejection(connect(transport, { command: { ...THROWING, args: [kind] }, socketPath, ...extra }));
      expect({ kind, type: (err as Error).constructor.name, method: (err as RemoteError).method, name: (err as RemoteError).remote?.name }).toEqual({
        kind,
        type: 'RemoteError',
        method: 'constructor',
        name: KINDS[kind],
      });
      const conn = await connect(transport, { command: THROWING, socketPath, ...extra });
      try {
        expect(await conn.call('ping')).toBe('pong');
      } finally {
        await conn.close();
      }
    }
    expect(helper.child.exitCode).toBeNull();
    expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 600_000);

  /** The JSON bytes of each code unit of `c` (a '"' takes 2, a control character 6). */
  const bytesOf = (c: string): number => Buffer.byteLength(JSON.stringify(c)) - 2;
  /** One character per unit whose JSON is wider than itself, and plain ASCII. */
  const RAW_UNITS = ['"', '\\', '\x01', 'a', 'é'];

  test('helper, raw: a HELLO naming a command of any length, quoted back past one frame, is answered UnknownCommandError; the daemon serves on', async () => {
    const helperBefore = openFdTable(helper.pid);
    const before = openFdTable();
    const overhead = Buffer.byteLength(JSON.stringify({ version: PROTOCOL_VERSION, command: { name: '' } }));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...RAW_UNITS), fc.integer({ min: 0, max: 1 }), fc.nat(), async (c, far, slack) => {
        const most = Math.floor((MAX_FRAME_BYTES - HEADER_BYTES - overhead) / bytesOf(c));
        // Far: the longest name a HELLO holds and shorter; near: where the reply (the name quoted twice over) just passes one frame.
        const n = far === 1 ? most - (slack % 1000) : Math.max(1, Math.floor(most / 2) - (slack % 200));
        const socket = await connectRaw(socketPath);
        try {
          await socket.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: c.repeat(n) } }));
          const m = await socket.receive();
          for (const fd of m.fds) closeFd(fd);
          const frame = decodeFrame(m.data, []);
          expect(frame.type === FrameType.ERROR ? [frame.error.name, frame.error.code] : frame.type).toEqual(['UnknownCommandError', 'ERR_FDBRIDGE_UNKNOWN_COMMAND']);
        } finally {
          socket.close();
        }
        const conn = await connect('helper', { command: THROWING, socketPath });
        try {
          expect(await conn.call('ping')).toBe('pong');
        } finally {
          await conn.close();
        }
      }),
      { numRuns: 30 },
    );
    expect(helper.child.exitCode).toBeNull();
    expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 600_000);

  test('helper, raw: a CALL of a method named at the longest a CALL holds, quoted back just past one frame, is answered TypeError; the connection serves on', async () => {
    const helperBefore = openFdTable(helper.pid);
    const before = openFdTable();
    const overhead = Buffer.byteLength(JSON.stringify({ method: '', args: [] }));
    const socket = await connectRaw(socketPath);
    try {
      await sayHello(socket);
      let id = 0;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...RAW_UNITS), fc.integer({ min: 0, max: 60 }), async (c, short) => {
          const n = Math.floor((MAX_FRAME_BYTES - HEADER_BYTES - overhead) / bytesOf(c)) - short;
          await socket.send(encodeJson(FrameType.CALL, ++id, { method: c.repeat(n), args: [] }));
          const frame = decodeFrame((await socket.receive()).data, []);
          expect(frame.type === FrameType.ERROR ? [frame.id, frame.error.name] : frame.type).toEqual([id, 'TypeError']);
          if (frame.type === FrameType.ERROR) expect(frame.error.message.startsWith(`the command has no method named "${c.repeat(Math.min(n, 100))}`)).toBe(true);
          // The same connection is answered next.
          await socket.send(encodeJson(FrameType.CALL, ++id, { method: 'echo', args: [id] }));
          const next = decodeFrame((await socket.receive()).data, []);
          expect(next.type === FrameType.RESULT ? [next.id, next.value] : next.type).toEqual([id, id]);
        }),
        { numRuns: 30 },
      );
    } finally {
      socket.close();
    }
    expect(helper.child.exitCode).toBeNull();
    expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 600_000);
});
