/**
 * Hostile and broken clients against a command's side: serveConnection in
 * this process, a helper daemon (in this process, and in its own), and the
 * child transport's entry. Every bad request must end THAT connection with
 * a ProtocolError, close every fd that came with it, and leave the other
 * clients served; every process's fd table returns to its baseline.
 *
 * The catalogue of bad requests and the proof of each rejection (EOF, and
 * end-of-file on a pipe whose write end we attached) live in
 * scenarios/support/hostile.ts, shared with the 'fault' scenarios.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, connect, HelperDaemon, makeMemfd, openFdTable, ProtocolError, PROBE_COMMAND, type Connection } from '../../src';
import { FRAME_SOCKET_OPTIONS, FrameType } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawSocketPair, setPassCred, setPassPidfd } from '../../src/testing';
import { serveConnection, type ServeStats } from '../../src/transports/serve';
import { createRng } from '../../harness/rng';
import {
  badRequests,
  connectRaw,
  rawFrame,
  rawSocket,
  refusedBeforeHello,
  sayHello,
  sendBadRequest,
  spawnCommandSide,
  type BadRequest,
} from '../../scenarios/support/hostile';
import { fdTableSettles, startHelperProcess } from '../util/processes';
import { getfdOf } from '../util/getfd';

const SEED = 6;

/** A command's side served in this process over a socketpair; `client` is the raw far end. */
function servedPair(setup?: (serverFd: number) => void): {
  client: UnixSocket;
  serverFd: number;
  ended: Promise<{ reason: Error | null; stats: ServeStats }>;
} {
  const [c, s] = rawSocketPair('seqpacket');
  setup?.(s);
  let resolve!: (v: { reason: Error | null; stats: ServeStats }) => void;
  const ended = new Promise<{ reason: Error | null; stats: ServeStats }>((r) => (resolve = r));
  serveConnection(new UnixSocket(s, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), {
    transport: 'child',
    onEnd: (reason, stats) => resolve({ reason, stats: { ...stats } }),
  });
  return { client: rawSocket(c), serverFd: s, ended };
}

/** A good client's round trip: one duplication (closed again over there) and one call. */
async function stillServed(conn: Connection, source: number, i: number): Promise<void> {
  const remote = await conn.dupFileDescriptor(source);
  await Promise.all([conn.call('adopt', [remote]), conn.call('closeAdopted', [remote])]);
  expect(await conn.call('echo', i)).toBe(i);
}

