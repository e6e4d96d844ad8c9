/**
 * A hostile or broken command's side against the client: the test plays the
 * far end of a socketpair under a SocketConnection (built directly: the
 * class is internal, not part of the public API), and against the real
 * helper transport's client through a fake daemon. Every bad reply must
 * fail THAT connection with a ProtocolError (pending and later requests
 * reject with it), close every fd that came with it, and leave nothing open.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, connect, makeMemfd, openFdTable, PeerRefusedError, ProtocolError, PROBE_COMMAND, TruncatedError, UnixServer } from '../../src';
import { encodeFdList, encodeJson, FRAME_SOCKET_OPTIONS, FrameType } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import { handshake, SocketConnection } from '../../src/transports/socket-connection';
import { createRng } from '../../harness/rng';
import {
  answerHello,
  badReplies,
  kernelHasPassRights,
  MAX_FDS,
  oversized,
  rawFrame,
  rawSocket,
  readRequest,
  sendBadReply,
  type BadReply,
} from '../../scenarios/support/hostile';
import { fdTableSettles } from '../util/processes';

const SEED = 6;

/** A SocketConnection whose command's side is `fake`, played by the test. */
function fakePair(): { conn: SocketConnection; fake: UnixSocket } {
  const [c, f] = rawSocketPair('seqpacket');
  const fake = rawSocket(f);
  const conn = new SocketConnection(new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), 'helper', { pid: process.pid, threadId: 0 }, async () => ({
    transport: 'helper',
    pid: process.pid,
    exitCode: null,
    signal: null,
  }));
  return { conn, fake };
}

/** Settles to the value or the rejection reason. */
function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** Issues the request `bad` provokes; a duplication of 1..4 copies of `source`. */
function request(conn: SocketConnection, bad: BadReply, source: number, count: number): Promise<unknown> {
  return bad.request === 'dup' ? conn.dupFileDescriptors(new Array<number>(count).fill(source)) : conn.call('echo', 'x');
}

/**
 * Runs one bad reply against a fresh connection. `refuses`: whether the
 * client's socket refuses fds in the kernel in this run.
 */
async function runBadReply(bad: BadReply, refuses: boolean, count: number): Promise<void> {
  const source = makeMemfd('source');
  const { conn, fake } = fakePair();
  try {
    expect(conn.stats.refusesFds).toBe(refuses);
    const pending = outcome(request(conn, bad, source, count));
    const req = await readRequest(fake);
    const reply = bad.reply(req);
    const sent = await sendBadReply(fake, reply);
    if (sent.outcome === 'kernel') {
      // SO_PASSRIGHTS: the fds never left the fake; the connection is intact.
      expect(refuses && bad.rejectedBy === 'kernel').toBe(true);
      await fake.send(
        req.type === FrameType.DUP ? encodeFdList(FrameType.DUP_OK, req.id, new Array<number>(req.fdCount).fill(100)) : encodeJson(FrameType.RESULT, req.id, { value: 'x' }),
      );
      expect((await pending).ok).toBe(true);
      expect(conn.stats).toEqual({ unexpectedFds: 0, protocolErrors: 0, refusesFds: true });
    } else {
      expect(refuses && bad.rejectedBy === 'kernel').toBe(false);
      const result = await pending;
      expect(result.ok).toBe(false);
      expect((result as { error: unknown }).error).toBeInstanceOf(ProtocolError);
      // Later requests fail the same way, without reaching the far side.
      await expect(conn.call('echo', 1)).rejects.toBeInstanceOf(ProtocolError);
      expect(conn.stats.protocolErrors).toBe(1);
      // Every fd that arrived was closed and counted (the oversized reply's
      // by the native receive path, which reports how many).
      expect(conn.stats.unexpectedFds).toBe(reply.fds);
      // The client hung up: the fake sees the end.
      await expect(fake.receive()).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_EOF' });
    }
    await expect(sent.drained).resolves.toBeUndefined();
  } finally {
    // The fake goes first: a live connection's close() waits for CLOSED.
    fake.close();
    await conn.close();
    closeFd(source);
  }
}

