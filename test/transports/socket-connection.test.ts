/**
 * What a caller relies on from a socket connection, with the command's side
 * played by the test over a socketpair (so each request and reply is seen
 * and timed by the test, not by chance): the handshake's typed timeout,
 * close()'s CLOSE/CLOSED exchange and its hook, folding of concurrent
 * duplications into frames of at most 253 fds, the RELEASE of a batch that
 * failed part-way, and argument checks. The grace close() gives a silent
 * peer is checked with fake timers in socket-connection-edges.test.ts.
 */
import { ClosedError, FdBridgeError, makeMemfd, openFdTable, PeerExitedError, PROBE_COMMAND, RemoteError, TimeoutError, UnixServer, connect, transportNames } from '../../src';
import type { PeerExit } from '../../src/errors';
import type { FdTable } from '../../src/fd';
import { closeFd, closeFds, dupFd } from '../../src/fd';
import { decodeFrame, encodeEmpty, encodeFdList, encodeJson, FRAME_SOCKET_OPTIONS, FrameType, type Frame } from '../../src/protocol';
import { rawSocketPair } from '../../src/testing';
import { UnixSocket } from '../../src/socket';
import { handshake, SocketConnection } from '../../src/transports/socket-connection';
import type { CommandLocation } from '../../src/connection';
import { fdTableSettles } from '../util/processes';

/** A SocketConnection whose command's side (`fake`) the test plays. */
function fakePair(onCommandClosed?: (l: CommandLocation) => void | Promise<void>): { conn: SocketConnection; fake: UnixSocket } {
  const [c, f] = rawSocketPair('seqpacket');
  const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
  const conn = new SocketConnection(
    new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }),
    'helper',
    { pid: process.pid, threadId: 0 },
    async () => ({ transport: 'helper', pid: process.pid, exitCode: null, signal: null }),
    onCommandClosed,
  );
  return { conn, fake };
}

/** The next frame the client sent, decoded; the fds that came with it are closed here. */
async function nextFrame(fake: UnixSocket): Promise<Frame> {
  const m = await fake.receive();
  try {
    return decodeFrame(m.data, m.fds);
  } finally {
    closeFds(m.fds);
  }
}

