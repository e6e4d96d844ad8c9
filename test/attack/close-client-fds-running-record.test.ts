/**
 * The record a running command publishes on the global object (for the
 * datagram sockets it makes) is there only while the command runs, and only
 * a record with a receipt tag and a hold is one: a datagram socket the
 * program makes after a command's constructor or method returned, or while
 * the property holds something else (code of the process can set it to
 * anything), is the program's own. What arrives on it is the program's: a
 * command asked to close it with closeClientFds is refused (EBADF naming
 * it) and it stays open, and the socket receives as any other does.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { checkFdLeaks, connect, DatagramSocket, type Connection } from '../../src';
import { closeFds, fdIdentity, makeMemfd } from '../../src/fd';
import { daemonForSuite } from '../util/processes';
import { REFUSED, refusal, settle } from '../util/refusals';
import { scaled } from '../util/time-scale';

const RECEIVING = join(__dirname, 'fixtures', 'receiving-command.js');
/** Where the registered symbol's record lives (client-fds.ts): any code of the process can set it. */
const RUNNING = Symbol.for('fdbridge.runningCommandFds');
/** Transports whose command runs on the test's own thread, so shares its global object. */
const ONE_THREAD = ['direct', 'helper'] as const;

/** Values on the global property that are no command's record: not an object, or without a receipt tag (a safe integer > 0) and a hold function. */
const NOT_RECORDS: ReadonlyArray<[string, unknown]> = [
  ['null', null],
  ['a number', 5],
  ['a string', 'record'],
  ['an empty object', {}],
  ['a hold without a tag', { hold: () => undefined }],
  ['a string tag', { tag: '1', hold: () => undefined }],
  ['tag 0', { tag: 0, hold: () => undefined }],
  ['a negative tag', { tag: -1, hold: () => undefined }],
  ['a fractional tag', { tag: 1.5, hold: () => undefined }],
  ['a tag past the safe integers', { tag: 2 ** 53, hold: () => undefined }],
  ['a tag and a hold that is no function', { tag: 1, hold: 'hold' }],
];

describe("a datagram socket the program makes outside a command's run is the program's", () => {
  const suite = daemonForSuite('running-record', { commands: { receiving: { module: RECEIVING, export: 'ReceivingCommand' } } });

  /** Binds a socket at `path` (with `record` on the global property meanwhile, if given), sends it `file`, and returns the datagram's fds. */
  async function receiveOnOwnSocket(path: string, file: number, record?: { value: unknown }): Promise<readonly number[]> {
    const global = globalThis as { [RUNNING]?: unknown };
    const previous = global[RUNNING];
    let socket: DatagramSocket;
    if (record !== undefined) global[RUNNING] = record.value;
    try {
      socket = DatagramSocket.bind(path);
    } finally {
      global[RUNNING] = previous;
    }
    const sender = DatagramSocket.open();
    try {
      await sender.sendTo(path, Buffer.from('fd'), [file]);
      return (await socket.receive({ timeoutMs: scaled(20_000) })).fds;
    } finally {
      sender.close();
      socket.close();
    }
  }

  test.each(ONE_THREAD)(
    "%s: after the command's constructor and a method ran, an fd the program receives on its own socket is refused to the command and stays open",
    async (transport) => {
      const file = makeMemfd('running-record-after');
      const socketDir = mkdtempSync(join(suite.dir, `${transport}-`));
      const report = await checkFdLeaks(async () => {
        const a: Connection = await connect(transport, {
          command: transport === 'helper' ? { name: 'receiving' } : { module: RECEIVING, export: 'ReceivingCommand' },
          socketPath: suite.daemon.socketPath,
        });
        let fds: readonly number[] = [];
        try {
          expect(await a.call('takeReceived')).toEqual([]);
          fds = await receiveOnOwnSocket(join(socketDir, 's'), file);
          expect(fds.length).toBe(1);
          const fd = fds[0] as number;
          expect(refusal(await settle(a.call('closeClient', [fd])), fd)).toEqual(REFUSED);
          expect(fdIdentity(fd)).toEqual(fdIdentity(file));
        } finally {
          closeFds(fds);
          await a.close();
        }
      });
      closeFds([file]);
      rmSync(socketDir, { recursive: true, force: true });
      expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
    },
    scaled(30_000),
  );

  test.each(NOT_RECORDS)('a socket made while the property holds %s is a plain socket: it receives the fd, the caller\'s to close', async (what, value) => {
    const file = makeMemfd('running-record-not-one');
    const socketDir = mkdtempSync(join(suite.dir, 'not-'));
    const report = await checkFdLeaks(async () => {
      const fds = await receiveOnOwnSocket(join(socketDir, 's'), file, { value });
      try {
        expect({ what, received: fds.map(fdIdentity) }).toEqual({ what, received: [fdIdentity(file)] });
      } finally {
        closeFds(fds);
      }
    });
    closeFds([file]);
    rmSync(socketDir, { recursive: true, force: true });
    expect({ leaks: report.leaks, closed: report.closed }).toEqual({ leaks: [], closed: [] });
  }, scaled(30_000));
});
