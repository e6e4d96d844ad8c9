/**
 * A worker thread terminated (worker.terminate()) between a native call
 * that returns fds as plain numbers and the library's next step with them
 * (a UnixSocket wrapping them, a close, handing them to the caller or to a
 * message handler) must leave no fd open in the process: threads share the
 * fd table, a terminated thread's JavaScript stops where it is (no catch,
 * no finally), and nothing else knows those numbers. And what the library
 * has handed on must not be closed by the worker's end: fds a raw call
 * returned, or a receive gave, are the caller's.
 *
 * Each case runs its code in a fresh worker that stops for good right in
 * one such window (stopInNativeFdWindows: after the native call returns,
 * or as the callback that brings received fds begins) and is terminated
 * there; the fd table is then what it was before the worker started.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { readlinkSync } from 'node:fs';

import { closeFds, diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { backgroundClosesPending, reapsPending, type NativeFdWindow } from '../../src/test-hooks';

const DIST = join(packageRoot, 'dist', 'src');

/**
 * The worker's preamble: fdbridge's public API, its raw-socket helpers and
 * test hooks, `name()` (an abstract socket name no other case uses) and `x`
 * (one byte of data to send).
 */
const PREAMBLE = `
const { parentPort, workerData } = require('node:worker_threads');
const fdbridge = require(${JSON.stringify(join(DIST, 'index.js'))});
const testing = require(${JSON.stringify(join(DIST, 'testing.js'))});
const hooks = require(${JSON.stringify(join(DIST, 'test-hooks.js'))});
const { UnixSocket, UnixServer, DatagramSocket } = fdbridge;
let names = 0;
const name = () => ({ abstract: 'fdbridge-window-' + process.pid + '-' + workerData.tag + '-' + names++ });
const x = Buffer.from('x');
`;

interface WindowCase {
  /** The window the worker stops in. */
  window: NativeFdWindow;
  /** What the worker runs (an async function body; PREAMBLE's names in scope). */
  body: string;
}

/** The library's calls that make fds through a native call or receive them, each with the window it opens. */
const CASES: Record<string, WindowCase> = {
  'UnixSocket.pair()': { window: 'socketpair', body: `UnixSocket.pair();` },
  "UnixSocket.pair('stream')": { window: 'socketpair', body: `UnixSocket.pair('stream');` },
  'UnixSocket.pair() of its own': { window: 'socketpair', body: `UnixSocket.pair('seqpacket', { own: true });` },
  'UnixServer.listen()': { window: 'listen', body: `UnixServer.listen(name());` },
  'UnixSocket.connect()': { window: 'connect', body: `const at = name(); UnixServer.listen(at); await UnixSocket.connect(at);` },
  'UnixServer.accept()': {
    window: 'onAccept',
    body: `const at = name(); const server = UnixServer.listen(at); const accepted = server.accept(); await UnixSocket.connect(at); await accepted;`,
  },
  'UnixServer.onConnection()': {
    window: 'onAccept',
    body: `const at = name(); UnixServer.listen(at).onConnection(() => {}); await UnixSocket.connect(at); await new Promise(() => {});`,
  },
  'DatagramSocket.open()': { window: 'dgramSocket', body: `DatagramSocket.open();` },
  'DatagramSocket.bind()': { window: 'listen', body: `DatagramSocket.bind(name());` },
  'UnixSocket.receive()': {
    window: 'onMessage',
    body: `const [a, b] = UnixSocket.pair(); const got = b.receive(); await a.send(x, [a.fd, b.fd]); await got;`,
  },
  'UnixSocket.setMessageHandler()': {
    window: 'onMessage',
    body: `const [a, b] = UnixSocket.pair(); b.setMessageHandler(() => {}); await a.send(x, [a.fd]); await new Promise(() => {});`,
  },
  'UnixSocket.receive() of a stream socket': {
    window: 'onMessage',
    body: `const [a, b] = UnixSocket.pair('stream'); const got = b.receive(); await a.send(x, [a.fd]); await got;`,
  },
  'UnixSocket.receive() on batched sockets': {
    window: 'batch',
    body: `const [a, b] = UnixSocket.pair('seqpacket', { batchMessages: true }); const got = b.receive(); await a.send(x, [a.fd]); await got;`,
  },
  'DatagramSocket.receive()': {
    window: 'onMessage',
    body: `const at = name(); const r = DatagramSocket.bind(at); const s = DatagramSocket.open(); const got = r.receive(); await s.sendTo(at, x, [s.fd]); await got;`,
  },
  'UnixSocket.peerPidfd()': { window: 'peerPidfd', body: `const [a] = UnixSocket.pair(); a.peerPidfd();` },
  'makePipe()': { window: 'pipe', body: `fdbridge.makePipe();` },
  'makeMemfd()': { window: 'memfd', body: `fdbridge.makeMemfd();` },
  'makeEventfd()': { window: 'eventfd', body: `fdbridge.makeEventfd();` },
  'dupFd()': { window: 'dup', body: `const [a] = UnixSocket.pair(); fdbridge.dupFd(a.fd);` },
  'openPidfd()': { window: 'pidfdOpen', body: `fdbridge.openPidfd(process.pid);` },
  'rawSocketPair()': { window: 'socketpair', body: `testing.rawSocketPair('seqpacket');` },
  'rawListen()': { window: 'listen', body: `testing.rawListen('seqpacket', name().abstract, { abstract: true });` },
  'rawConnect()': { window: 'connect', body: `const at = name(); UnixServer.listen(at); testing.rawConnect('seqpacket', at.abstract, true);` },
  'receiveNow()': {
    window: 'recvNow',
    body: `const [a, b] = UnixSocket.pair(); testing.sendNow(a.fd, x, [a.fd]); testing.receiveNow(b.fd, 16, 4);`,
  },
  "direct connection's dupFileDescriptor()": {
    window: 'dupHigh',
    body: `const conn = await fdbridge.connect('direct', { command: fdbridge.PROBE_COMMAND }); const [a] = UnixSocket.pair(); await conn.dupFileDescriptor(a.fd);`,
  },
  "direct connection's dupFileDescriptors()": {
    window: 'dupAll',
    body: `const conn = await fdbridge.connect('direct', { command: fdbridge.PROBE_COMMAND }); const [a, b] = UnixSocket.pair(); await conn.dupFileDescriptors([a.fd, b.fd]);`,
  },
};