/** Lets queued callbacks and I/O run a few times. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

// Open for the whole file: part of every test's fd-table baseline.
let source: number;
beforeAll(() => {
  source = makeMemfd('socket-connection');
});
afterAll(() => {
  closeFds([source]);
});

describe('connect', () => {
  test('a command side that never answers HELLO fails the handshake with ERR_FDBRIDGE_TIMEOUT after timeoutMs', async () => {
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    const fake = new UnixSocket(f, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
    try {
      // The fake reads HELLO and stays silent: only the timeout can end this.
      const shaking = handshake(client, PROBE_COMMAND, 50, () => 'the silent fake').catch((e: unknown) => e);
      const hello = await nextFrame(fake);
      expect(hello.type).toBe(FrameType.HELLO);
      const err = await shaking;
      expect(err).toBeInstanceOf(TimeoutError);
      expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_TIMEOUT', message: 'connect: the silent fake did not answer within 50 ms (options.timeoutMs)' });
    } finally {
      client.close();
      fake.close();
    }
  });

  test("connect()'s timeoutMs reaches the helper transport's handshake", async () => {
    const name = `fdbridge-test-${process.pid}-silent`;
    const server = UnixServer.listen({ abstract: name });
    const accepted: UnixSocket[] = [];
    server.onConnection((_err, socket) => {
      if (socket) accepted.push(socket);
    });
    try {
      const err = await connect('helper', { command: PROBE_COMMAND, socketPath: `@${name}`, timeoutMs: 100 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as FdBridgeError).code).toBe('ERR_FDBRIDGE_TIMEOUT');
      expect((err as Error).message).toMatch(/did not answer within 100 ms/);
    } finally {
      for (const s of accepted) s.close();
      server.close();
    }
  });

  test.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '100'])(
    'timeoutMs %p is refused with a RangeError on every transport, before anything starts',
    async (timeoutMs) => {
      for (const transport of transportNames()) {
        const err = await connect(transport, { command: PROBE_COMMAND, timeoutMs: timeoutMs as number }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RangeError);
        expect((err as Error).message).toMatch(/options\.timeoutMs must be an integer from 1 to 2147483647/);
      }
    },
  );
});

describe('close()', () => {
  test('sends CLOSE, runs onCommandClosed only once CLOSED arrived, then hangs up', async () => {
    const seen: string[] = [];
    const { conn, fake } = fakePair((location) => {
      seen.push(`hook ${location.pid}`);
    });
    try {
      expect(conn.closed).toBe(false);
      const closing = conn.close().then(() => seen.push('closed'));
      expect(conn.closed).toBe(true);
      expect((await nextFrame(fake)).type).toBe(FrameType.CLOSE);
      await turns();
      // The command's side has not said CLOSED: the hook must wait for it.
      expect(seen).toEqual([]);
      await fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await closing;
      expect(seen).toEqual([`hook ${process.pid}`, 'closed']);
      // And then the client hung up: the fake reads end of file.
      await expect(fake.receive()).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_EOF' });
      // Idempotent: the same promise, no second CLOSE.
      await conn.close();
      expect(seen).toEqual([`hook ${process.pid}`, 'closed']);
    } finally {
      fake.close();
    }
  });

  test('a peer that hangs up instead of answering CLOSED: close() resolves, the hook runs once', async () => {
    let hooked = 0;
    const { conn, fake } = fakePair(() => {
      hooked++;
    });
    const closing = conn.close();
    expect((await nextFrame(fake)).type).toBe(FrameType.CLOSE);
    fake.close();
    await closing;
    expect(hooked).toBe(1);
  });

  test('Symbol.asyncDispose (what `await using` calls) closes the connection', async () => {
    const { conn, fake } = fakePair();
    try {
      const disposing = conn[Symbol.asyncDispose]();
      expect(conn.closed).toBe(true);
      expect((await nextFrame(fake)).type).toBe(FrameType.CLOSE);
      await fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await disposing;
      expect(conn.close()).toBe(conn.close());
    } finally {
      fake.close();
    }
  });

  describe('requests made after the peer hung up, while the connection finds out how it ended', () => {
    /** A connection whose peer has hung up and whose probe answers only when the test says. */
    async function hungUp(): Promise<{ conn: SocketConnection; exited: (exit: PeerExit) => void; before: FdTable }> {
      const before = openFdTable();
      const [c, f] = rawSocketPair('seqpacket');
      let exited!: (exit: PeerExit) => void;
      const probed = new Promise<PeerExit>((resolve) => (exited = resolve));
      let probing!: () => void;
      const asked = new Promise<void>((resolve) => (probing = resolve));
      const probe = (): Promise<PeerExit> => {
        probing();
        return probed;
      };
      const conn = new SocketConnection(new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), 'helper', { pid: process.pid, threadId: 0 }, probe);
      closeFd(f);
      // The connection read the end of file and asks how the peer ended.
      await asked;
      return { conn, exited, before };
    }

    /** Every request kind, made now, with where each settled. */
    function requests(conn: SocketConnection): Array<Promise<unknown>> {
      const closedFd = dupFd(source);
      closeFd(closedFd);
      return [
        conn.dupFileDescriptor(source),
        conn.dupFileDescriptors([source, source]),
        // A closed number: the connection's death decides, not the EBADF.
        conn.dupFileDescriptors([closedFd]),
        conn.call('echo', 1),
      ].map((p) => p.then(() => 'resolved', (e: unknown) => e));
    }

    test('close() settles them with ClosedError before it resolves, even though the probe never answered', async () => {
      const { conn, exited, before } = await hungUp();
      const outcomes = requests(conn);
      const settled: unknown[] = [];
      for (const o of outcomes) void o.then((v) => settled.push(v));
      await turns();
      expect(settled).toEqual([]); // waiting for how the peer ended
      await conn.close();
      await turns(1); // the callbacks above run after the rejections
      expect(settled).toHaveLength(outcomes.length);
      const errors = await Promise.all(outcomes); // in the order they were made
      for (const e of errors) expect(e).toBeInstanceOf(ClosedError);
      expect(errors.map((e) => (e as Error).message)).toEqual([
        'dupFileDescriptor failed: the helper connection was closed',
        'dupFileDescriptors failed: the helper connection was closed',
        'dupFileDescriptors failed: the helper connection was closed',
        'echo() failed: the helper connection was closed',
      ]);
      exited({ transport: 'helper', pid: 4242, exitCode: null, signal: 'SIGKILL' });
      await turns();
      expect(await fdTableSettles(process.pid, before)).toBe('');
    });

    test('without close(), they fail with PeerExitedError saying how the peer ended', async () => {
      const { conn, exited, before } = await hungUp();
      const outcomes = requests(conn);
      exited({ transport: 'helper', pid: 4242, exitCode: null, signal: 'SIGKILL' });
      for (const e of await Promise.all(outcomes)) {
        expect(e).toBeInstanceOf(PeerExitedError);
        expect(e).toMatchObject({ pid: 4242, signal: 'SIGKILL' });
      }
      await conn.close();
      expect(await fdTableSettles(process.pid, before)).toBe('');
    });
  });

  test('pending calls and duplications reject with ClosedError; new ones too', async () => {
    const { conn, fake } = fakePair();
    try {
      const call = conn.call('hang').catch((e: unknown) => e);
      const dup = conn.dupFileDescriptor(source).catch((e: unknown) => e);
      expect((await nextFrame(fake)).type).toBe(FrameType.CALL);
      expect((await nextFrame(fake)).type).toBe(FrameType.DUP);
      const closing = conn.close();
      expect(await call).toBeInstanceOf(ClosedError);
      expect((await call as Error).message).toBe('hang() failed: the helper connection was closed');
      expect(await dup).toBeInstanceOf(ClosedError);
      await expect(conn.call('echo', 1)).rejects.toThrow(new ClosedError('echo() failed: the helper connection is closed'));
      await expect(conn.dupFileDescriptor(source)).rejects.toThrow(new ClosedError('dupFileDescriptor failed: the helper connection is closed'));
      await expect(conn.dupFileDescriptors([source])).rejects.toThrow(new ClosedError('dupFileDescriptors failed: the helper connection is closed'));
      expect((await nextFrame(fake)).type).toBe(FrameType.CLOSE);
      await fake.send(encodeEmpty(FrameType.CLOSED, 0));
      await closing;
    } finally {
      fake.close();
    }
  });
});

