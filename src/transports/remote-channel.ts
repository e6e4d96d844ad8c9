/**
 * The remote transport's channel: frames over one byte stream (the `via`
 * process's stdin and stdout), carrying calls and their replies and any
 * number of relayed byte streams, multiplexed.
 *
 * A frame is a 9-byte header, `u32 payload length | u8 type | u32 id`
 * (little-endian), then the payload. `id` is a request id (HELLO, CALL,
 * OPEN, RELEASE, CLOSE and their replies) or a stream id (DATA, CREDIT,
 * EOF, STOP).
 *
 * A stream starts with the client's OPEN and the server's reply to it:
 * OPENED once the command's end is made, or ERROR. The server sends the
 * OPENED before any frame of that stream (its pump only starts polling the
 * stream's end when it takes it, and the OPENED is queued in the same
 * turn), and the client starts its end only at the OPENED: neither side's
 * bytes move for a stream the other has not made, so a duplication that
 * fails has written nothing into the caller's fd and read nothing from it.
 * The one exception is a copy ('copy'), whose bytes go client -> server
 * before the reply (the server answers once it holds them all; the client
 * reads them at positions of its own, leaving the file as it was): before
 * its OPENED the server may give credit back for them, or STOP them. Any
 * other stream frame from the server for a stream before its OPENED, or
 * for a stream the client never announced, breaks the protocol
 * (ProtocolError); frames for a stream that ended, or was refused, may be
 * in flight and are dropped.
 *
 * Flow control, per stream and per direction: a sender may have at most
 * STREAM_WINDOW bytes of DATA that the receiver has not yet written to its
 * local fd; the receiver gives credit back (CREDIT) as its writes complete.
 * A consumer that reads slowly (or never) therefore holds back only its own
 * stream: the channel is never blocked by it, and neither are calls nor the
 * other streams. The receiver reads the channel without pause, and what it
 * buffers is bounded by the windows it granted.
 */
import { ClosedError, errnoName, errorJson, isError, ProtocolError, SystemError, type RemoteErrorInfo } from '../errors';
import { closeOwnFd, closeOwnFds, HeldCopies } from '../fd';
import { native, type NativeRelayPump } from '../native';

export const REMOTE_PROTOCOL_VERSION = 1;

export const RemoteFrame = {
  /** client -> server, id 0: JSON { version, command: { name, args? } } */
  HELLO: 1,
  /** server -> client: JSON { pid, threadId } */
  READY: 2,
  /** client -> server: JSON { method, args } */
  CALL: 3,
  /** server -> client: JSON value, or an empty payload for undefined */
  RESULT: 4,
  /** server -> client: JSON RemoteErrorInfo (a HELLO, CALL, OPEN or RELEASE failed) */
  ERROR: 5,
  /** client -> server: JSON OpenRequest; the server makes the command's end of a new stream */
  OPEN: 6,
  /** server -> client: JSON { fd }: the number the command's end has there; before any other frame of the stream (but a copy's CREDIT and STOP) */
  OPENED: 7,
  /** either way, stream id: bytes */
  DATA: 8,
  /** either way, stream id: u32 bytes the sender may send again */
  CREDIT: 9,
  /** either way, stream id: the sender's direction of the stream has ended (end of file) */
  EOF: 10,
  /** either way, stream id: the receiver will take no more (its fd is closed, or a write failed) */
  STOP: 11,
  /** client -> server: JSON fd numbers to close in the command's context (unadopted ones) */
  RELEASE: 12,
  /** client -> server: close the command; the server answers CLOSED once everything of it is closed */
  CLOSE: 13,
  CLOSED: 14,
} as const;
export type RemoteFrameType = (typeof RemoteFrame)[keyof typeof RemoteFrame];

const TYPE_NAMES = new Map<number, string>(Object.entries(RemoteFrame).map(([k, v]) => [v, k]));

/** How the command's end of a stream is made, and which ways bytes go. */
export type StreamMode =
  /** client -> command: the command gets a pipe's read end */
  | 'up'
  /** command -> client: the command gets a pipe's write end */
  | 'down'
  /** both ways: the command gets one end of a STREAM socketpair */
  | 'both'
  /** client -> command, whole, before the reply: the command gets a read-only memfd holding the bytes */
  | 'copy';

