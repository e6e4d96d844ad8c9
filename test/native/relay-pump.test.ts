/**
 * The remote transport's channel pump (native/relay_pump.h) through its
 * TypeScript side (Channel, RelayStream): two channels joined by two
 * socketpairs, as the client and the server are through a via, with pipes
 * as the relayed streams' local ends. Bytes arrive whole and in order with
 * their end of file, a reader that stops holds back its own stream only, a
 * reader that goes away stops the writer's side, a peer that breaks the
 * protocol ends the channel with a ProtocolError, and close() closes every
 * fd the pump held.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';

import fc from 'fast-check';

import { killIfSpawned } from '../../src/child-process';
import { ProtocolError } from '../../src/errors';
import { formatFdTableDiff, openFdTable } from '../../src/fd';
import {
  Channel,
  CONGESTED_BYTES,
  HEADER_BYTES,
  MAX_DATA_BYTES,
  MAX_FRAME_BYTES,
  RelayStream,
  RemoteFrame,
  STREAM_WINDOW,
  type ChannelHandler,
} from '../../src/transports/remote-channel';
import { native } from './binding';
import { expectFdTable, settledFdTableDiff, withScope, type Scope } from './helpers';

/** A new pipe's capacity (pipe(7)). */
const PIPE_BYTES = 65536;

interface Side {
  channel: Channel;
  frames: Array<{ type: number; id: number; payload: Buffer }>;
  ended: Promise<Error | null>;
}

function side(inFd: number, outFd: number): Side {
  const frames: Side['frames'] = [];
  let end!: (reason: Error | null) => void;
  const ended = new Promise<Error | null>((r) => (end = r));
  const handler: ChannelHandler = {
    onFrame: (type, id, payload) => frames.push({ type, id, payload }),
    onEnd: (reason) => end(reason),
  };
  return { channel: new Channel(inFd, outFd, handler), frames, ended };
}

/** Two channels joined as a client and a server are: a's output is b's input and back. */
function joined(scope: Scope): { a: Side; b: Side } {
  const [aOut, bIn] = native.socketpair(native.constants.SOCK_STREAM);
  const [bOut, aIn] = native.socketpair(native.constants.SOCK_STREAM);
  const a = side(aIn, aOut);
  const b = side(bIn, bOut);
  scope.add(a.channel);
  scope.add(b.channel);
  return { a, b };
}

/** A pipe whose one end a channel pumps; the other end is the test's, on the event loop. */
function pumpedPipe(scope: Scope, channel: Channel, id: number, way: 'source' | 'sink'): { stream: RelayStream; end: Socket } {
  const [r, w] = native.pipe();
  const pumped = way === 'source' ? { fd: r, read: true, write: false, socket: false } : { fd: w, read: false, write: true, socket: false };
  const mine = way === 'source' ? w : r;
  const end = new Socket({ fd: mine, readable: way === 'sink', writable: way === 'source', allowHalfOpen: true });
  end.on('error', () => undefined);
  scope.add({ close: () => end.destroy() });
  const stream = new RelayStream(id, channel, { pumped }, () => undefined);
  stream.start();
  scope.add({ close: () => stream.destroy() });
  return { stream, end };
}

/** Runs `fn` with a Scope; the open-fd table is the same afterwards. */
async function checked(fn: (scope: Scope) => Promise<void>): Promise<void> {
  const before = openFdTable();
  await withScope(fn);
  expect(formatFdTableDiff(await settledFdTableDiff(before))).toBe('');
}

function readAll(end: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    end.on('data', (c: Buffer) => chunks.push(c));
    end.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

function writeAll(end: Socket, chunks: readonly Buffer[]): Promise<void> {
  return new Promise((resolve) => {
    for (const c of chunks) end.write(c);
    end.end(resolve);
  });
}

test('the pump and remote-channel.ts hold the same wire format', () => {
  expect(native.RelayPump.constants).toEqual({
    HEADER_BYTES,
    DATA: RemoteFrame.DATA,
    CREDIT: RemoteFrame.CREDIT,
    EOF: RemoteFrame.EOF,
    STOP: RemoteFrame.STOP,
    MAX_DATA_BYTES,
    MAX_FRAME_BYTES,
    STREAM_WINDOW,
    CONGESTED_BYTES,
  });
});

test('generated: chunks written into a pumped pipe arrive whole and in order at the pumped pipe on the other side, then end of file', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300_000 }), { maxLength: 12 }), async (arrays) => {
      const before = openFdTable();
      await withScope(async (scope) => {
        const { a, b } = joined(scope);
        const src = pumpedPipe(scope, a.channel, 7, 'source');
        const dst = pumpedPipe(scope, b.channel, 7, 'sink');
        const chunks = arrays.map((u) => Buffer.from(u));
        const got = readAll(dst.end);
        await writeAll(src.end, chunks);
        const want = Buffer.concat(chunks);
        expect((await got).equals(want)).toBe(true);
        // Each half ends on its side once its end of file is through.
        await src.stream.sent();
        await dst.stream.drained();
        expect(src.stream.finished && dst.stream.finished).toBe(true);
      });
      expectFdTable(before);
    }),
    { numRuns: 12 },
  );
});