describe('serveConnection in this process', () => {
  const inputs = badRequests(createRng(SEED).fork('serve'));
  test.each(inputs.map((i) => [i.name, i] as const))('%s: ProtocolError, that connection ends, every fd closed and counted', async (_name, input) => {
    const before = openFdTable();
    const { client, ended } = servedPair();
    try {
      const r = await sendBadRequest(client, input);
      expect(r.how).toBe('end');
      const { reason, stats } = await ended;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(stats.protocolErrors).toBe(1);
      // Every fd that arrived was closed and counted (the oversized ones by
      // the native receive path, which reports how many).
      expect(stats.unexpectedFds).toBe(input.fds);
    } finally {
      client.close();
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a well-formed HELLO, DUP and CALL are still served (the catalogue is not just rejecting everything)', async () => {
    const { client, ended } = servedPair();
    const memfd = makeMemfd('good');
    try {
      await sayHello(client);
      await client.send(rawFrame(FrameType.DUP, 5), [memfd, memfd]);
      const m = await client.receive();
      expect(m.fds).toEqual([]);
      expect(m.data[0]).toBe(FrameType.DUP_OK);
      expect(m.data.readUInt32LE(4)).toBe(5);
      expect(m.data.length).toBe(8 + 8);
    } finally {
      client.close();
      closeFd(memfd);
    }
    const { reason, stats } = await ended;
    expect(reason).toBeNull();
    expect(stats).toEqual({ unexpectedFds: 0, protocolErrors: 0, refusesFds: false });
  });
});

describe('non-SCM_RIGHTS control messages on the receive path', () => {
  // Only a receiver that asked for them gets them; the native layer skips
  // SCM_CREDENTIALS and closes SCM_PIDFD (a pidfd is an fd nobody asked for).
  const cases: Array<[string, (fd: number) => void]> = [
    ['SO_PASSCRED (SCM_CREDENTIALS on every message)', (fd) => setPassCred(fd, true)],
    ['SO_PASSPIDFD (an SCM_PIDFD fd on every message)', (fd) => setPassPidfd(fd, true)],
  ];
  test.each(cases)('%s: good frames served, bad ones rejected, nothing left open', async (_name, enable) => {
    const before = openFdTable();
    const memfd = makeMemfd('cred');
    const rng = createRng(SEED).fork('cmsg');
    try {
      // A good exchange first.
      const good = servedPair(enable);
      await sayHello(good.client);
      await good.client.send(rawFrame(FrameType.DUP, 1), [memfd]);
      const m = await good.client.receive();
      expect(m.data[0]).toBe(FrameType.DUP_OK);
      good.client.close();
      expect((await good.ended).reason).toBeNull();
      // Then every bad request.
      for (const input of badRequests(rng)) {
        const bad = servedPair(enable);
        try {
          await sendBadRequest(bad.client, input);
          const { reason, stats } = await bad.ended;
          expect(reason).toBeInstanceOf(ProtocolError);
          // A truncated message's SCM_PIDFD is closed and counted with its
          // SCM_RIGHTS fds (one more); on a whole message the native layer
          // closes it silently. Either way the fd table below is the proof.
          expect(stats.unexpectedFds).toBeGreaterThanOrEqual(input.fds);
          expect(stats.unexpectedFds).toBeLessThanOrEqual(input.fds + 1);
        } finally {
          bad.client.close();
        }
      }
    } finally {
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describe('the pidfd command side refuses fds', () => {
  const inputs = badRequests(createRng(SEED).fork('pidfd'), { pidfd: true }).filter((i) => i.rejectedBy === 'kernel');

  test.each(inputs.map((i) => [i.name, i] as const))('%s: with SO_PASSRIGHTS the sender gets EPERM, nothing arrives', async (_name, input) => {
    const { client, ended } = servedPair();
    const memfd = makeMemfd('pulled');
    try {
      const r = await sendBadRequest(client, input, { pidfd: true });
      expect(r.how).toBe('kernel');
      // The connection is unharmed: a GETFD still works (the far side pulls
      // a memfd of ours; its copy is swept when the connection ends).
      await client.send(getfdOf(9, [memfd]));
      const m = await client.receive();
      expect(m.data[0]).toBe(FrameType.DUP_OK);
    } finally {
      client.close();
      closeFd(memfd);
    }
    const { reason, stats } = await ended;
    expect(reason).toBeNull();
    expect(stats).toEqual({ unexpectedFds: 0, protocolErrors: 0, refusesFds: true });
  });

  test.each(inputs.map((i) => [i.name, i] as const))('%s: without SO_PASSRIGHTS (ENOPROTOOPT simulated) the fds are closed and counted', async (_name, input) => {
    const restore = simulateKernelWithoutPassRights();
    const { client, ended } = servedPair();
    try {
      const r = await sendBadRequest(client, input, { pidfd: true, refusesFds: false });
      expect(r.how).toBe('end');
    } finally {
      client.close();
      restore();
    }
    const { reason, stats } = await ended;
    expect(reason).toBeInstanceOf(ProtocolError);
    expect(stats).toEqual({ unexpectedFds: input.fds, protocolErrors: 1, refusesFds: false });
  });
});

describe('a helper daemon keeps serving its other clients', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdb-hostile-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function throwEverything(socketPath: string, inputs: readonly BadRequest[]): Promise<void> {
    const source = makeMemfd('good-client');
    const good = await connect('helper', { command: PROBE_COMMAND, socketPath });
    try {
      await stillServed(good, source, -1);
      for (const [i, input] of inputs.entries()) {
        const raw = await connectRaw(socketPath);
        try {
          // The good client works while the hostile one is mid-way, too.
          const meanwhile = stillServed(good, source, i);
          expect((await sendBadRequest(raw, input, { refusesFdsBeforeHello: true })).how).toBe(refusedBeforeHello(input) ? 'kernel' : 'end');
          await meanwhile;
        } finally {
          raw.close();
        }
        await stillServed(good, source, i);
      }
    } finally {
      await good.close();
      closeFd(source);
    }
  }

  test('in this process: every bad request rejected and counted, the good client served throughout', async () => {
    const inputs = badRequests(createRng(SEED).fork('helper-in-process'));
    const lines: string[] = [];
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: join(dir, 'h.sock'), log: (line) => lines.push(line) });
    try {
      await throwEverything(daemon.socketPath, inputs);
      // One connection per bad request, plus the good one. Those the kernel
      // refused (fds before READY) never reached the daemon.
      const reached = inputs.filter((i) => !refusedBeforeHello(i));
      expect(daemon.stats.connections).toBe(inputs.length + 1);
      expect(daemon.stats.protocolErrors).toBe(reached.length);
      expect(daemon.stats.unexpectedFds).toBe(reached.reduce((n, i) => n + i.fds, 0));
      // --verbose names what each connection turned away.
      const withFds = reached.filter((i) => i.fds > 0).length;
      expect(lines.filter((l) => /connection ended: .*\(1 protocol error\(s\), [1-9]\d* unexpected fd\(s\) closed\)/.test(l))).toHaveLength(withFds);
    } finally {
      await daemon.close();
    }
    expect(daemon.stats.active).toBe(0);
  });

  test("in its own process: the daemon's fd table returns to its baseline", async () => {
    const socketPath = join(dir, 'p.sock');
    const helper = await startHelperProcess(socketPath);
    try {
      const baseline = openFdTable(helper.pid);
      await throwEverything(socketPath, badRequests(createRng(SEED).fork('helper-process')));
      expect(await fdTableSettles(helper.pid, baseline)).toBe('');
      expect(helper.child.exitCode).toBeNull(); // it never crashed
    } finally {
      await helper.stop();
    }
  });
});

describe("the child transport's entry", () => {
  // One process per request: each ends its process.
  const rng = createRng(SEED).fork('child');
  const inputs = badRequests(rng);
  test.each(inputs.map((i) => [i.name, i] as const))('%s: the child ends its connection (and so exits 1), every fd closed', async (_name, input) => {
    const side = spawnCommandSide();
    try {
      expect((await sendBadRequest(side.socket, input)).how).toBe('end');
      expect(await side.exited).toBe(1);
    } finally {
      side.socket.close();
      if (side.child.exitCode === null) side.child.kill('SIGKILL');
      await side.exited;
    }
  });
});