export interface OpenRequest {
  stream: number;
  mode: StreamMode;
  /** copy: the file offset the command's fd starts at */
  offset?: number;
  /** What the client's fd is, for messages and the command's diagnostics. */
  kind: string;
}

export const HEADER_BYTES = 9;
/** The largest DATA payload. */
export const MAX_DATA_BYTES = 256 * 1024;
/** The largest payload of any frame (a call's JSON arguments or result). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Bytes a sender may have unacknowledged per stream and direction. */
export const STREAM_WINDOW = 4 * 1024 * 1024;
/** The channel's output backlog past which sources stop reading (Channel.congested; the pump's kCongestedBytes). */
export const CONGESTED_BYTES = 256 * 1024;

export function frameTypeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `type ${type}`;
}

/** A JSON payload; `undefined` is the empty payload. */
export function jsonPayload(value: unknown): Buffer {
  if (value === undefined) return Buffer.alloc(0);
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${typeof value} is not JSON-serializable`);
  return Buffer.from(text);
}

/** Throws the RangeError of a `type` frame whose payload of `length` bytes is past MAX_FRAME_BYTES. */
export function checkFrameLength(type: number, length: number): void {
  if (length > MAX_FRAME_BYTES) throw new RangeError(`a ${frameTypeName(type)} frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
}

export function parseJson(payload: Buffer, what: string): unknown {
  if (payload.length === 0) return undefined;
  try {
    return JSON.parse(payload.toString('utf8')) as unknown;
  } catch (err) {
    throw new ProtocolError(`${what}: its payload is not JSON`, { cause: err });
  }
}

export interface ChannelHandler {
  /** A frame that is not a pumped stream's (see Channel). */
  onFrame(type: number, id: number, payload: Buffer): void;
  /**
   * Once: the input ended (null) or failed (a SystemError, syscall 'read'),
   * the output failed (syscall 'write': the peer takes nothing more), or a
   * frame broke the protocol.
   */
  onEnd(reason: Error | null): void;
}

/** The pump's end event's message when its output failed (native/relay_pump.h kOutputFailed). */
const OUTPUT_FAILED = 'write';

/**
 * The channel's end for a failed read of its input or write of its
 * output: either way nothing more is answered (a peer that stopped taking
 * our frames cannot answer them).
 */
function channelFailure(errno: number, syscall: 'read' | 'write'): SystemError {
  return new SystemError(errno, syscall, `the remote channel's ${syscall === 'read' ? 'input' : 'output'} failed: ${errnoName(errno)}`);
}

/** A pumped stream's half, as native/relay_pump.h numbers them. */
const PUMP_OUT = 1;
const PUMP_IN = 2;

/**
 * Frames on two fds (owned: closed by close()), read and written by the
 * native relay pump on this thread's event loop. Writes are never refused:
 * what the channel may hold is bounded by the stream windows and by the
 * requests the caller makes.
 *
 * The bytes of a stream whose local end is a pipe or a stream socket never
 * reach JavaScript: the pump reads them from the fd into DATA frames, and
 * writes DATA frames into the fd, with the stream's flow control (see
 * RelayStream's `pumped` half). The handler sees every other frame, DATA
 * of the other streams (regular files, read and written on the thread
 * pool) as it arrives, piece by piece, and any other frame's payload whole.
 */
export class Channel {
  readonly #pump: NativeRelayPump;
  readonly #handler: ChannelHandler;
  /** Pumped streams, told when one of their halves ends. */
  readonly #pumped = new Map<number, RelayStream>();
  #ended = false;
  #closed = false;
  /** Whoever waits for the output's backlog to be taken by the kernel. */
  #drainWaiters: Array<() => void> = [];
  /**
   * The pump's closes of its stream sockets, on the background closer: each
   * is a copy of a caller's socket, maybe its last reference (a lingering
   * TCP socket's close waits out the linger time).
   */
  readonly #held = new HeldCopies();

