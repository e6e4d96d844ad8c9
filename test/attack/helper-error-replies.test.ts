/**
 * A shared helper daemon's ERROR replies tell a client what failed (the
 * error's name, code, syscall and message), never how: a stack names the
 * daemon's install paths, its modules and its internals, which are none of
 * a client's business (another user may be on the other end). The daemon's
 * own log keeps the stack. Every way a request can fail on the daemon is
 * tried, raw, so that the reply is read as it is sent (the client library
 * would drop fields it does not use).
 */
import fc from 'fast-check';

import { closeFd, HelperDaemon, makeMemfd, openFdTable } from '../../src';
import { packageRoot } from '../../src/paths';
import { encodeJson, FrameType, HEADER_BYTES, PROTOCOL_VERSION } from '../../src/protocol';
import type { UnixSocket } from '../../src/socket';
import { connectRaw, rawFrame, sayHello } from '../../scenarios/support/hostile';
import { fdTableSettles } from '../util/processes';

/** The fields an ERROR reply may carry. */
const ALLOWED_FIELDS = new Set(['name', 'message', 'code', 'syscall']);

/** One request that fails on the daemon, on a connection of its own (HELLO included when `ready`). */
interface Failing {
  name: string;
  /** Sent before it: a HELLO answered with READY. */
  ready: boolean;
  /** Sends the request(s); the last reply read is the ERROR under test. */
  send(socket: UnixSocket, memfd: number, text: string): Promise<void>;
  /** How many replies come before the ERROR under test. */
  before: number;
  /** The error's name in the reply. */
  errorName: string;
  /** The daemon threw it itself (its log has the stack), rather than refused it by a rule. */
  thrown: boolean;
}

const call = (id: number, method: string, args: unknown[]): Buffer => encodeJson(FrameType.CALL, id, { method, args });

const FAILING: readonly Failing[] = [
  {
    name: 'a HELLO for a command the daemon does not serve',
    ready: false,
    send: (s, _fd, text) => s.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: `nosuch${text.replace(/[^a-z]/g, '')}` } })),
    before: 0,
    errorName: 'UnknownCommandError',
    thrown: true,
  },
  {
    name: 'a HELLO naming a module',
    ready: false,
    send: (s) => s.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { module: '/tmp/x.js', export: 'X' } })),
    before: 0,
    errorName: 'UnknownCommandError',
    thrown: true,
  },
  {
    name: 'a HELLO asking for pidfd pulls',
    ready: false,
    send: (s) => s.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' }, pull: 'pidfd', probeFd: s.fd })),
    before: 0,
    errorName: 'UnsupportedError',
    thrown: true,
  },
  {
    name: "a call that the command's method throws",
    ready: true,
    send: (s, _fd, text) => s.send(call(1, 'fail', [text, 'ERR_MINE'])),
    before: 0,
    errorName: 'Error',
    thrown: true,
  },
  {
    name: 'a call of a method the command does not have',
    ready: true,
    send: (s) => s.send(call(1, 'noSuchMethod', [])),
    before: 0,
    errorName: 'TypeError',
    thrown: true,
  },
  {
    name: "a call that fails in the library's own code (an fd never given)",
    ready: true,
    send: (s) => s.send(call(1, 'adopt', [[-1]])),
    before: 0,
    errorName: 'RangeError',
    thrown: true,
  },
  {
    name: "a DUP past the client's fd quota",
    ready: true,
    send: async (s, fd) => {
      await s.send(rawFrame(FrameType.DUP, 1), [fd, fd, fd]);
    },
    before: 0,
    errorName: 'QuotaExceededError',
    thrown: false,
  },
  {
    name: 'a call past the calls quota',
    ready: true,
    send: async (s) => {
      await s.send(call(1, 'hang', []));
      await s.send(call(2, 'hang', []));
      await s.send(call(3, 'echo', [1]));
    },
    before: 0,
    errorName: 'QuotaExceededError',
    thrown: false,
  },
];

async function errorReply(socket: UnixSocket, before: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < before; i++) await socket.receive();
  const m = await socket.receive();
  for (const fd of m.fds) closeFd(fd);
  expect(m.data[0]).toBe(FrameType.ERROR);
  return JSON.parse(m.data.toString('utf8', HEADER_BYTES)) as Record<string, unknown>;
}

describe("a shared helper daemon's ERROR replies carry no stack and no install path", () => {
  test('every failing request (generated order and texts): name, code and message only; the stack in the daemon log', async () => {
    const before = openFdTable();
    const memfd = makeMemfd('error-replies');
    const lines: string[] = [];
    const daemon = HelperDaemon.start({
      socketPath: `@fdbridge-error-replies-${process.pid}`,
      diagnostics: true,
      limits: { maxFdsPerClient: 2, maxCallsInFlight: 2 },
      log: (line) => lines.push(line),
    });
    try {
      await fc.assert(
        fc.asyncProperty(fc.shuffledSubarray([...FAILING], { minLength: 1 }), fc.string({ maxLength: 40 }), async (picked, text) => {
          for (const f of picked) {
            const socket = await connectRaw(daemon.socketPath);
            try {
              if (f.ready) await sayHello(socket);
              const logged = lines.length;
              await f.send(socket, memfd, text);
              const reply = await errorReply(socket, f.before);
              expect({ request: f.name, name: reply['name'] }).toEqual({ request: f.name, name: f.errorName });
              expect({ request: f.name, fields: Object.keys(reply).filter((k) => !ALLOWED_FIELDS.has(k)) }).toEqual({ request: f.name, fields: [] });
              const body = JSON.stringify(reply);
              expect({ request: f.name, leaks: body.includes(packageRoot) || /\bat .*:\d+:\d+/.test(body) }).toEqual({ request: f.name, leaks: false });
              if (f.thrown) {
                // The daemon's log has what the client was not told: where it failed.
                const said = lines.slice(logged).join('\n');
                expect({ request: f.name, logged: said.includes(packageRoot) }).toEqual({ request: f.name, logged: true });
              }
            } finally {
              socket.close();
            }
          }
        }),
        { numRuns: 15 },
      );
    } finally {
      await daemon.close();
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  }, 60000);
});