test('a reader that stops reading holds back its own stream only: the other stream and frames go on, and the stopped one is sent no more than its window', () =>
  checked(async (scope) => {
    const { a, b } = joined(scope);
    const stuck = pumpedPipe(scope, a.channel, 1, 'source');
    // Its reader never reads: the read end is held, not read (the pipe holds 64 KiB).
    const [stuckRead, stuckWrite] = native.pipe();
    scope.own(stuckRead);
    const stuckSink = new RelayStream(1, b.channel, { pumped: { fd: stuckWrite, read: false, write: true, socket: false } }, () => undefined);
    stuckSink.start();
    scope.add({ close: () => stuckSink.destroy() });
    const busy = pumpedPipe(scope, a.channel, 2, 'source');
    const busyOut = pumpedPipe(scope, b.channel, 2, 'sink');
    // More than the window into the stuck stream: its writer blocks, as it would.
    const block = Buffer.alloc(1 << 20, 1);
    for (let i = 0; i < 3 * (STREAM_WINDOW >> 20); i++) stuck.end.write(block);
    const got = readAll(busyOut.end);
    const payload = Buffer.alloc(8 << 20, 2);
    await writeAll(busy.end, [payload]);
    expect((await got).equals(payload)).toBe(true);
    a.channel.sendJson(RemoteFrame.CALL, 99, { method: 'ping', args: [] });
    while (!b.frames.some((f) => f.type === RemoteFrame.CALL && f.id === 99)) await new Promise((r) => setImmediate(r));
    expect(stuck.stream.bytesOut).toBeGreaterThan(0);
    // Unacknowledged bytes are at most the window; acknowledged, what the pipe took.
    expect(stuck.stream.bytesOut).toBeLessThanOrEqual(STREAM_WINDOW + PIPE_BYTES);
  }));

test('a reader that goes away stops the writer\'s side: its outgoing half ends (STOP), and the channel goes on', () =>
  checked(async (scope) => {
    const { a, b } = joined(scope);
    const src = pumpedPipe(scope, a.channel, 3, 'source');
    const dst = pumpedPipe(scope, b.channel, 3, 'sink');
    dst.end.destroy(); // the reader's end closed: the pump's write fails with EPIPE
    const sent = src.stream.sent();
    src.end.write(Buffer.alloc(4096, 3));
    await sent;
    await dst.stream.drained();
    a.channel.sendJson(RemoteFrame.CALL, 5, { method: 'after', args: [] });
    while (!b.frames.some((f) => f.id === 5)) await new Promise((r) => setImmediate(r));
    expect(b.channel.ended).toBe(false);
  }));

/** write(2)'s number on this machine (x86_64, aarch64). */
const WRITE_SYSCALL = process.arch === 'arm64' ? 64 : 1;

/** True while `pid` waits in write(2) (the first field of /proc/PID/syscall). */
function blockedInWrite(pid: number): boolean {
  try {
    return Number(readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0]) === WRITE_SYSCALL;
  } catch {
    // Gone, or running now ('running' has no number).
    return false;
  }
}

test('a STOP for a pumped stream socket fails its writer with EPIPE, one blocked on a full buffer too, and the other way goes on', () =>
  checked(async (scope) => {
    const { a, b } = joined(scope);
    const [mine, pumped] = native.socketpair(native.constants.SOCK_STREAM);
    const stream = new RelayStream(4, a.channel, { pumped: { fd: pumped, read: true, write: true, socket: true } }, () => undefined);
    stream.start();
    scope.add({ close: () => stream.destroy() });
    // A writer blocked in write(2), as a command's writeSync is: past the
    // window and both socket buffers. The kernel fails a write blocked for
    // buffer space with EPIPE once the reading side is shut, without
    // SIGPIPE, so EPIPE is its error message (a write that began after the
    // shutdown would get SIGPIPE: the STOP is sent only once it blocks).
    const writer = spawn('head', ['-c', String(STREAM_WINDOW + (4 << 20)), '/dev/zero'], { stdio: ['ignore', mine, 'pipe'] });
    scope.add({ close: () => void killIfSpawned(writer) });
    let stderr = '';
    writer.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<void>((resolve) => writer.once('close', () => resolve()));
    const sent = stream.sent();
    while (stream.bytesOut < STREAM_WINDOW || !blockedInWrite(writer.pid as number)) await new Promise((r) => setImmediate(r));
    b.channel.send(RemoteFrame.STOP, 4);
    await sent;
    await exit;
    expect(stderr).toMatch(/Broken pipe/);
    // The stream's other half still carries bytes to this end (read only
    // now: a net.Socket makes the shared open file non-blocking).
    const reader = new Socket({ fd: mine, readable: true, writable: false, allowHalfOpen: true });
    scope.add({ close: () => reader.destroy() });
    const got = new Promise<Buffer>((resolve) => reader.once('data', resolve));
    b.channel.send(RemoteFrame.DATA, 4, Buffer.from('still'));
    expect((await got).toString()).toBe('still');
  }));