/** What `fd` names now in this process, or that it is closed. */
function targetOf(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return `fd ${fd} closed`;
  }
}

/** Until the teardowns of ended workers (their closes, their reaps) are done. */
async function teardownsDone(): Promise<void> {
  while (reapsPending() !== 0 || backgroundClosesPending() !== 0) await new Promise((r) => setTimeout(r, 10));
}

/** The worker's first message, or why it ended (or failed) without one. */
function firstMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const exited = (code: number): void => reject(new Error(`the worker exited (code ${code}) without reaching its window`));
    worker.once('message', (m) => {
      worker.off('exit', exited);
      resolve(m);
    });
    worker.once('error', reject);
    worker.once('exit', exited);
  });
}

describe('a worker terminated in the window between a native call and what takes its fds leaves none open', () => {
  test.each(Object.keys(CASES))('%s', async (key) => {
    const { window, body } = CASES[key] as WindowCase;
    await teardownsDone();
    const before = openFdTable();
    const worker = new Worker(`${PREAMBLE}\nhooks.stopInNativeFdWindows([${JSON.stringify(window)}]);\n(async () => {\n${body}\n})();`, {
      eval: true,
      workerData: { tag: Object.keys(CASES).indexOf(key) },
    });
    expect(await firstMessage(worker)).toBe('held');
    await worker.terminate();
    await teardownsDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  });
});

/**
 * What a worker got from a call that hands fds to its caller (a number of
 * its own, with no owner but the caller's code) stays open when the worker
 * ends: its environment does not close what the library handed over.
 */
const HANDED: Record<string, string> = {
  'makePipe()': `fdbridge.makePipe()`,
  'makeMemfd()': `[fdbridge.makeMemfd()]`,
  'makeEventfd()': `[fdbridge.makeEventfd()]`,
  'dupFd()': `[fdbridge.dupFd(1)]`,
  'openPidfd()': `[fdbridge.openPidfd(process.pid)]`,
  'UnixSocket.peerPidfd()': `[UnixSocket.pair()[0].peerPidfd().release()]`,
  'rawSocketPair()': `testing.rawSocketPair('stream')`,
  'rawListen() and rawConnect()': `(() => { const at = name().abstract; return [testing.rawListen('seqpacket', at, { abstract: true }), testing.rawConnect('seqpacket', at, true)]; })()`,
  'receiveNow()': `(() => { const [a, b] = UnixSocket.pair(); testing.sendNow(a.fd, x, [a.fd]); return testing.receiveNow(b.fd, 16, 4).fds; })()`,
  'UnixSocket.receive()': `await (async () => { const [a, b] = UnixSocket.pair(); const got = b.receive(); await a.send(x, [a.fd, b.fd]); return (await got).fds; })()`,
  'a message handler': `await new Promise((resolve) => { const [a, b] = UnixSocket.pair(); b.setMessageHandler((err, data, fds) => resolve(fds)); void a.send(x, [a.fd]); })`,
  'UnixSocket.receive() on batched sockets': `await (async () => { const [a, b] = UnixSocket.pair('seqpacket', { batchMessages: true }); const got = b.receive(); await a.send(x, [a.fd]); return (await got).fds; })()`,
  'DatagramSocket.receive()': `await (async () => { const at = name(); const r = DatagramSocket.bind(at); const s = DatagramSocket.open(); const got = r.receive(); await s.sendTo(at, x, [s.fd]); return (await got).fds; })()`,
};

describe("fds the library handed to the worker's code stay open when the worker is terminated", () => {
  test.each(Object.keys(HANDED))('%s', async (key) => {
    await teardownsDone();
    const before = openFdTable();
    // Posts the numbers, then waits for its end (sockets it made stay the library's: closed by it).
    const worker = new Worker(`${PREAMBLE}\n(async () => {\nparentPort.postMessage(${HANDED[key] as string});\n})();`, {
      eval: true,
      workerData: { tag: `handed-${Object.keys(HANDED).indexOf(key)}` },
    });
    const fds = (await firstMessage(worker)) as number[];
    expect(fds.length).toBeGreaterThan(0);
    const targets = fds.map(targetOf);
    await worker.terminate();
    await teardownsDone();
    try {
      expect(fds.map(targetOf)).toEqual(targets);
    } finally {
      closeFds(fds);
    }
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  });
});
