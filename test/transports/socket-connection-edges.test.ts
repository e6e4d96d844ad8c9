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
import {
  ClosedError,
  makeMemfd,
  openFdTable,
  PeerExitedError,
  PROBE_COMMAND,
  ProtocolError,
  RemoteError,
  SystemError,
  TimeoutError,
  UnknownCommandError,
  UnsupportedError,
} from '../../src';
import type { CommandLocation } from '../../src/connection';
import type { PeerExit } from '../../src/errors';
import { closeFds, sameFile } from '../../src/fd';
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
    { pid: FAR_PID, threadId: 0 },
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

  test('CLOSED ends the wait and leaves no grace timer behind', async () => {
    fakeTimeouts();
    try {
      const pair = fakePair();
      try {
        const closing = pair.conn.close();
        expect((await nextFrame(pair.fake)).type).toBe(FrameType.CLOSE);
        expect(jest.getTimerCount()).toBe(1);
        await pair.fake.send(encodeEmpty(FrameType.CLOSED, 0));
        await closing;
        expect(jest.getTimerCount()).toBe(0);
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
        closeFds(pins);
      },
      peerEnded() {
        d.ended++;
      },
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
