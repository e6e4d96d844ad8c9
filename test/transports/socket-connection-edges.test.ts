/**
 * A socket connection's less travelled paths, with the command's side played
 * by the test over a socketpair: every answer a handshake can get and the
 * typed error each becomes, the timers a finished handshake or close() must
 * not leave behind (a short script would otherwise stay alive for them),
 * what close() does with messages that are not CLOSED, how a failed probe of
 * the peer's end is reported, and the by-number delivery (pidfd) of the
 * fds of a duplication: pins, never the caller's fds, held until the reply.
 *
 * Timers are jest's fake ones where a deadline is the behaviour under test
 * (setTimeout and clearTimeout only: socket I/O and setImmediate stay real),
 * so a deadline is checked to the millisecond without waiting for it.
 */
import { readSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import {
  ClosedError,
  makeMemfd,
  openFdTable,
  PeerExitedError,
  PeerRefusedError,
  PROBE_COMMAND,
  ProtocolError,
  QueueFullError,
  QuotaExceededError,
  RemoteError,
  SystemError,
  TimeoutError,
  UnknownCommandError,
  UnsupportedError,
} from '../../src';
import type { CommandLocation } from '../../src/connection';
import type { PeerExit, QuotaName } from '../../src/errors';
import { closeFds, closeOwnFds, makePipe, sameFile, setFdFlags } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { decodeFrame, encodeEmpty, encodeFdList, encodeJson, FRAME_SOCKET_OPTIONS, FrameType, type Frame } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import { handshake, SocketConnection, type FdDelivery, type HelloRequest } from '../../src/transports/socket-connection';
import { oversized, sendBadReply } from '../../scenarios/support/hostile';
import { createRng } from '../../harness/rng';
import { fdTableSettles } from '../util/processes';

/** Fake setTimeout/clearTimeout only: the sockets' I/O, setImmediate and microtasks stay real. */
function fakeTimeouts(): void {
  jest.useFakeTimers({
    doNotFake: [
      'Date',
      'hrtime',
      'nextTick',
      'performance',
      'queueMicrotask',
      'requestAnimationFrame',
      'cancelAnimationFrame',
      'requestIdleCallback',
      'cancelIdleCallback',
      'setImmediate',
      'clearImmediate',
      'setInterval',
      'clearInterval',
    ],
  });
}

/** Lets queued callbacks and I/O run a few times. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** Settles to the value or the rejection reason. */
function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** The next frame the client sent, decoded, and the fds that came with it (closed here). */
async function nextFrame(fake: UnixSocket): Promise<Frame> {
  const m = await fake.receive();
  try {
    return decodeFrame(m.data, m.fds);
  } finally {
    closeFds(m.fds);
  }
}

/** The location a fake READY names: not this process, so a test sees which pid an error carries. */
const FAR_PID = 4321;
const FAR_THREAD = 6;

interface Pair {
  conn: SocketConnection;
  fake: UnixSocket;
}

function fakePair(options: { probe?: () => Promise<PeerExit>; onCommandClosed?: (l: CommandLocation) => void; delivery?: FdDelivery } = {}): Pair {
  const [c, f] = rawSocketPair('seqpacket');
  const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
  const conn = new SocketConnection(
    new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }),
    'helper',
    { pid: FAR_PID, threadId: FAR_THREAD },
    options.probe ?? (async () => ({ transport: 'helper', pid: FAR_PID, exitCode: 3, signal: null })),
    options.onCommandClosed,
    options.delivery,
  );
  return { conn, fake };
}

/** Closes a pair whatever state it is in: the fake first, so close() does not wait for CLOSED. */
async function done({ conn, fake }: Pair): Promise<void> {
  fake.close();
  await conn.close();
}

let source: number;
beforeAll(() => {
  source = makeMemfd('socket-connection-edges');
});
afterAll(() => {
  closeFds([source]);
});

