/**
 * The client side of a connection to a command in another process (child and
 * helper transports): frames over one SEQPACKET socket, one round trip per
 * duplication, requests pipelined and paired with replies by id.
 */
import { BaseConnection, type CommandLocation, type ConnectOptions } from '../connection';
import {
  ClosedError,
  FdBridgeError,
  PeerExitedError,
  PeerRefusedError,
  ProtocolError,
  RemoteError,
  UnsupportedError,
  type PeerExit,
} from '../errors';
import { native } from '../native';
import {
  decodeFrame,
  encodeCall,
  encodeDup,
  encodeEmpty,
  encodeFdList,
  encodeJson,
  FrameType,
  PROTOCOL_VERSION,
  type Frame,
  type ReadyPayload,
} from '../protocol';
import type { CommandSpec } from '../command';
import { UnixSocket } from '../socket';
import { dupAll } from './direct';

type Pending =
  | { kind: 'dup'; count: number; resolve(fds: number[]): void; reject(e: Error): void; operation: string }
  | { kind: 'call'; resolve(v: unknown): void; reject(e: Error): void; operation: string };

/** How a transport learns, after the socket died, how its peer ended. */
export type PeerExitProbe = () => Promise<PeerExit>;

function closeQuietly(fds: readonly number[] | undefined): void {
  for (const fd of fds ?? []) {
    try {
      native.close(fd);
    } catch {
      // gone already
    }
  }
}