describe('a fake command side sends bad replies to a SocketConnection', () => {
  const rng = createRng(SEED).fork('client');
  const cases = badReplies(rng).map((b) => [b.name, b, rng.int(1, 4)] as const);

  test.each(cases)('%s: ProtocolError for that connection, nothing left open', async (_name, bad, count) => {
    const before = openFdTable();
    await runBadReply(bad, kernelHasPassRights(), count);
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test.each(cases.filter(([, b]) => b.rejectedBy === 'kernel'))(
    '%s: on a kernel without SO_PASSRIGHTS (ENOPROTOOPT simulated) the fds arrive, are closed and counted',
    async (_name, bad, count) => {
      const restore = simulateKernelWithoutPassRights();
      try {
        await runBadReply(bad, false, count);
      } finally {
        restore();
      }
    },
  );

  test('pipelined requests all reject with the ProtocolError, folded duplications included', async () => {
    const source = makeMemfd('source');
    const { conn, fake } = fakePair();
    try {
      const all = [
        outcome(conn.dupFileDescriptor(source)),
        outcome(conn.dupFileDescriptor(source)),
        outcome(conn.dupFileDescriptor(source)),
        outcome(conn.call('echo', 1)),
        outcome(conn.dupFileDescriptors([source, source])),
      ];
      await readRequest(fake);
      await fake.send(encodeJson(FrameType.RESULT, 999_999, { value: 1 })); // answers nothing we asked
      for (const r of await Promise.all(all)) {
        expect(r.ok).toBe(false);
        expect((r as { error: unknown }).error).toBeInstanceOf(ProtocolError);
      }
    } finally {
      // The fake goes first: a live connection's close() waits for CLOSED.
      fake.close();
      await conn.close();
      closeFd(source);
    }
  });

  test('well-formed replies are still taken (the fast path and the general one)', async () => {
    const source = makeMemfd('source');
    const { conn, fake } = fakePair();
    try {
      const one = conn.dupFileDescriptor(source);
      const r1 = await readRequest(fake);
      await fake.send(encodeFdList(FrameType.DUP_OK, r1.id, [42]));
      expect(await one).toBe(42);
      const call = conn.call('echo', 'y');
      const r2 = await readRequest(fake);
      await fake.send(encodeJson(FrameType.RESULT, r2.id, { value: 'y' }));
      expect(await call).toBe('y');
      expect(conn.stats.protocolErrors).toBe(0);
    } finally {
      // The fake goes first: a live connection's close() waits for CLOSED.
      fake.close();
      await conn.close();
      closeFd(source);
    }
  });
});

describe('the handshake', () => {
  /** What the error says was wrong, beyond its type: the fds counted, or the truncation kept as its cause. */
  const withFds = (n: number) => (err: ProtocolError): void => {
    expect(err.message).toBe(`connect: the fake answered HELLO with ${n} fd(s) attached; the command's side never sends fds`);
  };
  const answers: Array<[string, (id: number) => { data: Buffer; fds: number }, (err: ProtocolError) => void]> = [
    ['READY with fds attached', (id) => ({ data: encodeJson(FrameType.READY, id, { pid: 1, threadId: 0 }), fds: 3 }), withFds(3)],
    ['a DUP with fds instead of READY', (id) => ({ data: rawFrame(FrameType.DUP, id), fds: MAX_FDS }), withFds(MAX_FDS)],
    [
      'an oversized answer',
      () => ({ data: oversized(createRng(SEED), FrameType.READY), fds: 2 }),
      (err) => {
        expect(err.message).toBe('connect: the fake answered HELLO with a truncated message');
        expect(err.cause).toBeInstanceOf(TruncatedError);
        expect(err.cause).toMatchObject({ what: 'data', fdsClosed: 2 });
      },
    ],
    ['random bytes', () => ({ data: Buffer.from([7, 9, 9, 9]), fds: 0 }), (err) => expect(err.cause).toBeUndefined()],
    ['READY with a malformed payload', (id) => ({ data: encodeJson(FrameType.READY, id, { pid: 'me' }), fds: 0 }), (err) => expect(err.cause).toBeUndefined()],
  ];
  test.each(answers)('%s: ProtocolError, every fd closed (SO_PASSRIGHTS simulated absent)', async (_name, answer, why) => {
    const restore = simulateKernelWithoutPassRights();
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = rawSocket(f);
    try {
      const shaking = outcome(handshake(client, PROBE_COMMAND, 5000, () => 'the fake'));
      const hello = await readRequest(fake);
      const sent = await sendBadReply(fake, answer(hello.id));
      expect(sent.outcome).toBe('sent');
      const r = await shaking;
      expect(r.ok).toBe(false);
      expect((r as { error: unknown }).error).toBeInstanceOf(ProtocolError);
      why((r as { error: ProtocolError }).error);
      client.close();
      await expect(sent.drained).resolves.toBeUndefined();
    } finally {
      restore();
      client.close();
      fake.close();
    }
  });

  test('with SO_PASSRIGHTS, a fake that answers HELLO with fds gets EPERM', async () => {
    if (!kernelHasPassRights()) return; // covered by the test above
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = rawSocket(f);
    try {
      const shaking = outcome(handshake(client, PROBE_COMMAND, 5000, () => 'the fake'));
      const hello = await readRequest(fake);
      const sent = await sendBadReply(fake, { data: encodeJson(FrameType.READY, hello.id, { pid: 1, threadId: 0 }), fds: 1 });
      expect(sent.outcome).toBe('kernel');
      await expect(sent.drained).resolves.toBeUndefined();
      await fake.send(encodeJson(FrameType.READY, hello.id, { pid: 1, threadId: 0 }));
      expect(await shaking).toEqual({ ok: true, value: { pid: 1, threadId: 0 } });
    } finally {
      client.close();
      fake.close();
    }
  });
});

describe('the helper transport against a fake daemon', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdb-fake-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test("connect('helper') refuses fds from the daemon (EPERM) and fails on a bad reply with a ProtocolError", async () => {
    const socketPath = join(dir, 'fake.sock');
    const server = UnixServer.listen(socketPath, { kind: 'seqpacket', ...FRAME_SOCKET_OPTIONS });
    const source = makeMemfd('source');
    try {
      const accepted = server.accept();
      const connecting = connect('helper', { command: PROBE_COMMAND, socketPath });
      const fake = await accepted;
      try {
        await answerHello(fake);
        const conn = await connecting;
        const pending = outcome(conn.dupFileDescriptor(source));
        const req = await readRequest(fake);
        // fds attached to the reply: refused by the client's socket where the kernel can.
        const withFds = await sendBadReply(fake, { data: encodeFdList(FrameType.DUP_OK, req.id, [5]), fds: MAX_FDS });
        expect(withFds.outcome).toBe(kernelHasPassRights() ? 'kernel' : 'sent');
        await expect(withFds.drained).resolves.toBeUndefined();
        if (withFds.outcome === 'kernel') {
          await fake.send(encodeFdList(FrameType.DUP_OK, req.id + 7, [5])); // a reply to no request
        }
        const r = await pending;
        expect(r.ok).toBe(false);
        expect((r as { error: unknown }).error).toBeInstanceOf(ProtocolError);
        await conn.close();
      } finally {
        fake.close();
      }
    } finally {
      server.close();
      closeFd(source);
    }
  });

  test('a daemon that refuses is a PeerRefusedError, not a protocol error', async () => {
    const socketPath = join(dir, 'refuse.sock');
    const server = UnixServer.listen(socketPath, { kind: 'seqpacket', ...FRAME_SOCKET_OPTIONS });
    try {
      const accepted = server.accept();
      const connecting = outcome(connect('helper', { command: PROBE_COMMAND, socketPath }));
      const fake = await accepted;
      await readRequest(fake);
      await fake.send(encodeJson(FrameType.REFUSED, 0, { message: 'go away' }));
      const r = await connecting;
      expect((r as { error: unknown }).error).toBeInstanceOf(PeerRefusedError);
      fake.close();
    } finally {
      server.close();
    }
  });
});