describe('a peer that breaks the protocol ends the channel with a ProtocolError', () => {
  /** A channel whose peer is the test: raw bytes into its input. */
  function raw(scope: Scope): { s: Side; peer: Socket } {
    const [mine, theirs] = native.socketpair(native.constants.SOCK_STREAM);
    const [out, sink] = native.socketpair(native.constants.SOCK_STREAM);
    const s = side(theirs, out);
    scope.add(s.channel);
    const peer = new Socket({ fd: mine, readable: false, writable: true });
    peer.on('error', () => undefined);
    scope.add({ close: () => peer.destroy() });
    const drain = new Socket({ fd: sink, readable: true, writable: false });
    drain.resume();
    scope.add({ close: () => drain.destroy() });
    return { s, peer };
  }

  function frame(type: number, id: number, payload: Buffer, announced = payload.length): Buffer {
    const h = Buffer.alloc(9);
    h.writeUInt32LE(announced, 0);
    h.writeUInt8(type, 4);
    h.writeUInt32LE(id, 5);
    return Buffer.concat([h, payload]);
  }

  test('a frame announcing more than the largest payload', () =>
    checked(async (scope) => {
      const { s, peer } = raw(scope);
      peer.write(frame(RemoteFrame.CALL, 1, Buffer.alloc(0), 64 * 1024 * 1024 + 1));
      const reason = await s.ended;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(reason?.message).toMatch(/more than 67108864/);
    }));

  test('a CREDIT that is not 4 bytes, for a pumped stream', () =>
    checked(async (scope) => {
      const { s, peer } = raw(scope);
      pumpedPipe(scope, s.channel, 4, 'source');
      peer.write(frame(RemoteFrame.CREDIT, 4, Buffer.alloc(3)));
      const reason = await s.ended;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(reason?.message).toMatch(/CREDIT frame of 3 bytes/);
    }));

  test('a CREDIT giving back more than was sent', () =>
    checked(async (scope) => {
      const { s, peer } = raw(scope);
      pumpedPipe(scope, s.channel, 5, 'source');
      const credit = Buffer.alloc(4);
      credit.writeUInt32LE(1, 0);
      peer.write(frame(RemoteFrame.CREDIT, 5, credit));
      const reason = await s.ended;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(reason?.message).toMatch(/stream 5: the peer gave back more credit than it was sent/);
    }));

  test('DATA past the window a pumped sink granted, while its reader takes nothing', () =>
    checked(async (scope) => {
      const { s, peer } = raw(scope);
      pumpedPipe(scope, s.channel, 6, 'sink');
      const piece = frame(RemoteFrame.DATA, 6, Buffer.alloc(256 * 1024, 6));
      for (let sent = 0; sent <= 2 * STREAM_WINDOW; sent += 256 * 1024) peer.write(piece);
      const reason = await s.ended;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(reason?.message).toMatch(/stream 6: the peer sent past its window/);
    }));

  test('a frame the handler refuses (it throws): the channel ends with that error, nothing more is delivered', () =>
    checked(async (scope) => {
      const [mine, theirs] = native.socketpair(native.constants.SOCK_STREAM);
      const [out, sink] = native.socketpair(native.constants.SOCK_STREAM);
      scope.own(sink);
      let delivered = 0;
      let end!: (r: Error | null) => void;
      const ended = new Promise<Error | null>((r) => (end = r));
      const channel = new Channel(theirs, out, {
        onFrame: () => {
          delivered++;
          throw new ProtocolError('refused');
        },
        onEnd: end,
      });
      scope.add(channel);
      const peer = new Socket({ fd: mine, readable: false, writable: true });
      scope.add({ close: () => peer.destroy() });
      peer.write(Buffer.concat([frame(RemoteFrame.CALL, 1, Buffer.from('{}')), frame(RemoteFrame.CALL, 2, Buffer.from('{}'))]));
      expect((await ended)?.message).toBe('refused');
      expect(delivered).toBe(1);
    }));
});

test('close() closes both channel fds and every pumped stream\'s fd, whatever is in flight', async () => {
    const before = openFdTable();
    await withScope(async (s) => {
        const { a, b } = joined(s);
        const src = pumpedPipe(s, a.channel, 1, 'source');
        pumpedPipe(s, b.channel, 1, 'sink');
        src.end.write(Buffer.alloc(1 << 20, 1));
        await new Promise((r) => setImmediate(r));
        a.channel.close();
        b.channel.close();
        // A closed channel sends nothing and refuses new streams.
        a.channel.sendJson(RemoteFrame.CALL, 1, {});
        const [r, w] = native.pipe();
        s.own(w);
        expect(() => a.channel.pump(new RelayStream(9, a.channel, {}, () => undefined), { fd: r, read: true, write: false, socket: false })).toThrow(/closed/);
      });
    expectFdTable(before);
});