describe('calls', () => {
  test("a method's error comes back as RemoteError naming the method, and the connection goes on", async () => {
    const { conn, fake } = fakePair();
    try {
      const failing = conn.call('explode', 1).catch((e: unknown) => e);
      const f = await nextFrame(fake);
      expect(f).toMatchObject({ type: FrameType.CALL, method: 'explode', args: [1] });
      await fake.send(encodeJson(FrameType.ERROR, f.id, { name: 'RangeError', message: 'too big', code: 'E_BIG' }));
      const err = await failing;
      expect(err).toBeInstanceOf(RemoteError);
      expect(err).toMatchObject({ method: 'explode', remote: { name: 'RangeError', message: 'too big', code: 'E_BIG' } });
      const next = conn.call('echo', 2);
      const g = await nextFrame(fake);
      await fake.send(encodeJson(FrameType.RESULT, g.id, { value: 2 }));
      await expect(next).resolves.toBe(2);
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });

  test('close() rejects a call whose command method never settles (direct transport: no socket to fail it)', async () => {
    const conn = await connect('direct', { command: PROBE_COMMAND });
    const hanging = conn.call('hang').catch((e: unknown) => e);
    await turns();
    await conn.close();
    const err = await hanging;
    expect(err).toBeInstanceOf(ClosedError);
    expect((err as Error).message).toBe('hang() failed: the direct connection was closed');
  });
});

describe('arguments', () => {
  test('call() needs a non-empty method name; fds must be non-negative integers', async () => {
    const { conn, fake } = fakePair();
    try {
      for (const method of ['', 5, undefined, null]) {
        await expect(conn.call(method as string)).rejects.toThrow(new TypeError('call: method must be a non-empty string'));
      }
      for (const fd of [-1, 1.5, '3', null, NaN]) {
        expect(() => conn.dupFileDescriptor(fd as number)).toThrow(new TypeError(`fd must be a non-negative integer, not ${String(fd)}`));
        expect(() => conn.dupFileDescriptors([source, fd as number])).toThrow(new TypeError(`fds[1] must be a non-negative integer, not ${String(fd)}`));
      }
      expect(() => conn.dupFileDescriptors(source as unknown as number[])).toThrow(new TypeError('dupFileDescriptors takes an array of fds'));
      await expect(conn.dupFileDescriptors([])).resolves.toEqual([]);
      // None of that sent anything: the next frame is the CLOSE.
      const closing = conn.close();
      expect((await nextFrame(fake)).type).toBe(FrameType.CLOSE);
      fake.close();
      await closing;
    } finally {
      fake.close();
    }
  });

  test("the proxy calls by property name and is not a thenable", async () => {
    const { conn, fake } = fakePair();
    try {
      const p = conn.proxy<{ echo(x: number): number }>();
      expect((p as unknown as { then?: unknown }).then).toBeUndefined();
      expect((p as unknown as Record<symbol, unknown>)[Symbol.iterator]).toBeUndefined();
      const answer = p.echo(7);
      const call = await nextFrame(fake);
      expect(call).toEqual({ type: FrameType.CALL, id: expect.any(Number), method: 'echo', args: [7] });
      await fake.send(encodeJson(FrameType.RESULT, call.id, { value: 8 }));
      await expect(answer).resolves.toBe(8);
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });
});

describe('a peer that hung up', () => {
  test('an empty batch fails like any request, with PeerExitedError: it sends nothing, but the connection is broken, not closed', async () => {
    const { conn, fake } = fakePair();
    try {
      fake.close();
      // The first request after the hang-up may go out before the EOF is read; it fails all the same.
      await expect(conn.call('echo', 1)).rejects.toBeInstanceOf(PeerExitedError);
      await expect(conn.dupFileDescriptors([])).rejects.toBeInstanceOf(PeerExitedError);
      expect(conn.closed).toBe(false);
    } finally {
      await conn.close();
    }
  });
});

describe('duplications on the wire', () => {
  test('254 concurrent duplications behind one in flight fold into frames of 253 and 1, answered in order', async () => {
    const { conn, fake } = fakePair();
    try {
      const first = conn.dupFileDescriptor(source);
      const folded = Array.from({ length: 254 }, () => conn.dupFileDescriptor(source));
      const frames: Array<{ id: number; fds: number }> = [];
      for (let i = 0; i < 3; i++) {
        const m = await fake.receive();
        const f = decodeFrame(m.data, m.fds);
        closeFds(m.fds);
        expect(f.type).toBe(FrameType.DUP);
        frames.push({ id: f.id, fds: m.fds.length });
      }
      expect(frames.map((f) => f.fds)).toEqual([1, 253, 1]);
      // Answer each frame with distinct numbers: every caller gets its own, in call order.
      let next = 1000;
      for (const f of frames) {
        const numbers = Array.from({ length: f.fds }, () => next++);
        await fake.send(encodeFdList(FrameType.DUP_OK, f.id, numbers));
      }
      expect(await first).toBe(1000);
      expect(await Promise.all(folded)).toEqual(Array.from({ length: 254 }, (_, i) => 1001 + i));
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });

  test('a 600-fd batch whose last frame fails releases the 506 that arrived (RELEASE frames of 253) and rejects', async () => {
    const { conn, fake } = fakePair();
    try {
      const batch = conn.dupFileDescriptors(new Array<number>(600).fill(source)).catch((e: unknown) => e);
      const dups: Array<{ id: number; fds: number }> = [];
      for (let i = 0; i < 3; i++) {
        const m = await fake.receive();
        const f = decodeFrame(m.data, m.fds);
        closeFds(m.fds);
        dups.push({ id: f.id, fds: m.fds.length });
      }
      expect(dups.map((d) => d.fds)).toEqual([253, 253, 94]);
      const given = Array.from({ length: 506 }, (_, i) => 2000 + i);
      await fake.send(encodeFdList(FrameType.DUP_OK, dups[0]!.id, given.slice(0, 253)));
      await fake.send(encodeFdList(FrameType.DUP_OK, dups[1]!.id, given.slice(253)));
      await fake.send(encodeJson(FrameType.ERROR, dups[2]!.id, { name: 'Error', message: 'no room', code: 'EMFILE' }));
      const released: number[] = [];
      for (let i = 0; i < 2; i++) {
        const f = await nextFrame(fake);
        expect(f.type).toBe(FrameType.RELEASE);
        const fds = (f as { fds: number[] }).fds;
        expect(fds.length).toBe(253);
        released.push(...fds);
        await fake.send(encodeJson(FrameType.RESULT, f.id, {}));
      }
      expect(released).toEqual(given);
      const err = await batch;
      expect(err).toBeInstanceOf(RemoteError);
      expect((err as RemoteError).remote).toMatchObject({ message: 'no room', code: 'EMFILE' });
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });

  test('fd 0 is an fd like any other; a 300-fd batch comes back in order from its two frames', async () => {
    const { conn, fake } = fakePair();
    try {
      const zero = conn.dupFileDescriptor(0);
      const z = await fake.receive();
      closeFds(z.fds);
      expect(z.fds).toHaveLength(1);
      await fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(z.data, [9]).id, [77]));
      await expect(zero).resolves.toBe(77);

      const batch = conn.dupFileDescriptors(new Array<number>(300).fill(source));
      const frames: Array<{ id: number; n: number }> = [];
      for (let i = 0; i < 2; i++) {
        const m = await fake.receive();
        closeFds(m.fds);
        frames.push({ id: decodeFrame(m.data, [9]).id, n: m.fds.length });
      }
      expect(frames.map((f) => f.n)).toEqual([253, 47]);
      // Answered out of order: the result still follows the request's order.
      await fake.send(encodeFdList(FrameType.DUP_OK, frames[1]!.id, Array.from({ length: 47 }, (_, i) => 600 + i)));
      await fake.send(encodeFdList(FrameType.DUP_OK, frames[0]!.id, Array.from({ length: 253 }, (_, i) => 300 + i)));
      expect(await batch).toEqual([...Array.from({ length: 253 }, (_, i) => 300 + i), ...Array.from({ length: 47 }, (_, i) => 600 + i)]);
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });

  test('exactly 253 fds are one frame, 506 two: no empty frame after a full one', async () => {
    const { conn, fake } = fakePair();
    try {
      for (const total of [253, 506]) {
        const batch = conn.dupFileDescriptors(new Array<number>(total).fill(source));
        for (let sent = 0; sent < total; sent += 253) {
          const m = await fake.receive();
          closeFds(m.fds);
          expect(m.fds).toHaveLength(253);
          await fake.send(encodeFdList(FrameType.DUP_OK, decodeFrame(m.data, [9]).id, new Array<number>(253).fill(5)));
        }
        expect(await batch).toHaveLength(total);
      }
      // Nothing else was sent: the next frame is this call.
      const call = conn.call('echo', 1);
      const f = await nextFrame(fake);
      expect(f.type).toBe(FrameType.CALL);
      await fake.send(encodeJson(FrameType.RESULT, f.id, { value: 1 }));
      await expect(call).resolves.toBe(1);
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });

  test('a batch whose every frame fails releases nothing', async () => {
    const { conn, fake } = fakePair();
    try {
      const batch = conn.dupFileDescriptors([source, source]).catch((e: unknown) => e);
      const m = await fake.receive();
      const f = decodeFrame(m.data, m.fds);
      closeFds(m.fds);
      await fake.send(encodeJson(FrameType.ERROR, f.id, { name: 'Error', message: 'refused' }));
      expect(await batch).toBeInstanceOf(RemoteError);
      // The next frame is whatever comes next (a call), not a RELEASE.
      const call = conn.call('echo', 1);
      expect((await nextFrame(fake)).type).toBe(FrameType.CALL);
      void call.catch(() => undefined);
    } finally {
      const closing = conn.close();
      fake.close();
      await closing;
    }
  });
});