  constructor(inFd: number, outFd: number, handler: ChannelHandler) {
    this.#handler = handler;
    try {
      this.#pump = new native.RelayPump(inFd, outFd, (kind, a, b, payload) => this.#event(kind, a as number, b, payload), this.#held.owner);
    } catch (err) {
      closeOwnFds([inFd, outFd]);
      throw err;
    }
  }

  #event(kind: number, a: number, b: number | string | undefined, payload: Buffer | undefined): void {
    switch (kind) {
      case 0:
        if (this.#ended) return;
        try {
          this.#handler.onFrame(a, b as number, payload as Buffer);
        } catch (err) {
          this.#end(isError(err) ? err : new ProtocolError(String(err)));
        }
        return;
      case 1: {
        const stream = this.#pumped.get(a);
        if (b === PUMP_OUT) stream?.pumpedOutDone();
        else if (b === PUMP_IN) stream?.pumpedInDone();
        return;
      }
      case 2:
        for (const w of this.#drainWaiters.splice(0)) w();
        return;
      case 3:
        this.#end(a === 0 ? null : a === 1 ? new ProtocolError(String(b)) : channelFailure(a, b === OUTPUT_FAILED ? 'write' : 'read'));
        return;
    }
  }

  /**
   * True while more than CONGESTED_BYTES of frames wait for the kernel to
   * take them (the peer, or the via, reads slower than we send): sources
   * then leave their bytes in their own fds, where they gather into larger
   * reads, instead of in this process's memory.
   */
  get congested(): boolean {
    return !this.#ended && !this.#closed && this.#pump.outputOpen && this.#pump.congested;
  }

  /** Runs `fn` once the output's backlog is gone (or at once if there is none). */
  whenDrained(fn: () => void): void {
    if (!this.congested) fn();
    else this.#drainWaiters.push(fn);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Bytes written and not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.#pump.queuedBytes;
  }

  send(type: RemoteFrameType, id: number, payload?: Buffer): void {
    if (this.#closed) return;
    const length = payload?.length ?? 0;
    checkFrameLength(type, length);
    this.#pump.send(type, id, length === 0 ? undefined : payload);
  }

  sendJson(type: RemoteFrameType, id: number, value: unknown): void {
    this.send(type, id, jsonPayload(value));
  }

  /** An ERROR frame for `info`, its message and stack cut to fit one frame (errorJson). */
  sendError(id: number, info: RemoteErrorInfo): void {
    this.send(RemoteFrame.ERROR, id, Buffer.from(errorJson(info, MAX_FRAME_BYTES)));
  }

  sendCredit(stream: number, bytes: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(bytes, 0);
    this.send(RemoteFrame.CREDIT, stream, b);
  }

  /** Ends our output (the peer sees end of file once queued frames are out). */
  endOutput(): void {
    if (!this.#closed) this.#pump.endOutput();
  }

  /** Closes both fds and every pumped stream's fd now; nothing more is read or sent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#pumped.clear();
    this.#drainWaiters = [];
    this.#held.remember(...this.#pump.close());
  }

  /**
   * Resolves once the pump's closes of its stream sockets made so far are
   * done (HeldCopies.settled: or given up on after 5 s).
   */
  closesSettled(): Promise<void> {
    if (!this.#closed) this.#held.remember(...this.#pump.closeTickets());
    return this.#held.settled();
  }

  /** Pumps `stream` through `fd` (owned by the channel from here on, even when this throws). */
  pump(stream: RelayStream, end: PumpedEnd): void {
    if (this.#closed) {
      closeOwnFd(end.fd);
      throw new ClosedError(`stream ${stream.id}: the remote channel is closed`);
    }
    try {
      this.#pump.addStream(stream.id, end.fd, end.read, end.write, end.socket);
    } catch (err) {
      closeOwnFd(end.fd);
      throw err;
    }
    this.#pumped.set(stream.id, stream);
  }

  /** Sends what the pumped stream's fd holds now; true once its end of file went out too. */
  flushPumped(stream: number): boolean {
    return !this.#closed && this.#pump.flush(stream);
  }

  /** Stops pumping `stream` and closes its fd (if the pump has not). */
  unpump(stream: number): void {
    this.#pumped.delete(stream);
    if (!this.#closed) this.#pump.removeStream(stream);
  }

  /** [in, out]: DATA bytes a pumped stream received and sent so far. */
  pumpedBytes(stream: number): [number, number] {
    return (this.#closed ? undefined : this.#pump.streamBytes(stream)) ?? [0, 0];
  }

  #end(reason: Error | null): void {
    if (this.#ended) return;
    this.#ended = true;
    if (!this.#closed) this.#pump.stopInput();
    this.#handler.onEnd(reason);
  }
}

// ---------------------------------------------------------------------------
// relayed streams

/** Where a stream's bytes come from on this side (the local fd, read). */
export interface RelaySource {
  /** Starts (or resumes) delivering chunks. */
  resume(): void;
  pause(): void;
  destroy(): void;
}

/** Where a stream's bytes go on this side (the local fd, written). */
export interface RelaySink {
  /**
   * True when writes complete without waiting for a reader (a regular file,
   * a device): a call's result may then wait for the writes before it.
   */
  readonly prompt?: boolean;
  /** Writes all of `chunk`; `done` once it is written (or failed: then the sink is broken). */
  write(chunk: Buffer, done: (err: Error | null) => void): void;
  /** No more bytes: flush, then signal end of file to the local reader; `done` once that happened. */
  end(done: () => void): void;
  destroy(): void;
}

/**
 * A stream's local end that the channel's native pump reads and writes
 * (a pipe end or a stream socket): `read` its bytes out, `write` the
 * peer's bytes into it. `socket`: the incoming half's end of file is
 * shutdown(SHUT_WR) (the other direction goes on); a pipe's is its close.
 */
export interface PumpedEnd {
  /** Owned by the stream (then by the channel, once it starts). */
  fd: number;
  read: boolean;
  write: boolean;
  socket: boolean;
}

/**
 * One side of one relayed stream: an optional outgoing half (local source ->
 * DATA frames) and an optional incoming half (DATA frames -> local sink),
 * moved in JavaScript, or both halves of a pumped end moved by the
 * channel's native pump (which tells the stream when each ends).
 * The stream is finished, and its local fd closed, once both halves are.
 */
export class RelayStream {
  readonly id: number;
  readonly #channel: Channel;
  #source: RelaySource | undefined;
  #sink: RelaySink | undefined;
  /** A pumped end: its fd is ours until start() hands it to the channel. */
  #pumped: PumpedEnd | undefined;
  #pumping = false;
  /** Outgoing: bytes we may still send before the peer gives credit. */
  #credit = STREAM_WINDOW;
  /** Outgoing: the source is paused until the channel's backlog is gone. */
  #waitingForChannel = false;
  #outDone: boolean;
  #inDone: boolean;
  /** Incoming: written bytes whose credit has not been given back yet. */
  #owed = 0;
  /** Incoming bytes handed to the sink and not yet written. */
  #inFlight = 0;
  #eofReceived = false;
  #finished = false;
  readonly #onFinished: (stream: RelayStream) => void;
  /** Whoever waits for the incoming half to be written out and ended. */
  #drained: Array<() => void> = [];
  /** Whoever waits for the outgoing half to end. */
  #sent: Array<() => void> = [];
  /** Whoever waits for the incoming bytes in flight to be written. */
  #written: Array<() => void> = [];
  #bytesIn = 0;
  #bytesOut = 0;

  constructor(
    id: number,
    channel: Channel,
    halves: { source?: RelaySource; sink?: RelaySink; pumped?: PumpedEnd },
    onFinished: (stream: RelayStream) => void,
  ) {
    this.id = id;
    this.#channel = channel;
    this.#source = halves.source;
    this.#sink = halves.sink;
    this.#pumped = halves.pumped;
    this.#outDone = halves.pumped ? !halves.pumped.read : halves.source === undefined;
    this.#inDone = halves.pumped ? !halves.pumped.write : halves.sink === undefined;
    this.#onFinished = onFinished;
  }

  /** DATA bytes received (written to the local end) so far. */
  get bytesIn(): number {
    return this.#pumping ? this.#channel.pumpedBytes(this.id)[0] : this.#bytesIn;
  }

  /** DATA bytes sent (read from the local end) so far. */
  get bytesOut(): number {
    return this.#pumping ? this.#channel.pumpedBytes(this.id)[1] : this.#bytesOut;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /**
   * Starts reading the local source, and taking the peer's bytes into a
   * pumped end (which goes to the channel's pump), once the peer has made
   * its end: on the client at the stream's OPENED (a copy's source at its
   * OPEN), on the server as it sends the OPENED. Throws (the stream
   * destroyed) if the pump cannot take it.
   */
  start(): void {
    if (this.#pumped !== undefined && !this.#pumping && !this.#finished) {
      const end = this.#pumped;
      this.#pumped = undefined;
      try {
        this.#channel.pump(this, end);
      } catch (err) {
        this.destroy();
        throw err;
      }
      this.#pumping = true;
      return;
    }
    if (!this.#outDone) this.#source?.resume();
  }

  /** The pump sent the outgoing half's end of file (or the peer sent STOP). */
  pumpedOutDone(): void {
    this.#finishOut();
  }

  /** The pump wrote the incoming half through its end of file (or a write failed, STOP sent). */
  pumpedInDone(): void {
    this.#finishIn();
  }

  // outgoing half ----------------------------------------------------------

  /** A chunk the source read: sent as DATA frames; the source pauses when the window is spent. */
  sourceData(chunk: Buffer): void {
    if (this.#outDone) return;
    for (let off = 0; off < chunk.length; off += MAX_DATA_BYTES) {
      this.#channel.send(RelayStream.DATA, this.id, chunk.subarray(off, Math.min(chunk.length, off + MAX_DATA_BYTES)));
    }
    this.#bytesOut += chunk.length;
    this.#credit -= chunk.length;
    if (this.#credit <= 0) this.#source?.pause();
    else if (!this.#waitingForChannel && this.#channel.congested) {
      this.#waitingForChannel = true;
      this.#source?.pause();
      this.#channel.whenDrained(() => {
        this.#waitingForChannel = false;
        if (!this.#outDone && this.#credit > 0) this.#source?.resume();
      });
    }
  }

  /**
   * Sends what the local fd holds right now, as far as the window allows,
   * and its end of file if it has come: the server does this before each
   * call's reply, so that what a command wrote (or closed) during a call
   * reaches the client before the call's result does (unless that stream's
   * consumer is behind by a whole window: the reply never waits for a slow
   * consumer).
   */
  flushSource(): void {
    if (this.#outDone || !this.#pumping) return;
    // The command closed its end during the call: the client's copy closes before the reply too.
    if (this.#channel.flushPumped(this.id)) this.#finishOut();
  }

  /**
   * Resolves once the incoming bytes handed to a prompt sink (a file) so
   * far are written: the client waits for this before it resolves a call.
   */
  written(): Promise<void> {
    if (this.#inFlight === 0 || this.#inDone || !this.#sink?.prompt) return Promise.resolve();
    return new Promise((resolve) => this.#written.push(resolve));
  }

  /** The source reached end of file (or failed: the peer sees end of file either way). */
  sourceEnded(): void {
    if (this.#outDone) return;
    this.#channel.send(RemoteFrame.EOF, this.id);
    this.#finishOut();
  }

  /** CREDIT from the peer. */
  credit(bytes: number): void {
    if (this.#outDone) return;
    const before = this.#credit;
    this.#credit += bytes;
    if (before <= 0 && this.#credit > 0 && !this.#waitingForChannel) this.#source?.resume();
  }

  /** STOP from the peer: it takes no more. */
  stopped(): void {
    this.#finishOut();
  }

  /** Resolves once the outgoing half is done (end of file sent, or the peer stopped it). */
  sent(): Promise<void> {
    if (this.#outDone) return Promise.resolve();
    return new Promise((resolve) => this.#sent.push(resolve));
  }

  #finishOut(): void {
    if (this.#outDone) return;
    this.#outDone = true;
    this.#source?.pause();
    for (const d of this.#sent.splice(0)) d();
    this.#maybeFinish();
  }

  // incoming half ----------------------------------------------------------

  /** DATA from the peer. */
  data(chunk: Buffer): void {
    if (this.#inDone || this.#eofReceived) return; // after a STOP: in flight, dropped
    const sink = this.#sink as RelaySink;
    this.#bytesIn += chunk.length;
    this.#inFlight += chunk.length;
    sink.write(chunk, (err) => {
      this.#inFlight -= chunk.length;
      if (this.#inFlight === 0) for (const w of this.#written.splice(0)) w();
      if (err) {
        this.#stopIn();
        return;
      }
      if (this.#inDone) return;
      this.#owed += chunk.length;
      // Credit goes back in batches: a quarter window, or whatever is owed once nothing is left to write.
      if (this.#owed >= STREAM_WINDOW / 4 || this.#inFlight === 0) {
        this.#channel.sendCredit(this.id, this.#owed);
        this.#owed = 0;
      }
      if (this.#eofReceived && this.#inFlight === 0) this.#endSink();
    });
  }

  /** EOF from the peer: once everything before it is written, the local reader sees end of file. */
  eof(): void {
    if (this.#inDone || this.#eofReceived) return;
    this.#eofReceived = true;
    if (this.#inFlight === 0) this.#endSink();
  }

  /** Resolves once the incoming half is done (written and ended, or stopped). */
  drained(): Promise<void> {
    if (this.#inDone) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  #endSink(): void {
    (this.#sink as RelaySink).end(() => this.#finishIn());
  }

  /** The local fd takes no more: tell the peer to stop sending. */
  #stopIn(): void {
    if (this.#inDone) return;
    this.#channel.send(RemoteFrame.STOP, this.id);
    this.#finishIn();
  }

  #finishIn(): void {
    if (this.#inDone) return;
    this.#inDone = true;
    for (const d of [...this.#drained.splice(0), ...this.#written.splice(0)]) d();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#finished || !this.#outDone || !this.#inDone) return;
    this.#finished = true;
    if (this.#pumping) this.#channel.unpump(this.id);
    else if (this.#pumped !== undefined) closeOwnFd(this.#pumped.fd); // never started
    this.#pumped = undefined;
    this.#source?.destroy();
    this.#sink?.destroy();
    this.#onFinished(this);
  }

  /**
   * Ends the stream at once and tells the peer: STOP for the incoming half
   * (the far end's writes then fail, as into a pipe with no reader), end of
   * file for the outgoing one; closes the local fd.
   */
  abandon(): void {
    if (this.#finished) return;
    if (!this.#inDone) this.#channel.send(RemoteFrame.STOP, this.id);
    if (!this.#outDone) this.#channel.send(RemoteFrame.EOF, this.id);
    this.destroy();
  }

  /** Ends the stream at once (the connection is going): closes the local fd, tells nobody. */
  destroy(): void {
    if (this.#finished) return;
    this.#outDone = true;
    this.#inDone = true;
    for (const d of [...this.#drained.splice(0), ...this.#sent.splice(0), ...this.#written.splice(0)]) d();
    this.#maybeFinish();
  }

  /** Routes a stream frame to this stream. */
  handle(type: number, payload: Buffer): void {
    switch (type) {
      case RemoteFrame.DATA:
        this.data(payload);
        return;
      case RemoteFrame.CREDIT:
        if (payload.length !== 4) throw new ProtocolError(`a CREDIT frame of ${payload.length} bytes (4 expected)`);
        this.credit(payload.readUInt32LE(0));
        return;
      case RemoteFrame.EOF:
        this.eof();
        return;
      case RemoteFrame.STOP:
        this.stopped();
        return;
      default:
        throw new ProtocolError(`${frameTypeName(type)} is not a stream frame`);
    }
  }

  static readonly DATA = RemoteFrame.DATA;
}

/** True for the frame types that belong to a stream. */
export function isStreamFrame(type: number): boolean {
  return type === RemoteFrame.DATA || type === RemoteFrame.CREDIT || type === RemoteFrame.EOF || type === RemoteFrame.STOP;
}