/** Sends HELLO and waits for READY (or REFUSED / ERROR / death) on a fresh socket. */
export async function handshake(
  socket: UnixSocket,
  command: CommandSpec,
  timeoutMs: number,
  describePeer: () => string,
  pull?: 'pidfd',
): Promise<ReadyPayload> {
  // In pidfd mode the far side proves it can pull our fds by pulling one at
  // once: our socket's own fd, which is certainly open here.
  const hello = pull ? { version: PROTOCOL_VERSION, command, pull, probeFd: socket.fd } : { version: PROTOCOL_VERSION, command };
  await socket.send(encodeJson(FrameType.HELLO, 0, hello));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new FdBridgeError('ERR_FDBRIDGE_TIMEOUT', `connect: ${describePeer()} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    const m = await Promise.race([socket.receive(), timeout]);
    let frame: Frame;
    try {
      frame = decodeFrame(m.data, m.fds);
    } catch (err) {
      closeQuietly(m.fds);
      throw err;
    }
    switch (frame.type) {
      case FrameType.READY:
        return frame.ready;
      case FrameType.REFUSED:
        throw new PeerRefusedError(`connect: ${describePeer()} refused this client: ${frame.message}`);
      case FrameType.ERROR:
        if (frame.error.code === 'ERR_FDBRIDGE_UNSUPPORTED') throw new UnsupportedError(frame.error.message);
        throw new RemoteError('constructor', frame.error);
      default:
        throw new ProtocolError(`connect: ${describePeer()} answered HELLO with a frame of type ${frame.type}`);
    }
  } finally {
    clearTimeout(timer);
  }
}

export class SocketConnection extends BaseConnection {
  readonly transport: 'child' | 'helper' | 'pidfd';
  readonly location: CommandLocation;
  #socket: UnixSocket;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Set once the connection can no longer be used: every new request rejects with it. */
  #dead: Error | undefined;
  #probe: PeerExitProbe;
  #closedByPeer: Promise<void>;
  #onPeerClosed!: () => void;
  #closing = false;
  /** pidfd transport: fds are pulled by number instead of sent. */
  #pull: boolean;

  #onCommandClosed: ConnectOptions['onCommandClosed'];

  constructor(
    socket: UnixSocket,
    transport: 'child' | 'helper' | 'pidfd',
    ready: ReadyPayload,
    probe: PeerExitProbe,
    onCommandClosed?: ConnectOptions['onCommandClosed'],
  ) {
    super();
    this.#pull = transport === 'pidfd';
    this.#onCommandClosed = onCommandClosed;
    this.#socket = socket;
    this.transport = transport;
    this.location = { transport, pid: ready.pid, threadId: ready.threadId };
    this.#probe = probe;
    this.#closedByPeer = new Promise((resolve) => (this.#onPeerClosed = resolve));
    socket.setMessageHandler((err, data, fds) => this.#onMessage(err, data, fds));
  }

  protected dupOne(fd: number): Promise<number> {
    return this.dupMany([fd]).then((fds) => fds[0] as number);
  }

  protected dupMany(fds: number[]): Promise<number[]> {
    if (!this.#pull) return this.#request(encodeDup, fds, 'dupFileDescriptor', 'dup', fds.length) as Promise<number[]>;
    // pidfd: the far side pulls the numbers out of this process with
    // pidfd_getfd. Pin each file under a number of our own until it has
    // (the caller may close or reuse its numbers as soon as we return).
    let pins: number[];
    try {
      pins = dupAll(fds);
    } catch (err) {
      return Promise.reject(err);
    }
    const unpin = (): void => closeQuietly(pins);
    const reply = this.#request(
      (id) => encodeFdList(FrameType.GETFD, id, pins),
      undefined,
      'dupFileDescriptor',
      'dup',
      fds.length,
    ) as Promise<number[]>;
    reply.then(unpin, unpin);
    return reply;
  }

  protected async release(fds: number[]): Promise<void> {
    if (this.#dead || fds.length === 0) return;
    for (let i = 0; i < fds.length; i += 253) {
      const chunk = fds.slice(i, i + 253);
      await this.#request((id) => encodeFdList(FrameType.RELEASE, id, chunk), undefined, 'release', 'call', 0);
    }
  }

  protected callRemote(method: string, args: unknown[]): Promise<unknown> {
    let frame: Buffer;
    try {
      frame = encodeCall(0, method, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#request(
      (id) => {
        frame.writeUInt32LE(id, 4);
        return frame;
      },
      undefined,
      `${method}()`,
      'call',
      0,
    );
  }

  #request(
    encode: (id: number) => Buffer,
    fds: readonly number[] | undefined,
    operation: string,
    kind: 'dup' | 'call',
    count: number,
  ): Promise<unknown> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    return new Promise((resolve, reject) => {
      const entry = { kind, count, resolve, reject, operation } as Pending;
      this.#pending.set(id, entry);
      try {
        this.#socket.write(encode(id), fds, (err) => {
          if (err && this.#pending.delete(id)) reject(err);
        });
      } catch (err) {
        // Nothing was queued (EBADF, EPIPE...): the fds were not sent.
        this.#pending.delete(id);
        reject(err);
      }
    });
  }

  #onMessage(err: Error | null, data?: Buffer, fds?: number[]): void {
    if (this.#closing) {
      // Replies to requests that close() already rejected are dropped (the
      // command's host sweeps whatever fds they concerned); CLOSED or EOF
      // ends the wait.
      closeQuietly(fds);
      if (err ? err.name !== 'TruncatedError' : data && data.length >= 1 && data[0] === FrameType.CLOSED) {
        this.#onPeerClosed();
      }
      return;
    }
    if (err) {
      if (err.name === 'TruncatedError') {
        this.#fail(new ProtocolError(`the ${this.transport} sent a message that arrived truncated`, { cause: err }));
      } else {
        void this.#peerGone(err);
      }
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(data as Buffer, fds as number[]);
    } catch (e) {
      closeQuietly(fds);
      this.#fail(e as Error);
      return;
    }
    const pending = this.#pending.get(frame.id);
    if (!pending || (frame.type !== FrameType.DUP_OK && frame.type !== FrameType.RESULT && frame.type !== FrameType.ERROR)) {
      this.#fail(new ProtocolError(`the ${this.transport} sent a reply (type ${frame.type}, id ${frame.id}) to no request`));
      return;
    }
    this.#pending.delete(frame.id);
    if (frame.type === FrameType.ERROR) {
      pending.reject(new RemoteError(pending.operation.replace(/\(\)$/, ''), frame.error));
    } else if (pending.kind === 'dup') {
      if (frame.type !== FrameType.DUP_OK || frame.fds.length !== pending.count) {
        pending.reject(new ProtocolError(`${pending.operation}: the reply does not list ${pending.count} fd(s)`));
        this.#fail(new ProtocolError(`the ${this.transport} answered a duplication with a wrong reply`));
        return;
      }
      pending.resolve(frame.fds);
    } else if (frame.type === FrameType.RESULT) {
      pending.resolve(frame.value);
    } else {
      pending.reject(new ProtocolError(`${pending.operation}: the reply carries fd numbers`));
    }
  }

  /** The peer closed the socket or the socket failed: find out how the peer ended, then fail everything. */
  async #peerGone(cause: Error): Promise<void> {
    this.#onPeerClosed();
    if (this.#dead) return;
    if (this.#closing) {
      this.#fail(this.closedError('the request'));
      return;
    }
    // Mark dead at once so no new request is sent into a dead socket.
    this.#dead = new PeerExitedError('request', { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null });
    let exit: PeerExit;
    try {
      exit = await this.#probe();
    } catch {
      exit = { transport: this.transport, pid: this.location.pid, exitCode: null, signal: null };
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    // EOF, or ECONNRESET when it died with our requests unread: both mean the
    // peer is gone. Anything else is worth naming.
    const gone = cause.name === 'EofError' || (cause as { code?: string }).code === 'ECONNRESET';
    if (!gone && exit.exitCode === null && exit.signal === null) {
      exit = { ...exit, detail: `broke the connection (${cause.message})` };
    }
    this.#dead = new PeerExitedError('request', exit);
    for (const p of pending) p.reject(new PeerExitedError(p.operation, exit));
    this.#socket.close();
  }

  /** Fails the connection: every pending and later request rejects with `err`. */
  #fail(err: Error): void {
    if (!this.#dead) this.#dead = err;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
    this.#socket.close();
    this.#onPeerClosed();
  }

  /**
   * Graceful close: CLOSE asks the command's side to run the command's
   * close() and close the fds it did not adopt; it answers CLOSED (we wait
   * at most `graceMs`, or until the peer is gone). The onCommandClosed hook
   * runs then, while the far side still waits for us to hang up.
   */
  protected async closeTransport(graceMs = 5000): Promise<void> {
    this.#closing = true;
    const err = this.closedError('the request');
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(new ClosedError(`${p.operation} failed: the ${this.transport} connection was closed`));
    if (!this.#dead) {
      this.#dead = err;
      try {
        this.#socket.write(encodeEmpty(FrameType.CLOSE, 0));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.#closedByPeer, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
        await this.#onCommandClosed?.(this.location);
      } catch {
        // the socket is already broken: nothing to wait for
      }
    }
    this.#socket.close();
  }
}