describe('the handshake', () => {
  /** Runs a handshake against a fake that answers HELLO with `answer(id)`; returns what HELLO carried and the outcome. */
  async function shake(
    answer: ((id: number) => Buffer) | null,
    request?: HelloRequest,
    timeoutMs = 30_000,
  ): Promise<{ hello: Frame; result: Awaited<ReturnType<typeof outcome>> }> {
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
    try {
      const shaking = outcome(handshake(client, PROBE_COMMAND, timeoutMs, () => 'the fake', request));
      const hello = await nextFrame(fake);
      if (answer) await fake.send(answer(hello.id));
      return { hello, result: await shaking };
    } finally {
      client.close();
      fake.close();
    }
  }

  test('READY resolves with what it names; HELLO carries the version, the command and only what was asked beyond it', async () => {
    const plain = await shake((id) => encodeJson(FrameType.READY, id, { pid: 77, threadId: 2 }));
    expect(plain.result).toEqual({ ok: true, value: { pid: 77, threadId: 2 } });
    expect(plain.hello.type).toBe(FrameType.HELLO);
    const hello = (plain.hello as unknown as { hello: Record<string, unknown> }).hello;
    expect(Object.keys(hello).sort()).toEqual(['command', 'version']);

    const pull = await shake((id) => encodeJson(FrameType.READY, id, { pid: 78, threadId: 0 }), { pull: 'pidfd', probeFd: 9 });
    expect(pull.result).toEqual({ ok: true, value: { pid: 78, threadId: 0 } });
    expect((pull.hello as unknown as { hello: Record<string, unknown> }).hello).toMatchObject({ pull: 'pidfd', probeFd: 9, command: hello.command, version: hello.version });
  });

  test('an ERROR answer is typed by its code: unsupported request, unknown command, or what the constructor threw', async () => {
    const unsupported = await shake((id) => encodeJson(FrameType.ERROR, id, { name: 'Error', message: 'pidfd_getfd is not allowed here', code: 'ERR_FDBRIDGE_UNSUPPORTED' }));
    expect(unsupported.result.ok).toBe(false);
    const u = (unsupported.result as { error: unknown }).error;
    expect(u).toBeInstanceOf(UnsupportedError);
    expect(u).toMatchObject({ code: 'ERR_FDBRIDGE_UNSUPPORTED', message: 'pidfd_getfd is not allowed here' });

    const unknown = await shake((id) => encodeJson(FrameType.ERROR, id, { name: 'Error', message: 'no command "nope"', code: 'ERR_FDBRIDGE_UNKNOWN_COMMAND' }));
    const k = (unknown.result as { error: unknown }).error;
    expect(k).toBeInstanceOf(UnknownCommandError);
    // Which peer said so, and what it said.
    expect(k).toMatchObject({ code: 'ERR_FDBRIDGE_UNKNOWN_COMMAND', message: 'connect: the fake: no command "nope"' });

    const thrown = await shake((id) => encodeJson(FrameType.ERROR, id, { name: 'TypeError', message: 'bad options', code: 'E_OPTS' }));
    const t = (thrown.result as { error: unknown }).error;
    expect(t).toBeInstanceOf(RemoteError);
    expect(t).not.toBeInstanceOf(UnsupportedError);
    expect(t).toMatchObject({ method: 'constructor', remote: { name: 'TypeError', message: 'bad options', code: 'E_OPTS' } });
  });

  test("REFUSED is a PeerRefusedError quoting the daemon after naming the peer; a daemon's quota in it is the error's quota", async () => {
    const plain = await shake((id) => encodeJson(FrameType.REFUSED, id, { message: 'uid 65534 may not connect here' }));
    const p = (plain.result as { error: unknown }).error;
    expect(p).toBeInstanceOf(PeerRefusedError);
    expect(p).toMatchObject({ code: 'ERR_FDBRIDGE_REFUSED', message: 'connect: the fake refused this client: uid 65534 may not connect here' });
    expect((p as PeerRefusedError).quota).toBeUndefined();
    expect((p as PeerRefusedError).peer).toBeUndefined();

    // The daemon's limit travels in its words only: the client reads it back from the message.
    const limited = await shake((id) => encodeJson(FrameType.REFUSED, id, { message: 'quota uidConnections: 8 connections of uid 0 already' }));
    const q = (limited.result as { error: unknown }).error;
    expect(q).toBeInstanceOf(PeerRefusedError);
    expect((q as PeerRefusedError).quota).toBe('uidConnections');
  });

  test.each([
    ['RESULT', (id: number) => encodeJson(FrameType.RESULT, id, { value: 1 })],
    ['CLOSED', (id: number) => encodeEmpty(FrameType.CLOSED, id)],
    ['DUP_OK', (id: number) => encodeFdList(FrameType.DUP_OK, id, [3])],
  ])('a well-formed %s instead of READY is a ProtocolError naming the frame type', async (_name, answer) => {
    const r = await shake(answer);
    const err = (r.result as { error: unknown }).error;
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toBe(`connect: the fake answered HELLO with a frame of type ${answer(0)[0]}`);
  });

  test('a peer that hangs up after HELLO fails the handshake with the end of file, at once', async () => {
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
    try {
      const shaking = outcome(handshake(client, PROBE_COMMAND, 30_000, () => 'the fake'));
      await nextFrame(fake);
      fake.close();
      const r = await shaking;
      expect((r as { error: unknown }).error).toMatchObject({ name: 'EofError', code: 'ERR_FDBRIDGE_EOF' });
    } finally {
      client.close();
      fake.close();
    }
  });

  test('the deadline is timeoutMs to the millisecond, and an answered handshake leaves no timer behind', async () => {
    fakeTimeouts();
    try {
      const [c, f] = rawSocketPair('seqpacket');
      const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
      const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
      try {
        const settled: unknown[] = [];
        const shaking = outcome(handshake(client, PROBE_COMMAND, 700, () => 'the fake')).then((r) => settled.push(r));
        await nextFrame(fake);
        jest.advanceTimersByTime(699);
        await turns();
        expect(settled).toEqual([]);
        jest.advanceTimersByTime(1);
        // The rejection needs microtasks only: a handshake with no deadline
        // fails here instead of hanging the test.
        await turns();
        expect(settled).toHaveLength(1);
        await shaking;
        const err = (settled[0] as { error: unknown }).error;
        expect(err).toBeInstanceOf(TimeoutError);

        // A second handshake on a fresh pair, answered: its timer is gone with it.
        const [c2, f2] = rawSocketPair('seqpacket');
        const client2 = new UnixSocket(c2, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
        const fake2 = new UnixSocket(f2, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
        try {
          const answered = handshake(client2, PROBE_COMMAND, 60_000, () => 'the fake');
          const hello = await nextFrame(fake2);
          expect(jest.getTimerCount()).toBe(1);
          await fake2.send(encodeJson(FrameType.READY, hello.id, { pid: 1, threadId: 0 }));
          await expect(answered).resolves.toEqual({ pid: 1, threadId: 0 });
          expect(jest.getTimerCount()).toBe(0);
        } finally {
          client2.close();
          fake2.close();
        }
      } finally {
        client.close();
        fake.close();
      }
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('close()', () => {
  test('a silent peer gets exactly the 5 s grace: not a millisecond less; the hook runs once it ends', async () => {
    fakeTimeouts();
    try {
      let hooked = 0;
      const pair = fakePair({ onCommandClosed: () => void hooked++ });
      try {
        let closed = false;
        const closing = pair.conn.close().then(() => (closed = true));
        expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
        jest.advanceTimersByTime(4999);
        await turns();
        expect([closed, hooked]).toEqual([false, 0]);
        jest.advanceTimersByTime(1);
        await closing;
        expect(hooked).toBe(1);
        // The client hung up after the grace.
        await expect(pair.fake.receive()).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_EOF' });
      } finally {
        await done(pair);
      }
    } finally {
      jest.useRealTimers();
    }
  });

  test('CLOSED ends the wait, the hook learns where the command ran, and no grace timer is left behind', async () => {
    fakeTimeouts();
    try {
      const locations: CommandLocation[] = [];
      const pair = fakePair({ onCommandClosed: (l) => void locations.push(l) });
      try {
        const closing = pair.conn.close();
        expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
        expect(jest.getTimerCount()).toBe(1);
        await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
        await closing;
        expect(jest.getTimerCount()).toBe(0);
        expect(locations).toEqual([{ transport: 'helper', pid: FAR_PID, threadId: FAR_THREAD }]);
        expect(pair.conn.location).toEqual({ transport: 'helper', pid: FAR_PID, threadId: FAR_THREAD });
      } finally {
        await done(pair);
      }
    } finally {
      jest.useRealTimers();
    }
  });

  test('while closing, replies to rejected requests, truncated messages and fds do not end the wait; fds are closed and counted', async () => {
    const restore = simulateKernelWithoutPassRights();
    const before = openFdTable();
    let hooked = 0;
    const pair = fakePair({ onCommandClosed: () => void hooked++ });
    restore();
    try {
      expect(pair.conn.stats.refusesFds).toBe(false);
      const call = outcome(pair.conn.call('echo', 1));
      const req = await nextFrame(pair.fake);
      let closed = false;
      const closing = pair.conn.close().then(() => (closed = true));
      expect((await call).ok).toBe(false);
      expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
      // The late reply to the call close() rejected, a DUP_OK to no request.
      await pair.fake.send(encodeJson(FrameType.RESULT, req.id, { value: 1 }));
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, req.id + 1, [5]));
      // Oversized: arrives truncated.
      await pair.fake.send(oversized(createRng(17), FrameType.RESULT));
      // Three fds with a frame that is not CLOSED.
      const sent = await sendBadReply(pair.fake, { data: encodeJson(FrameType.RESULT, req.id, { value: 2 }), fds: 3 });
      expect(sent.outcome).toBe('sent');
      await sent.drained; // every copy closed, by the client
      await turns(10);
      expect([closed, hooked]).toEqual([false, 0]);
      expect(pair.conn.stats).toEqual({ unexpectedFds: 3, protocolErrors: 0, refusesFds: false });
      await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await closing;
      expect(hooked).toBe(1);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test("a message whose first byte is CLOSED's type ends the wait, however short", async () => {
    let hooked = 0;
    const pair = fakePair({ onCommandClosed: () => void hooked++ });
    try {
      const closing = pair.conn.close();
      expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
      await pair.fake.send(Buffer.from([0]));
      await turns(10);
      expect(hooked).toBe(0);
      await pair.fake.send(Buffer.from([FrameType.CLOSED]));
      await closing;
      expect(hooked).toBe(1);
    } finally {
      await done(pair);
    }
  });

  test('duplications folded in the tick close() is called are never sent: ClosedError, their pins closed', async () => {
    const before = openFdTable();
    const pair = fakePair();
    try {
      const first = outcome(pair.conn.dupFileDescriptor(source));
      const folded = [outcome(pair.conn.dupFileDescriptor(source)), outcome(pair.conn.dupFileDescriptor(source))];
      const closing = pair.conn.close();
      for (const r of await Promise.all(folded)) {
        expect((r as { error: unknown }).error).toBeInstanceOf(ClosedError);
        expect(((r as { error: Error }).error).message).toBe('dupFileDescriptor failed: the helper connection was closed');
      }
      expect(((await first) as { error: unknown }).error).toBeInstanceOf(ClosedError);
      // Only the first DUP and the CLOSE went out.
      expect((await nextFrame(pair.fake)).type).toBe(FrameType.DUP);
      expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
      await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await closing;
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('requests made while close() waits for CLOSED reject with ClosedError and send nothing', async () => {
    const pair = fakePair();
    try {
      const closing = pair.conn.close();
      expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
      await expect(pair.conn.dupFileDescriptor(source)).rejects.toBeInstanceOf(ClosedError);
      await expect(pair.conn.dupFileDescriptors([source, source])).rejects.toBeInstanceOf(ClosedError);
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(ClosedError);
      await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await closing;
      // Nothing came after CLOSE but the hang-up.
      await expect(pair.fake.receive()).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_EOF' });
    } finally {
      await done(pair);
    }
  });
});

describe('a peer that is gone', () => {
  test('a probe that fails: PeerExitedError names the connection\'s transport and pid, with no exit status', async () => {
    const pair = fakePair({ probe: () => Promise.reject(new Error('no such process')) });
    try {
      const call = outcome(pair.conn.call('echo', 1));
      await nextFrame(pair.fake);
      pair.fake.close();
      const r = await call;
      const err = (r as { error: unknown }).error;
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport: 'helper', pid: FAR_PID, exitCode: null, signal: null });
      expect((err as Error).message).toBe(`echo() failed: the helper daemon (pid ${FAR_PID}) closed the connection before replying`);
      // And every later request: the connection stays broken, not closed.
      await expect(pair.conn.dupFileDescriptor(source)).rejects.toBeInstanceOf(PeerExitedError);
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(PeerExitedError);
      expect(pair.conn.closed).toBe(false);
    } finally {
      await done(pair);
    }
  });

  test('a peer that dies with our requests unread (ECONNRESET) has closed the connection: nothing more is claimed', async () => {
    const pair = fakePair({ probe: async () => ({ transport: 'helper', pid: FAR_PID, exitCode: null, signal: null }) });
    try {
      const call = outcome(pair.conn.call('echo', 1));
      await turns();
      // Closed with the CALL still in its receive queue: the client's next read is ECONNRESET, not end of file.
      pair.fake.close();
      const err = ((await call) as { error: unknown }).error;
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ pid: FAR_PID, exitCode: null, signal: null });
      expect((err as Error).message).toBe(`echo() failed: the helper daemon (pid ${FAR_PID}) closed the connection before replying`);
    } finally {
      await done(pair);
    }
  });

  test('close() after the peer is gone, even while its end is still being found out, does not run the hook: there is no command left to inspect', async () => {
    let hooked = 0;
    let probed!: () => void;
    let answer!: (exit: PeerExit) => void;
    const asked = new Promise<void>((resolve) => (probed = resolve));
    const probe = (): Promise<PeerExit> => {
      probed();
      return new Promise<PeerExit>((resolve) => (answer = resolve));
    };
    const pair = fakePair({ probe, onCommandClosed: () => void hooked++ });
    try {
      const call = outcome(pair.conn.call('echo', 1));
      await nextFrame(pair.fake);
      pair.fake.close();
      await asked; // the connection read the end of file and waits for the probe
      // Meanwhile a blocking duplication cannot wait: it fails at once, naming the peer.
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(
        expect.objectContaining({ name: 'PeerExitedError', transport: 'helper', pid: FAR_PID, exitCode: null, signal: null }) as Error,
      );
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(`request failed: the helper daemon (pid ${FAR_PID}) closed the connection before replying`);
      await pair.conn.close();
      expect(hooked).toBe(0);
      expect(((await call) as { error: unknown }).error).toBeInstanceOf(ClosedError);
      answer({ transport: 'helper', pid: FAR_PID, exitCode: 0, signal: null });
      await turns();
      expect(hooked).toBe(0);
    } finally {
      await done(pair);
    }
  });

  test('pending requests of every kind fail with how the peer ended, and the socket is closed', async () => {
    const before = openFdTable();
    const pair = fakePair();
    try {
      const first = outcome(pair.conn.dupFileDescriptor(source));
      const folded = [outcome(pair.conn.dupFileDescriptor(source)), outcome(pair.conn.dupFileDescriptor(source))];
      const batch = outcome(pair.conn.dupFileDescriptors([source, source, source]));
      const call = outcome(pair.conn.call('echo', 1));
      for (let i = 0; i < 4; i++) await nextFrame(pair.fake);
      pair.fake.close();
      for (const r of await Promise.all([first, ...folded, batch, call])) {
        expect(r.ok).toBe(false);
        expect((r as { error: unknown }).error).toMatchObject({ name: 'PeerExitedError', pid: FAR_PID, exitCode: 3 });
      }
    } finally {
      await done(pair);
    }
    // The client's socket was closed by the failure, and the folded pins with their frame.
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describe('folded duplications', () => {
  test('a closed fd among folded calls fails alone with EBADF, before anything is sent; the others are answered', async () => {
    const pair = fakePair();
    try {
      const gone = makeMemfd('gone');
      closeFds([gone]);
      const first = pair.conn.dupFileDescriptor(source);
      const bad = outcome(pair.conn.dupFileDescriptor(gone));
      const good = pair.conn.dupFileDescriptor(source);
      const r = await bad;
      expect((r as { error: unknown }).error).toBeInstanceOf(SystemError);
      expect((r as { error: unknown }).error).toMatchObject({ code: 'EBADF' });
      const f1 = await pair.fake.receive();
      const f2 = await pair.fake.receive();
      // The folded frame carries the one good fd: a copy of the same file.
      expect([f1.fds.length, f2.fds.length]).toEqual([1, 1]);
      expect(sameFile(f2.fds[0] as number, source)).toBe(true);
      closeFds([...f1.fds, ...f2.fds]);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(f2.data, [0]).id, [21]));
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(f1.data, [0]).id, [20]));
      expect(await Promise.all([first, good])).toEqual([20, 21]);
    } finally {
      await done(pair);
    }
  });

  test('a closed fd alone (nothing else in flight) fails with EBADF, nothing sent; the connection goes on', async () => {
    const pair = fakePair();
    try {
      const gone = makeMemfd('gone');
      closeFds([gone]);
      const r = await outcome(pair.conn.dupFileDescriptor(gone));
      expect((r as { error: unknown }).error).toBeInstanceOf(SystemError);
      expect((r as { error: unknown }).error).toMatchObject({ code: 'EBADF' });
      // The next frame is the call: nothing went out for the closed fd.
      const call = pair.conn.call('echo', 1);
      const f = await nextFrame(pair.fake);
      expect(f.type).toBe(FrameType.CALL);
      await pair.fake.send(encodeJson(FrameType.RESULT, f.id, { value: 1 }));
      await expect(call).resolves.toBe(1);
    } finally {
      await done(pair);
    }
  });

  test('a call made after folded duplications reaches the command after them', async () => {
    const pair = fakePair();
    try {
      const first = pair.conn.dupFileDescriptor(source);
      const folded = pair.conn.dupFileDescriptor(source);
      const call = pair.conn.call('echo', 1);
      const frames = [await pair.fake.receive(), await pair.fake.receive(), await pair.fake.receive()];
      for (const m of frames) closeFds(m.fds);
      expect(frames.map((m) => m.data[0])).toEqual([FrameType.DUP, FrameType.DUP, FrameType.CALL]);
      const ids = frames.map((m) => decodeFrame(m.data, new Array<number>(m.fds.length).fill(0)).id);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, ids[0] as number, [30]));
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, ids[1] as number, [31]));
      await pair.fake.send(encodeJson(FrameType.RESULT, ids[2] as number, { value: 'x' }));
      expect(await Promise.all([first, folded, call])).toEqual([30, 31, 'x']);
    } finally {
      await done(pair);
    }
  });
});

describe('copies and pieces', () => {
  test("a folded duplication keeps no copy of the caller's fd once its frame is sent: a pipe's reader sees its end before any reply", async () => {
    const before = openFdTable();
    const pair = fakePair();
    const [r, w] = makePipe();
    let writer = w;
    try {
      setFdFlags(r, { nonblock: true });
      const first = pair.conn.dupFileDescriptor(w); // alone, at once: the kernel holds the copy in flight
      const folded = [pair.conn.dupFileDescriptor(w), pair.conn.dupFileDescriptor(w)]; // pinned, sent together from a microtask
      const f1 = await pair.fake.receive();
      const f2 = await pair.fake.receive();
      expect([f1.fds.length, f2.fds.length]).toEqual([1, 2]);
      // The caller closes its write end, the command's side the copies it got: none is left anywhere.
      closeFds([w, ...f1.fds, ...f2.fds]);
      writer = -1;
      expect(readSync(r, Buffer.alloc(1))).toBe(0); // end of file, not EAGAIN: the client holds no pin
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(f1.data, [0]).id, [40]));
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(f2.data, [0, 0]).id, [41, 42]));
      expect(await Promise.all([first, ...folded])).toEqual([40, 41, 42]);
    } finally {
      closeFds(writer >= 0 ? [r, writer] : [r]);
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a batch in pieces whose last piece breaks the connection fails with that piece\'s own error; nothing is sent to give back the rest', async () => {
    const before = openFdTable();
    const pair = fakePair();
    try {
      const batch = outcome(pair.conn.dupFileDescriptors(new Array<number>(300).fill(source)));
      const m1 = await pair.fake.receive();
      const m2 = await pair.fake.receive();
      expect([m1.fds.length, m2.fds.length]).toEqual([253, 47]);
      closeFds([...m1.fds, ...m2.fds]);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(m1.data, [0]).id, Array.from({ length: 253 }, (_, i) => 500 + i)));
      // A RESULT to a DUP: the two sides disagree, the connection is over (its far side sweeps what it holds).
      await pair.fake.send(encodeJson(FrameType.RESULT, decodeFrame(m2.data, [0]).id, { value: 1 }));
      const r = await batch;
      expect((r as { error: unknown }).error).toBeInstanceOf(ProtocolError);
      expect((r as { error: unknown }).error).toMatchObject({ message: 'dupFileDescriptors: the reply does not list 47 fd(s)' });
      // No RELEASE: the client hung up after the bad reply.
      expect((await outcome(pair.fake.receive())).ok).toBe(false);
      await expect(pair.conn.call('echo', 1)).rejects.toThrow('the helper answered a duplication with a wrong reply');
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describe('giving back what a failed batch got', () => {
  test("a RELEASE the command's side refuses fails the batch with that refusal: the duplicates that arrived may still be held there", async () => {
    const before = openFdTable();
    const pair = fakePair();
    try {
      const batch = outcome(pair.conn.dupFileDescriptors(new Array<number>(300).fill(source)));
      const m1 = await pair.fake.receive();
      const m2 = await pair.fake.receive();
      closeFds([...m1.fds, ...m2.fds]);
      const given = Array.from({ length: 253 }, (_, i) => 500 + i);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(m1.data, [0]).id, given));
      await pair.fake.send(encodeJson(FrameType.ERROR, decodeFrame(m2.data, [0]).id, { name: 'Error', message: 'no room', code: 'E_ROOM' }));
      const release = await nextFrame(pair.fake);
      expect(release).toMatchObject({ type: FrameType.RELEASE, fds: given });
      await pair.fake.send(encodeJson(FrameType.ERROR, release.id, { name: 'Error', message: 'cannot close', code: 'E_HELD' }));
      const r = await batch;
      // The failure that matters is the one that may have left fds behind: the batch names the release, and what refused it.
      expect((r as { error: unknown }).error).toBeInstanceOf(RemoteError);
      expect((r as { error: unknown }).error).toMatchObject({ method: 'release', remote: { code: 'E_HELD' } });
      // A refused RELEASE is the command's answer, not a broken connection: it goes on.
      const call = pair.conn.call('echo', 3);
      const f = await nextFrame(pair.fake);
      expect(f.type).toBe(FrameType.CALL);
      await pair.fake.send(encodeJson(FrameType.RESULT, f.id, { value: 3 }));
      await expect(call).resolves.toBe(3);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describe('by-number delivery (the pidfd strategy): pins named in GETFD frames', () => {
  /** A delivery that records what the connection hands it. */
  function recordingDelivery(): FdDelivery & { unsettledPins: number[][]; ended: number } {
    const d = {
      byNumber: true,
      syncUnsupported: 'no blocking duplication on this fake',
      unsettledPins: [] as number[][],
      ended: 0,
      unsettled(pins: number[]) {
        d.unsettledPins.push([...pins]);
        closeOwnFds(pins);
      },
      peerEnded() {
        d.ended++;
      },
      released: () => Promise.resolve(),
    };
    return d;
  }

  test('a single duplication names a pin of the caller\'s fd (never the fd itself), closed once the reply came', async () => {
    const before = openFdTable();
    const delivery = recordingDelivery();
    const pair = fakePair({ delivery });
    try {
      const one = pair.conn.dupFileDescriptor(source);
      const m = await pair.fake.receive();
      expect(m.fds).toEqual([]); // no fd travels with a GETFD
      const f = decodeFrame(m.data, []);
      expect(f.type).toBe(FrameType.GETFD);
      const [pin] = (f as { fds: number[] }).fds;
      expect(pin).not.toBe(source);
      // The pin is open, a copy of the caller's file, while the request is pending.
      expect(sameFile(pin as number, source)).toBe(true);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, f.id, [40]));
      await expect(one).resolves.toBe(40);
      expect(delivery.unsettledPins).toEqual([]);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a batch that fails gives its pins to the strategy, still open; dupFileDescriptorSync is refused with its reason', async () => {
    const before = openFdTable();
    const delivery = recordingDelivery();
    const pair = fakePair({ delivery });
    try {
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(new UnsupportedError('no blocking duplication on this fake'));
      const batch = outcome(pair.conn.dupFileDescriptors([source, source]));
      const f = await nextFrame(pair.fake);
      expect(f.type).toBe(FrameType.GETFD);
      const pins = (f as { fds: number[] }).fds;
      expect(pins).toHaveLength(2);
      expect(pins).not.toContain(source);
      for (const pin of pins) expect(sameFile(pin, source)).toBe(true);
      await pair.fake.send(encodeJson(FrameType.ERROR, f.id, { name: 'Error', message: 'pidfd_getfd failed' }));
      const r = await batch;
      expect((r as { error: unknown }).error).toBeInstanceOf(RemoteError);
      // Handed over open: the far side might still take them.
      expect(delivery.unsettledPins).toEqual([pins]);
      expect(delivery.ended).toBe(0);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a peer seen gone twice (EPIPE on a send, then the end of file) is probed once, and the strategy hears it once', async () => {
    const delivery = recordingDelivery();
    let probes = 0;
    const pair = fakePair({
      delivery,
      probe: async () => {
        probes++;
        // As a real probe does, it takes a while: the end of file is read meanwhile.
        await turns(10);
        return { transport: 'helper', pid: FAR_PID, exitCode: 3, signal: null };
      },
    });
    try {
      pair.fake.close();
      // Before the end of file is read: the send fails with EPIPE.
      const err = await outcome(pair.conn.call('echo', 1));
      expect((err as { error: unknown }).error).toMatchObject({ name: 'PeerExitedError', exitCode: 3 });
      await turns(20);
      // A later request fails with the connection's own error, saying how the peer ended.
      const later = ((await outcome(pair.conn.dupFileDescriptors([source]))) as { error: Error }).error;
      expect(later).toMatchObject({ name: 'PeerExitedError', exitCode: 3 });
      expect(later.message).toBe(`request failed: the helper daemon (pid ${FAR_PID}) exited with code 3 before replying`);
      expect(probes).toBe(1);
      expect(delivery.ended).toBe(1);
    } finally {
      await done(pair);
    }
  });

  test('a batch sent to a peer already gone (EPIPE at the send): how the peer ended, naming the call; its pins closed, none left to the strategy', async () => {
    const before = openFdTable();
    const delivery = recordingDelivery();
    const pair = fakePair({ delivery });
    try {
      pair.fake.close();
      // No turn of the event loop: the end of file is unread, so the GETFD's send itself meets EPIPE.
      const r = await outcome(pair.conn.dupFileDescriptors([source, source]));
      expect((r as { error: unknown }).error).toBeInstanceOf(PeerExitedError);
      expect((r as { error: unknown }).error).toMatchObject({
        pid: FAR_PID,
        exitCode: 3,
        message: `dupFileDescriptors failed: the helper daemon (pid ${FAR_PID}) exited with code 3 before replying`,
      });
      expect(delivery.unsettledPins).toEqual([]);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('once the peer is gone, a batch with a closed fd fails as the connection does, not with EBADF, and pins nothing', async () => {
    const before = openFdTable();
    const delivery = recordingDelivery();
    const pair = fakePair({ delivery });
    try {
      pair.fake.close();
      await expect(pair.conn.call('echo', 1)).rejects.toBeInstanceOf(PeerExitedError);
      const gone = makeMemfd('gone');
      closeFds([gone]);
      await expect(pair.conn.dupFileDescriptors([source, gone])).rejects.toBeInstanceOf(PeerExitedError);
      expect(delivery.unsettledPins).toEqual([]);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('when the peer ends, the strategy hears it once, and the pending request\'s pins are given to it', async () => {
    const before = openFdTable();
    const delivery = recordingDelivery();
    const pair = fakePair({ delivery });
    try {
      const one = outcome(pair.conn.dupFileDescriptor(source));
      const f = await nextFrame(pair.fake);
      pair.fake.close();
      const r = await one;
      expect((r as { error: unknown }).error).toBeInstanceOf(PeerExitedError);
      expect(delivery.ended).toBe(1);
      expect(delivery.unsettledPins).toEqual([(f as { fds: number[] }).fds]);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

describe('ERROR replies are typed by what failed and where', () => {
  test('a quota is a QuotaExceededError for a duplication and a call alike; a failed system call is a SystemError only for a duplication', async () => {
    const pair = fakePair();
    try {
      const quota = { name: 'QuotaExceededError', message: 'quota fds: the command holds 10 fds (limit 10)', code: 'ERR_FDBRIDGE_QUOTA' };
      const emfile = { name: 'SystemError', message: 'dup: too many open files', code: 'EMFILE', syscall: 'dup' };
      const asked = [
        outcome(pair.conn.dupFileDescriptors([source])),
        outcome(pair.conn.call('echo', 1)),
        outcome(pair.conn.dupFileDescriptors([source, source])),
        outcome(pair.conn.call('open', 'x')),
      ];
      const answers = [quota, quota, emfile, emfile];
      for (const answer of answers) {
        const f = await nextFrame(pair.fake);
        await pair.fake.send(encodeJson(FrameType.ERROR, f.id, answer));
      }
      const [dupQuota, callQuota, dupSys, callSys] = (await Promise.all(asked)).map((r) => (r as { error: unknown }).error);
      for (const e of [dupQuota, callQuota]) {
        expect(e).toBeInstanceOf(QuotaExceededError);
        expect(e).toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'fds' });
      }
      expect(dupSys).toBeInstanceOf(SystemError);
      expect(dupSys).toMatchObject({ code: 'EMFILE' });
      // A command's method that failed with EMFILE is that method's error.
      expect(callSys).toBeInstanceOf(RemoteError);
      expect(callSys).toMatchObject({ method: 'open', remote: { code: 'EMFILE' } });
      // None of them broke the connection.
      expect(pair.conn.stats.protocolErrors).toBe(0);
      const next = pair.conn.call('echo', 2);
      const f = await nextFrame(pair.fake);
      await pair.fake.send(encodeJson(FrameType.RESULT, f.id, { value: 2 }));
      await expect(next).resolves.toBe(2);
    } finally {
      await done(pair);
    }
  });
});

describe('what the errors say', () => {
  test("a command's error names the method exactly as it was called, parentheses and all", async () => {
    const pair = fakePair();
    try {
      for (const method of ['a()b', 'f()', '()']) {
        const failing = outcome(pair.conn.call(method));
        const f = await nextFrame(pair.fake);
        expect(f).toMatchObject({ type: FrameType.CALL, method });
        await pair.fake.send(encodeJson(FrameType.ERROR, f.id, { name: 'Error', message: 'no' }));
        const err = ((await failing) as { error: unknown }).error;
        expect(err).toBeInstanceOf(RemoteError);
        expect((err as RemoteError).method).toBe(method);
      }
    } finally {
      await done(pair);
    }
  });

  /** Sends `reply(request)` to the first request `ask` makes; returns the request's error and the next request's. */
  async function violation(ask: (conn: SocketConnection) => Promise<unknown>, reply: (req: Frame) => { data: Buffer; fds: number }): Promise<{ request: Error; later: Error; stats: object }> {
    const restore = simulateKernelWithoutPassRights();
    const pair = fakePair();
    restore();
    try {
      const asked = outcome(ask(pair.conn));
      const req = await nextFrame(pair.fake);
      const sent = await sendBadReply(pair.fake, reply(req));
      await sent.drained;
      const request = ((await asked) as { error: Error }).error;
      const later = ((await outcome(pair.conn.call('echo', 1))) as { error: Error }).error;
      return { request, later, stats: pair.conn.stats };
    } finally {
      await done(pair);
    }
  }

  test('a protocol violation says what the command side did, to the request and to every later one', async () => {
    const wrongToDup = await violation(
      (c) => c.dupFileDescriptors([source, source]),
      (req) => ({ data: encodeJson(FrameType.RESULT, req.id, { value: 1 }), fds: 0 }),
    );
    expect(wrongToDup.request).toBeInstanceOf(ProtocolError);
    expect(wrongToDup.request.message).toBe('dupFileDescriptors: the reply does not list 2 fd(s)');
    expect(wrongToDup.later).toBeInstanceOf(ProtocolError);
    expect(wrongToDup.later.message).toBe('the helper answered a duplication with a wrong reply');

    const wrongToCall = await violation(
      (c) => c.call('echo', 'x'),
      (req) => ({ data: encodeFdList(FrameType.DUP_OK, req.id, [3]), fds: 0 }),
    );
    expect(wrongToCall.request.message).toBe('echo(): the reply carries fd numbers');
    expect(wrongToCall.later.message).toBe('the helper answered a call with fd numbers');

    const toNoRequest = await violation(
      (c) => c.call('echo', 'x'),
      (req) => ({ data: encodeJson(FrameType.RESULT, req.id + 5, { value: 1 }), fds: 0 }),
    );
    expect(toNoRequest.later.message).toMatch(/^the helper sent a reply \(type 7, id \d+\) to no request$/);
    expect(toNoRequest.stats).toEqual({ unexpectedFds: 0, protocolErrors: 1, refusesFds: false });

    const withFds = await violation(
      (c) => c.call('echo', 'x'),
      (req) => ({ data: encodeJson(FrameType.RESULT, req.id, { value: 1 }), fds: 2 }),
    );
    expect(withFds.later.message).toBe('the helper sent 2 fd(s) with a frame of type 7; its side never sends fds');
    expect(withFds.stats).toEqual({ unexpectedFds: 2, protocolErrors: 1, refusesFds: false });

    const emptyWithFds = await violation(
      (c) => c.call('echo', 'x'),
      () => ({ data: Buffer.alloc(0), fds: 1 }),
    );
    expect(emptyWithFds.later.message).toBe('the helper sent 1 fd(s) with a frame of type none; its side never sends fds');
    expect(emptyWithFds.stats).toEqual({ unexpectedFds: 1, protocolErrors: 1, refusesFds: false });
  });
});

describe('a full send queue', () => {
  /** A pair whose client's send queue holds at most 4 KiB beyond what the kernel took. */
  function smallQueuePair(): Pair {
    const [c, f] = rawSocketPair('seqpacket');
    const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
    const conn = new SocketConnection(
      new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS, sendQueueLimit: 4096 }),
      'helper',
      { pid: FAR_PID, threadId: 0 },
      async () => ({ transport: 'helper', pid: FAR_PID, exitCode: 3, signal: null }),
    );
    return { conn, fake };
  }

  /** Makes calls of 100 KiB until one meets the full queue; returns the accepted ones. */
  async function fill(conn: SocketConnection): Promise<Array<Promise<unknown>>> {
    const big = 'x'.repeat(100 * 1024);
    const accepted: Array<Promise<unknown>> = [];
    for (let i = 0; i < 64; i++) {
      const r = outcome(conn.call('echo', big));
      await turns(1);
      const settled = await Promise.race([r, new Promise((res) => setImmediate(() => res('pending')))]);
      if (settled !== 'pending' && !(settled as { ok: boolean }).ok) {
        expect((settled as { error: unknown }).error).toBeInstanceOf(QueueFullError);
        return accepted;
      }
      accepted.push(r);
    }
    throw new Error('the send queue never filled');
  }

  /** What a synchronous call threw (or returned). */
  function thrown(f: () => unknown): unknown {
    try {
      return f();
    } catch (err) {
      return err;
    }
  }

  function expectQueueFull(e: unknown, operation: string): void {
    expect(e).toBeInstanceOf(QueueFullError);
    const quoted = operation.replace(/[()]/g, '\\$&');
    expect((e as Error).message).toMatch(new RegExp(`^${quoted} failed: the send queue is full: .* still wait for the helper \\(pid ${FAR_PID}\\) to read them`));
  }

  /** The frames the fake reads up to CLOSE (which close() sends past the limit), then CLOSED. */
  async function closeThrough(pair: Pair): Promise<number[]> {
    let closed = false;
    const closing = pair.conn.close().then(() => (closed = true));
    const types: number[] = [];
    for (;;) {
      const frame = await nextFrame(pair.fake);
      types.push(frame.type);
      if (frame.type === FrameType.CLOSE) break;
    }
    expect(closed).toBe(false);
    await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
    await closing;
    return types;
  }

  test('every kind of request says so in its own terms and sends nothing; CLOSE still goes out', async () => {
    const before = openFdTable();
    const pair = smallQueuePair();
    try {
      const accepted = await fill(pair.conn);
      const rejected = await Promise.all([
        outcome(pair.conn.dupFileDescriptor(source)), // nothing in flight: alone, at once
        outcome(pair.conn.dupFileDescriptors([source, source])),
        outcome(pair.conn.call('echo', 1)),
      ]);
      const errors = [...rejected.map((r) => (r as { error: unknown }).error), thrown(() => pair.conn.dupFileDescriptorSync(source))];
      ['dupFileDescriptor', 'dupFileDescriptors', 'echo()', 'dupFileDescriptorSync'].forEach((op, i) => expectQueueFull(errors[i], op));
      // What was sent: the accepted calls, then CLOSE; none of the refused requests.
      expect(await closeThrough(pair)).toEqual([...accepted.map(() => FrameType.CALL), FrameType.CLOSE]);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('duplications folded behind one in flight are refused together, their pins closed', async () => {
    const before = openFdTable();
    const pair = smallQueuePair();
    try {
      const inFlight = outcome(pair.conn.dupFileDescriptor(source));
      const accepted = await fill(pair.conn);
      const folded = await Promise.all([outcome(pair.conn.dupFileDescriptor(source)), outcome(pair.conn.dupFileDescriptor(source))]);
      for (const r of folded) expectQueueFull((r as { error: unknown }).error, 'dupFileDescriptor');
      expect(await closeThrough(pair)).toEqual([FrameType.DUP, ...accepted.map(() => FrameType.CALL), FrameType.CLOSE]);
      expect((await inFlight).ok).toBe(false);
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a peer that stops reading (shuts its receiving side) fails the queued requests with how it ended when they are sent, with no end of file', async () => {
    const before = openFdTable();
    const pair = smallQueuePair();
    try {
      const accepted = await fill(pair.conn);
      // Requests wait in the client's queue behind a full kernel buffer. The
      // peer's SHUT_RD makes every later send fail with EPIPE, while the
      // client reads no end of file: the peer still holds its sending side.
      pair.fake.shutdown('read');
      // What the kernel already holds can still be read; once it is read,
      // the client's queue gets room and its next send meets EPIPE.
      let read = 0;
      for (;;) {
        const frame = await outcome(nextFrame(pair.fake));
        if (!frame.ok) break; // end of file of our own shut receiving side: everything read
        expect(frame.value.type).toBe(FrameType.CALL);
        read++;
      }
      expect(read).toBeLessThan(accepted.length); // some were still queued
      for (const r of (await Promise.all(accepted)) as Array<Awaited<ReturnType<typeof outcome>>>) {
        expect(r.ok).toBe(false);
        expect((r as { error: unknown }).error).toBeInstanceOf(PeerExitedError);
        expect((r as { error: unknown }).error).toMatchObject({ transport: 'helper', pid: FAR_PID, exitCode: 3 });
      }
      // The connection is broken, not closed: a later request learns how the peer ended.
      const later = await outcome(pair.conn.call('echo', 1));
      expect((later as { error: unknown }).error).toMatchObject({ name: 'PeerExitedError', exitCode: 3 });
    } finally {
      await done(pair);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a batch that fails part-way while the queue is full still gives back what arrived, and fails with its own error', async () => {
    const pair = smallQueuePair();
    try {
      const batch = outcome(pair.conn.dupFileDescriptors(new Array<number>(300).fill(source)));
      const m1 = await pair.fake.receive();
      const m2 = await pair.fake.receive();
      closeFds([...m1.fds, ...m2.fds]);
      const accepted = await fill(pair.conn);
      const given = Array.from({ length: 253 }, (_, i) => 500 + i);
      await pair.fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(m1.data, [0]).id, given));
      await pair.fake.send(encodeJson(FrameType.ERROR, decodeFrame(m2.data, [0]).id, { name: 'Error', message: 'no room', code: 'E_ROOM' }));
      // The RELEASE goes out past the limit, behind the accepted calls.
      const frames: Frame[] = [];
      for (let i = 0; i <= accepted.length; i++) frames.push(await nextFrame(pair.fake));
      expect(frames.slice(0, -1).every((f) => f.type === FrameType.CALL)).toBe(true);
      const release = frames[frames.length - 1] as Frame;
      expect(release).toMatchObject({ type: FrameType.RELEASE, fds: given });
      await pair.fake.send(encodeJson(FrameType.RESULT, release.id, {}));
      const r = await batch;
      expect((r as { error: unknown }).error).toBeInstanceOf(RemoteError);
      expect((r as { error: unknown }).error).toMatchObject({ remote: { code: 'E_ROOM' } });
    } finally {
      await done(pair);
    }
  });
});

describe('dupFileDescriptorSync against a command side on another thread', () => {
  type Step = { reply: Buffer; fds?: number; late?: boolean; stray?: boolean; thenHangUp?: boolean } | { hangUp: true };

  /**
   * A connection whose command's side is a worker thread playing `steps`,
   * so that this thread can block in dupFileDescriptorSync. `attach`: the
   * fd the worker sends copies of with a reply.
   */
  function answeredBy(steps: Step[], attach = -1): Pair & { finished: Promise<{ seen?: number[]; released?: number[]; error?: string }>; worker: Worker } {
    const [c, f] = rawSocketPair('seqpacket');
    const worker = new Worker(join(packageRoot, 'test', 'fixtures', 'frame-answerer-worker.js'), {
      workerData: {
        fd: f,
        attach,
        steps: steps.map((s) =>
          'hangUp' in s
            ? s
            : { reply: new Uint8Array(s.reply), fds: s.fds ?? 0, late: s.late === true, stray: s.stray === true, thenHangUp: s.thenHangUp === true },
        ),
      },
    });
    const finished = new Promise<{ seen?: number[]; released?: number[]; error?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const conn = new SocketConnection(
      new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }),
      'helper',
      { pid: FAR_PID, threadId: 0 },
      async () => ({ transport: 'helper', pid: FAR_PID, exitCode: 3, signal: null }),
    );
    // The fake of a Pair is played by the worker: `done` must not close anything of it.
    return { conn, fake: { close: () => undefined } as unknown as UnixSocket, finished, worker };
  }

  /** What dupFileDescriptorSync threw (or returned). */
  function syncOutcome(conn: SocketConnection): unknown {
    try {
      return conn.dupFileDescriptorSync(source, { timeoutMs: 30_000 });
    } catch (err) {
      return err;
    }
  }

  test('a DUP_OK returns its number; an ERROR throws the typed error and the connection goes on', async () => {
    const before = openFdTable();
    const pair = answeredBy([
      { reply: encodeFdList(FrameType.DUP_OK, 0, [61]) },
      { reply: encodeJson(FrameType.ERROR, 0, { name: 'SystemError', message: 'dup: too many open files', code: 'EMFILE', syscall: 'dup' }) },
      { reply: encodeJson(FrameType.ERROR, 0, { name: 'QuotaExceededError', message: 'quota fds: 10 held', code: 'ERR_FDBRIDGE_QUOTA' }) },
      { reply: encodeJson(FrameType.ERROR, 0, { name: 'Error', message: 'no', code: 'E_NO' }) },
    ]);
    try {
      expect(syncOutcome(pair.conn)).toBe(61);
      const sys = syncOutcome(pair.conn);
      expect(sys).toBeInstanceOf(SystemError);
      expect(sys).toMatchObject({ code: 'EMFILE' });
      const quota = syncOutcome(pair.conn);
      expect(quota).toBeInstanceOf(QuotaExceededError);
      expect(quota).toMatchObject({ quota: 'fds' });
      const remote = syncOutcome(pair.conn);
      expect(remote).toBeInstanceOf(RemoteError);
      expect(remote).toMatchObject({ method: 'dupFileDescriptorSync', remote: { code: 'E_NO' } });
      await expect(pair.conn.call('echo', 1)).resolves.toBe('ok');
      expect(pair.conn.stats.protocolErrors).toBe(0);
    } finally {
      await pair.conn.close();
    }
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CALL, FrameType.CLOSE] });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('no answer within timeoutMs: TimeoutError; the duplicate answered late is released, and the connection goes on', async () => {
    const pair = answeredBy([{ reply: encodeFdList(FrameType.DUP_OK, 0, [81]), late: true }, { reply: encodeFdList(FrameType.DUP_OK, 0, [82]) }]);
    try {
      // The worker answers only once told, after this thread stopped waiting.
      const err = (() => {
        try {
          return pair.conn.dupFileDescriptorSync(source, { timeoutMs: 20 });
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(TimeoutError);
      // Which call, which peer, how long it waited, and what becomes of a late answer.
      expect(err).toMatchObject({
        code: 'ERR_FDBRIDGE_TIMEOUT',
        message: `dupFileDescriptorSync(${source}) failed: the helper (pid ${FAR_PID}) did not answer within 20 ms; a duplicate it makes later is released when its reply comes`,
      });
      pair.worker.postMessage('answer now');
      expect(syncOutcome(pair.conn)).toBe(82);
      await expect(pair.conn.call('echo', 1)).resolves.toBe('ok');
    } finally {
      await pair.conn.close();
    }
    const result = await pair.finished;
    // The late DUP_OK's number was given back in a RELEASE; nothing else was.
    expect(result.released).toEqual([81]);
    // The RELEASE leaves when the late reply is read, before or after the call.
    expect(result.seen?.slice(0, 2)).toEqual([FrameType.DUP, FrameType.DUP]);
    expect(result.seen?.slice(2, 4).sort()).toEqual([FrameType.CALL, FrameType.RELEASE].sort());
    expect(result.seen?.[4]).toBe(FrameType.CLOSE);
  });

  test('duplications made before it, folded ones included, reach the command before it and get their own answers', async () => {
    const pair = answeredBy([
      { reply: encodeFdList(FrameType.DUP_OK, 0, [71]) },
      { reply: encodeFdList(FrameType.DUP_OK, 0, [72, 73]) },
      { reply: encodeFdList(FrameType.DUP_OK, 0, [74]) },
    ]);
    try {
      const first = pair.conn.dupFileDescriptor(source);
      const folded = [pair.conn.dupFileDescriptor(source), pair.conn.dupFileDescriptor(source)];
      expect(syncOutcome(pair.conn)).toBe(74);
      expect(await first).toBe(71);
      expect(await Promise.all(folded)).toEqual([72, 73]);
    } finally {
      await pair.conn.close();
    }
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CLOSE] });
  });

  test.each([
    ['a RESULT', encodeJson(FrameType.RESULT, 0, { value: 1 }), true],
    ['a DUP_OK listing 2 fds', encodeFdList(FrameType.DUP_OK, 0, [1, 2]), true],
    ['a malformed DUP_OK', Buffer.concat([encodeFdList(FrameType.DUP_OK, 0, [1]), Buffer.from([0])]), false],
  ])('%s is a ProtocolError that breaks the connection', async (_name, reply, wellFormed) => {
    const before = openFdTable();
    const pair = answeredBy([{ reply }]);
    try {
      const err = syncOutcome(pair.conn);
      expect(err).toBeInstanceOf(ProtocolError);
      expect(pair.conn.stats).toMatchObject({ protocolErrors: 1, unexpectedFds: 0 });
      const later = pair.conn.call('echo', 1);
      await expect(later).rejects.toBeInstanceOf(ProtocolError);
      if (wellFormed) {
        // The call learns what was wrong with its reply; later requests, what the peer did to the connection.
        expect((err as Error).message).toBe('dupFileDescriptorSync: the reply does not list 1 fd');
        await expect(later).rejects.toThrow('the helper answered a duplication with a wrong reply');
      } else {
        // A frame that does not decode: the decoder's error, for the call and the connection alike.
        await expect(later).rejects.toBe(err);
      }
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(ProtocolError);
    } finally {
      await pair.conn.close();
    }
    // The client hung up after the DUP; nothing else was sent.
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP] });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a reply with fds attached (a kernel without SO_PASSRIGHTS): ProtocolError, every fd closed and counted', async () => {
    const before = openFdTable();
    const attach = makeMemfd('attached');
    const restore = simulateKernelWithoutPassRights();
    let pair: ReturnType<typeof answeredBy>;
    try {
      pair = answeredBy([{ reply: encodeFdList(FrameType.DUP_OK, 0, [5]), fds: 4 }], attach);
    } finally {
      restore();
    }
    try {
      expect(pair.conn.stats.refusesFds).toBe(false);
      const err = syncOutcome(pair.conn);
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toBe('the helper sent 4 fd(s) with a reply; its side never sends fds');
      expect(pair.conn.stats).toEqual({ unexpectedFds: 4, protocolErrors: 1, refusesFds: false });
      // The connection failed with that error: later requests get it too.
      await expect(pair.conn.call('echo', 1)).rejects.toBe(err);
    } finally {
      await pair.conn.close();
      closeFds([attach]);
    }
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP] });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a peer that hangs up unanswered: PeerExitedError naming the call, and later requests learn how it ended', async () => {
    const pair = answeredBy([{ hangUp: true }]);
    try {
      const err = syncOutcome(pair.conn);
      expect(err).toBeInstanceOf(PeerExitedError);
      // How it ended is not known yet when the call returns: the call and the peer are named, nothing more.
      expect(err).toMatchObject({
        transport: 'helper',
        pid: FAR_PID,
        exitCode: null,
        signal: null,
        message: `dupFileDescriptorSync failed: the helper daemon (pid ${FAR_PID}) closed the connection before replying`,
      });
      await expect(pair.conn.call('echo', 1)).rejects.toMatchObject({ name: 'PeerExitedError', exitCode: 3 });
      expect(pair.conn.closed).toBe(false);
    } finally {
      await pair.conn.close();
    }
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP] });
  });

  test('a peer that breaks the protocol and then hangs up while it waits: the call fails with the violation, as every later request does, not as a peer exit', async () => {
    const before = openFdTable();
    // A RESULT with an id no request has, then the end of file, both read while this thread waits.
    const pair = answeredBy([{ reply: encodeJson(FrameType.RESULT, 999, { value: 1 }), stray: true, thenHangUp: true }]);
    try {
      const err = syncOutcome(pair.conn);
      expect(err).toBeInstanceOf(ProtocolError);
      expect(pair.conn.stats).toMatchObject({ protocolErrors: 1, unexpectedFds: 0 });
      // The connection died of that violation: later requests get the same error, not a peer exit.
      await expect(pair.conn.call('echo', 1)).rejects.toBe(err);
      expect(() => pair.conn.dupFileDescriptorSync(source)).toThrow(err as Error);
    } finally {
      await pair.conn.close();
    }
    expect(await pair.finished).toMatchObject({ seen: [FrameType.DUP] });
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('a peer already gone when the request is sent (EPIPE): PeerExitedError at once, then how it ended', async () => {
    const pair = fakePair();
    try {
      pair.fake.close();
      // No turn of the event loop: the connection has not read the end of file yet.
      let thrown: unknown;
      try {
        pair.conn.dupFileDescriptorSync(source);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(PeerExitedError);
      // Nothing is known of how it ended yet, but the call and the peer are named.
      expect(thrown).toMatchObject({
        transport: 'helper',
        pid: FAR_PID,
        exitCode: null,
        signal: null,
        message: `dupFileDescriptorSync failed: the helper daemon (pid ${FAR_PID}) closed the connection before replying`,
      });
      await expect(pair.conn.call('echo', 1)).rejects.toMatchObject({ name: 'PeerExitedError', exitCode: 3 });
    } finally {
      await done(pair);
    }
  });

  test('a closed fd: EBADF at once, not taken for a peer gone; nothing is sent and the connection goes on', async () => {
    const pair = fakePair();
    try {
      const gone = makeMemfd('gone-sync');
      closeFds([gone]);
      expect(() => pair.conn.dupFileDescriptorSync(gone)).toThrow(expect.objectContaining({ name: 'SystemError', code: 'EBADF' }));
      // The next frame is the call: nothing went out for the closed fd.
      const call = pair.conn.call('echo', 2);
      const f = await nextFrame(pair.fake);
      expect(f.type).toBe(FrameType.CALL);
      await pair.fake.send(encodeJson(FrameType.RESULT, f.id, { value: 2 }));
      await expect(call).resolves.toBe(2);
    } finally {
      await done(pair);
    }
  });

  test('a duplication sent alone to a peer already gone (EPIPE): a promise that rejects with how the peer ended, nothing thrown', async () => {
    const pair = fakePair();
    try {
      pair.fake.close();
      // No turn of the event loop: the end of file is unread, so the send itself meets EPIPE.
      let dup: Promise<number> | undefined;
      expect(() => {
        dup = pair.conn.dupFileDescriptor(source);
      }).not.toThrow();
      expect(dup).toBeInstanceOf(Promise);
      await expect(dup).rejects.toMatchObject({ name: 'PeerExitedError', transport: 'helper', pid: FAR_PID, exitCode: 3 });
    } finally {
      await done(pair);
    }
  });
});

describe('a daemon ending the connection for a quota', () => {
  /** How a request settled: the error's class and quota, or 'ok'. */
  const settled = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'ok',
      (e: unknown) => `${(e as Error).constructor.name}${e instanceof QuotaExceededError ? ` ${e.quota}` : ''}`,
    );

  test('generated: every request, made before its REFUSED is read (the send meets EPIPE first) or after, fails with that quota, however long finding out how the peer ended takes', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<QuotaName>('idleTimeout', 'helloTimeout', 'queuedBytes'),
        fc.array(fc.constantFrom('call' as const, 'dup' as const, 'dups' as const), { minLength: 1, maxLength: 4 }),
        fc.array(fc.constantFrom('call' as const, 'dup' as const, 'dups' as const), { maxLength: 4 }),
        fc.boolean(),
        async (quota, early, late, closes) => {
          // The probe of the peer's end takes as long as the test says: it is still going when the REFUSED is read.
          let probed!: () => void;
          const probe = new Promise<PeerExit>((resolve) => {
            probed = () => resolve({ transport: 'helper', pid: FAR_PID, exitCode: null, signal: null, detail: 'closed the connection' });
          });
          const pair = fakePair({ probe: () => probe });
          const request = (kind: 'call' | 'dup' | 'dups'): Promise<string> =>
            settled(kind === 'call' ? pair.conn.call('echo', 1) : kind === 'dup' ? pair.conn.dupFileDescriptor(source) : pair.conn.dupFileDescriptors([source, source]));
          try {
            // The daemon's cut: a REFUSED naming the quota, then it reads no more (and may close).
            pair.fake.write(encodeJson(FrameType.REFUSED, 0, { message: `quota ${quota}: cut off` }));
            pair.fake.shutdown('read');
            if (closes) pair.fake.close();
            // Made before the client has read it: their sends fail (EPIPE), and how the peer ended is probed.
            const first = early.map(request);
            await turns();
            // Made once the REFUSED was read, while the probe still runs.
            const second = late.map(request);
            await turns();
            probed();
            const outcomes = await Promise.all([...first, ...second]);
            expect(outcomes).toEqual(outcomes.map(() => `QuotaExceededError ${quota}`));
            // And made after everything.
            expect(await request('call')).toBe(`QuotaExceededError ${quota}`);
          } finally {
            probed();
            await done(pair);
          }
        },
      ),
      { numRuns: 40 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});
