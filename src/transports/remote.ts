/**
 * remote: the command runs in `fdbridge serve --stdio`, started through
 * `via` (`['ssh', 'host', '--']`, `['docker', 'exec', '-i', 'ctr']`, ...):
 * one channel over the via process's stdin and stdout carries the calls
 * and every relayed byte stream (remote-channel.ts). OpenSSH (or docker,
 * kubectl) does transport, authentication and encryption.
 *
 * An fd cannot cross machines: dupFileDescriptor gives the command a local
 * fd of its own (a pipe end, a socketpair end, a read-only memfd copy) and
 * relays its bytes (remote-kinds.ts says which, and refuses kinds with no
 * byte stream). Byte order, end of file and close hold; identity, shared
 * offsets, fstat, locks and passing the fd on as the same open file do not.
 *
 * The relays on this side run on the caller's event loop: a caller that
 * blocks its thread waiting for relayed bytes (a readSync on the pipe the
 * command writes into) waits for good. Read such fds asynchronously.
 */
import type { ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';

import { killIfSpawned, spawnReapedAtTeardown, waitForExit } from '../child-process';
import { commandRequest, normalizeCommandSpec, type CommandSpec } from '../command';
import { BaseConnection, type CommandLocation, type ConnectOptions } from '../connection';
import {
  ClosedError,
  closedBehindBackError,
  errnoName,
  PeerExitedError,
  ProtocolError,
  RemoteError,
  SystemError,
  TimeoutError,
  UnknownCommandError,
  UnsupportedError,
  type FdBridgeError,
  type PeerExit,
  type RemoteErrorInfo,
} from '../errors';
import { closeOwnFds, MAX_FD, reopenedCopy } from '../fd';
import { MAX_CALL_JSON_BYTES } from '../json-value';
import { native, type FdList } from '../native';
import { distPath } from '../paths';
import { readyPayload } from '../protocol';
import { describeValue } from '../validate';
import { Channel, checkFrameLength, frameTypeName, isStreamFrame, jsonPayload, parseJson, RemoteFrame, RelayStream, REMOTE_PROTOCOL_VERSION, type OpenRequest, type PumpedEnd, type RelaySink, type RelaySource } from './remote-channel';
import { FileSink, FileSource } from './remote-endpoints';
import { ownedStream } from './owned-stream';
import { copyOverflowError, copyReadError, MAX_COPY_BYTES, planRelay, type RelayPlan } from './remote-kinds';

/** The server's argv after `via` when via is given: `fdbridge` on the far machine's PATH. */
export const DEFAULT_SERVE_ARGV: readonly string[] = ['fdbridge', 'serve', '--stdio'];

/**
 * How long close() lets the command's last output reach the client's fds;
 * also how long it waits for the command to close before it ends the
 * relayed streams that may be holding it up (see closeTransport).
 */
export const DRAIN_ON_CLOSE_MS = 2000;
/** How long close() waits at most for the server's CLOSED before it ends the channel. */
const CLOSE_WAIT_MS = 10_000;
/** How long a lost channel waits for the via process's exit status before it says how it ended. */
const EXIT_STATUS_WAIT_MS = 250;
/** Bytes of the server's and via's stderr kept for error messages. */
const STDERR_TAIL_BYTES = 4096;

/** The reply each request takes when it succeeds (any of them may be answered ERROR instead). */
const REPLY_TO = new Map<number, number>([
  [RemoteFrame.HELLO, RemoteFrame.READY],
  [RemoteFrame.CALL, RemoteFrame.RESULT],
  [RemoteFrame.OPEN, RemoteFrame.OPENED],
  [RemoteFrame.RELEASE, RemoteFrame.RESULT],
  [RemoteFrame.CLOSE, RemoteFrame.CLOSED],
]);

interface Pending {
  /** The request's frame type: a reply of any type but its own (REPLY_TO) or ERROR breaks the protocol. */
  request: RemoteFrameTypeOf<'HELLO' | 'CALL' | 'OPEN' | 'RELEASE' | 'CLOSE'>;
  /** For messages: `echo()`, `dupFileDescriptor(7)`. */
  operation: string;
  /** What a command's error names (RemoteError.method): the method, or dupFileDescriptor(s). */
  method: string;
  /**
   * An OPEN's: told of its reply (OPENED or ERROR) as it arrives, before the
   * frames after it are read (the reply itself settles in order, maybe
   * later); throws a ProtocolError for a reply that breaks the protocol.
   */
  answered?(type: number, payload: Buffer): void;
  resolve(value: Buffer): void;
  reject(err: Error): void;
}

/** The server's argv: `via` and `serve`, plus the command's module when the caller names one. */
function serverArgv(options: ConnectOptions, command: CommandSpec): { argv: string[]; hello: CommandSpec } {
  const via = options.via ?? [];
  if (!Array.isArray(via) || !via.every((a) => typeof a === 'string' && a.length > 0)) {
    throw new TypeError('options.via must be an array of non-empty strings (e.g. ["ssh", "host", "--"])');
  }
  const serve = options.serve ?? (via.length > 0 ? DEFAULT_SERVE_ARGV : [process.execPath, distPath('harness/cli.js'), 'serve', '--stdio']);
  if (!Array.isArray(serve) || serve.length === 0 || !serve.every((a) => typeof a === 'string' && a.length > 0)) {
    throw new TypeError('options.serve must be a non-empty array of non-empty strings (the far side\'s `fdbridge serve --stdio`)');
  }
  const argv = [...via, ...serve];
  if (command.module === undefined) return { argv, hello: commandRequest(command) };
  // A module the caller names: the server is started for this client with
  // its own credentials over there, so the caller chooses its code, as on
  // child. The path is a path on the far machine.
  const spec = normalizeCommandSpec(command);
  const name = spec.name ?? 'command';
  argv.push('--command', `${name}=${spec.module}#${spec.export ?? 'default'}`);
  return { argv, hello: commandRequest({ name, ...(spec.args !== undefined ? { args: spec.args } : {}) }) };
}

/**
 * The HELLO's payload for `command`, made before anything is started:
 * arguments JSON cannot carry (a BigInt, a cycle: JSON.stringify's
 * TypeError) or past one frame (RangeError) fail the connect with no via
 * process, no fd and nothing pending left behind.
 */
function helloPayload(command: CommandSpec): Buffer {
  const payload = jsonPayload({ version: REMOTE_PROTOCOL_VERSION, command });
  checkFrameLength(RemoteFrame.HELLO, payload.length);
  return payload;
}

function errorFrom(method: string, info: RemoteErrorInfo): FdBridgeError {
  if (info.code === 'ERR_FDBRIDGE_UNKNOWN_COMMAND') return new UnknownCommandError(`connect: ${info.message}`);
  return new RemoteError(method, info);
}

export class RemoteConnection extends BaseConnection {
  readonly transport = 'remote' as const;
  readonly location: CommandLocation;
  /** The via process (ssh, docker, ...): killing it loses the channel. */
  readonly via: ChildProcess;
  readonly #channel: Channel;
  readonly #stdio: ViaStdio;
  readonly #pending = new Map<number, Pending>();
  readonly #streams = new Map<number, RelayStream>();
  /**
   * The streams not finished yet by the number the command's end has over
   * there (OPENED): a release of those numbers ends their streams.
   */
  readonly #givenStreams = new Map<number, RelayStream>();
  /**
   * The streams announced (OPEN sent) whose OPENED or ERROR has not come,
   * finished here or not (a copy is, once its bytes are sent): true for a
   * copy, whose bytes go before the reply.
   */
  readonly #unopened = new Map<number, boolean>();
  #nextId = 1;
  #nextStream = 1;
  /** The last reply's settling: the next one settles after it. */
  #replies: Promise<void> = Promise.resolve();
  /** Why every request fails now: the channel lost (PeerExitedError), its input closed behind fdbridge's back, or close() done (ClosedError). */
  #broken: PeerExitedError | ClosedError | ProtocolError | undefined;
  /** What the far side sent that broke the protocol, when that ended the channel. */
  #violation: ProtocolError | undefined;
  /** The channel's input: the via's stdout, our end (the channel owns it). */
  readonly #inputFd: number;
  /** The channel's output: the via's stdin, our end (the channel owns it). */
  readonly #outputFd: number;
  #lost: Promise<void>;
  #onLost!: () => void;
  #closing = false;
  readonly #stderr: () => string;

  static async open(options: ConnectOptions): Promise<RemoteConnection> {
    const { argv, hello } = serverArgv(options, options.command);
    const helloFrame = helloPayload(hello);
    const [file, ...args] = argv as [string, ...string[]];
    const { via, stdio } = spawnVia(file, args);
    let tail = '';
    stdio.stderr.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    const stderr = (): string => tail.trim();
    const conn = new RemoteConnection(via, stdio, stderr, options.onCommandClosed);
    const timeoutMs = options.timeoutMs ?? 10_000;
    try {
      const ready = await conn.#handshake(helloFrame, timeoutMs);
      (conn as { location: CommandLocation }).location = { transport: 'remote', ...ready };
      return conn;
    } catch (err) {
      conn.#abandon();
      throw err;
    }
  }

  private constructor(via: ChildProcess, stdio: ViaStdio, stderr: () => string, onCommandClosed: ConnectOptions['onCommandClosed']) {
    super(onCommandClosed);
    this.via = via;
    this.#stdio = stdio;
    this.#stderr = stderr;
    this.location = { transport: 'remote', pid: -1, threadId: 0 };
    this.#lost = new Promise((r) => (this.#onLost = r));
    this.#inputFd = stdio.stdout;
    this.#outputFd = stdio.stdin;
    this.#channel = new Channel(stdio.stdout, stdio.stdin, {
      onFrame: (type, id, payload) => this.#onFrame(type, id, payload),
      onEnd: (reason) => this.#channelLost(reason),
    });
    via.on('exit', () => this.#channelLost(null));
    via.on('error', () => this.#channelLost(null));
  }

  /** `hello`: the HELLO's payload (helloPayload). */
  #handshake(hello: Buffer, timeoutMs: number): Promise<Omit<CommandLocation, 'transport'>> {
    // A send that throws leaves nothing pending (#request): the race below
    // settles with its error, and the timer is cleared with it.
    const ready = this.#request(RemoteFrame.HELLO, 'connect', 'constructor', hello);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`connect: the remote command was not ready within ${timeoutMs} ms (options.timeoutMs)`)), timeoutMs);
    });
    return Promise.race([ready, timeout])
      .then((payload) => readyPayload(parseJson(payload, 'READY')))
      .finally(() => clearTimeout(timer));
  }

  protected override brokenError(): Error | undefined {
    return this.#broken;
  }

  /**
   * The streams being relayed now: bytes sent to the command's end and
   * received from it so far (a diagnostic: e.g. that a consumer who stops
   * reading holds back no more than its window).
   */
  relays(): Array<{ stream: number; bytesOut: number; bytesIn: number }> {
    return [...this.#streams.values()].map((s) => ({ stream: s.id, bytesOut: s.bytesOut, bytesIn: s.bytesIn }));
  }

  // requests ---------------------------------------------------------------

  /**
   * `payload`: the request's JSON (jsonPayload), or undefined for none;
   * `answered`: see Pending. A send that throws (a payload past one frame)
   * rejects with its error and leaves nothing pending: nothing settles it
   * later.
   */
  #request(
    type: RemoteFrameTypeOf<'HELLO' | 'CALL' | 'OPEN' | 'RELEASE' | 'CLOSE'>,
    operation: string,
    method: string,
    payload: Buffer | undefined,
    answered?: Pending['answered'],
  ): Promise<Buffer> {
    if (this.#broken) return Promise.reject(this.#brokenFor(operation));
    const id = this.#nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending.set(id, { request: type, operation, method, ...(answered ? { answered } : {}), resolve, reject });
      try {
        this.#channel.send(type, id, payload);
      } catch (err) {
        this.#pending.delete(id);
        reject(err);
      }
    });
  }

  #onFrame(type: number, id: number, payload: Buffer): void {
    if (isStreamFrame(type)) {
      this.#onStreamFrame(type, id, payload);
      return;
    }
    const p = this.#pending.get(id);
    if (!p) throw new ProtocolError(`a reply (${type}) to request ${id}, which is not pending`);
    // Before the request leaves the pending ones: a reply of another
    // request's type, or one its hook finds breaks the protocol, fails it
    // with every other pending request.
    if (type !== RemoteFrame.ERROR && type !== REPLY_TO.get(p.request)) {
      const name = frameTypeName(type);
      throw new ProtocolError(`${p.operation}: ${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name} frame answers its ${frameTypeName(p.request)}`);
    }
    p.answered?.(type, payload);
    this.#pending.delete(id);
    // What the command wrote before it answered came first (the server
    // flushes its streams before each reply): into a file it is written
    // before the caller hears the answer, so a log line is in the file once
    // log() resolves.
    // Replies settle in the order they came, waits or not.
    const writing = [...this.#streams.values()].map((s) => s.written());
    this.#replies = this.#replies.then(() => Promise.all(writing)).then(() => this.#settle(p, type, payload));
  }

  /**
   * A stream's frame from the far side. Its bytes and end of file come only
   * once its OPENED has (the far side sends it before anything of the
   * stream: remote-channel.ts); before that it may only give credit back
   * for a copy's bytes, or stop them. Frames for a stream that has finished
   * here (refused, ended, released) may still be in flight: dropped.
   */
  #onStreamFrame(type: number, id: number, payload: Buffer): void {
    const what = `a ${frameTypeName(type)} frame for stream ${id}`;
    if (id === 0 || id >= this.#nextStream) throw new ProtocolError(`${what}, which the client never announced`);
    const copy = this.#unopened.get(id);
    if (copy !== undefined && !(copy && (type === RemoteFrame.CREDIT || type === RemoteFrame.STOP))) {
      throw new ProtocolError(`${what} before its OPENED`);
    }
    this.#streams.get(id)?.handle(type, payload);
  }

  /** `type`: the request's own reply (REPLY_TO), or ERROR (#onFrame has refused any other). */
  #settle(p: Pending, type: number, payload: Buffer): void {
    if (type !== RemoteFrame.ERROR) {
      p.resolve(payload);
      return;
    }
    let info: RemoteErrorInfo;
    try {
      info = parseJson(payload, 'ERROR') as RemoteErrorInfo;
    } catch (err) {
      p.reject(err as Error);
      return;
    }
    p.reject(errorFrom(p.method, info));
  }

  // duplication ------------------------------------------------------------

  protected dupOne(fd: number): Promise<number> {
    const operation = `dupFileDescriptor(${fd})`;
    if (this.#broken) return Promise.reject(this.#brokenFor(operation));
    let made: Made;
    try {
      made = this.#makeStream(fd, operation);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#open(made, 'dupFileDescriptor');
  }

  /**
   * Not on remote: the reply, and the relays that copy a file before it,
   * need this thread's event loop, which a synchronous wait would stop.
   */
  protected dupOneSync(fd: number): number {
    throw new UnsupportedError(
      `dupFileDescriptorSync(${fd}) is not available on the remote transport: its relays run on this thread's event loop, ` +
        'which a synchronous wait would stop; use dupFileDescriptor',
    );
  }

  protected async dupMany(fds: FdList, above: number): Promise<number[]> {
    if (this.#broken) throw this.#brokenFor('dupFileDescriptors');
    // Every fd is checked and reached here before anything is sent: a kind
    // that cannot be relayed, or a closed fd, fails the batch with nothing made there.
    const made: Made[] = [];
    try {
      for (const fd of fds) made.push(this.#makeStream(fd, `dupFileDescriptors (fd ${fd})`, above));
    } catch (err) {
      for (const m of made) m.dispose();
      throw err;
    }
    const settled = await Promise.allSettled(made.map((m) => this.#open(m, 'dupFileDescriptors')));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await this.release(settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))).catch(() => undefined);
      throw failed.reason;
    }
    return settled.map((s) => (s as PromiseFulfilledResult<number>).value);
  }

  /**
   * Closes the command's ends `fds` of a failed batch, and ends their
   * streams here: a stream whose command end is closed over there is not
   * always told by its bytes (the client -> command half of a pipe sees
   * that its reader is gone only when it next has bytes to write, which a
   * pipe its writer leaves quiet never has), and would keep this side's
   * copy of the caller's fd and its pipe over there open until the
   * connection closes.
   */
  protected async release(fds: number[]): Promise<void> {
    if (fds.length === 0 || this.#broken) return;
    const released = this.#request(RemoteFrame.RELEASE, 'release', 'release', jsonPayload(fds));
    // Frames keep their order: the server closes the command's ends, then ends each stream.
    for (const fd of fds) this.#givenStreams.get(fd)?.abandon();
    await released;
  }

  /**
   * `fd` is the number of a new command end over there: a stream given it
   * before had its end passed on or closed by the command, and is no
   * longer found by it (a release of the number ends the new end's stream
   * only). Done before anything releases the number or gives it a stream.
   */
  #numberTaken(fd: number): void {
    this.#givenStreams.delete(fd);
  }

  /** The client's end of a new stream for `fd` (borrowed), not yet announced; `operation` names a refusal of its kind. */
  #makeStream(fd: number, operation: string, above = fd + 1): Made {
    // One of fdbridge's own fds is refused as if closed, as on every
    // transport, before its kind is looked at (a pidfd or eventfd of ours
    // would otherwise be named in an UnsupportedError). The duplication
    // (clientEndpoint) checks again, under the registry's lock.
    if (native.registration(fd) !== 0) throw new SystemError(osConstants.errno.EBADF, 'dup');
    const plan = planRelay(fd, operation);
    const endpoint = clientEndpoint(fd, plan, above);
    const sid = this.#nextStream++;
    /** The number the command's end was given as over there, once the stream runs with it. */
    let givenAs: number | undefined;
    const stream = new RelayStream(sid, this.#channel, endpoint.halves, (s) => {
      this.#streams.delete(s.id);
      if (givenAs !== undefined && this.#givenStreams.get(givenAs) === s) this.#givenStreams.delete(givenAs);
    });
    endpoint.attach(stream);
    return {
      operation,
      plan,
      stream,
      givenAs: (n) => {
        givenAs = n;
        this.#givenStreams.set(n, stream);
      },
      copyError: () => endpoint.copyError?.(operation),
      dispose: () => stream.destroy(),
    };
  }

  async #open(made: Made, method: string): Promise<number> {
    const { plan, stream, operation } = made;
    const req: OpenRequest = { stream: stream.id, mode: plan.mode, kind: plan.kind, ...(plan.offset !== undefined ? { offset: plan.offset } : {}) };
    // A copy's bytes go before the reply (the far side answers once it holds
    // them all); they are read at positions of their own, so the caller's
    // file is left as it was whatever the answer.
    const copy = plan.mode === 'copy';
    this.#streams.set(stream.id, stream);
    this.#unopened.set(stream.id, copy);
    /** Why the stream could not start once opened (the pump could not take our end): the command's end goes too. */
    let startFailed: Error | undefined;
    /**
     * What the OPENED says, read once, here: the command's number for its
     * end, or the ProtocolError of one that gives none. The reply resolves
     * only with an OPENED, and only after this hook has read it.
     */
    let opened: number | ProtocolError | undefined;
    const reply = this.#request(RemoteFrame.OPEN, operation, method, jsonPayload(req), (type, payload) => {
      this.#unopened.delete(stream.id);
      if (type === RemoteFrame.OPENED) opened = openedFd(payload, operation);
      if (typeof opened !== 'number') {
        // Refused (or an OPENED that the duplication fails on): the stream
        // never runs, and what the far side sends for it after is dropped.
        stream.destroy();
        return;
      }
      if (copy) return;
      // Anything else runs only now: the far side's bytes are written into
      // the caller's file, and the caller's are read, only for a
      // duplication that succeeded. The frames after the OPENED are read
      // after this, so its bytes that follow at once all arrive.
      try {
        stream.start();
      } catch (err) {
        startFailed = err as Error;
      }
    });
    // The server knows the stream once it reads the OPEN (frames keep their order).
    // A start that fails is handled as the hook's is: the command's end released once the reply comes.
    if (copy) {
      try {
        stream.start();
      } catch (err) {
        startFailed = err as Error;
      }
    }
    try {
      await reply;
      if (typeof opened !== 'number') throw opened;
      const fd = opened;
      this.#numberTaken(fd);
      const failed = startFailed ?? made.copyError();
      if (failed !== undefined) {
        // Our end could not be pumped, or what was sent is not the file
        // (cut at the limit, or where a read failed): the command's end goes.
        await this.release([fd]).catch(() => undefined);
        throw failed;
      }
      if (!stream.finished) made.givenAs(fd);
      return fd;
    } catch (err) {
      stream.destroy();
      throw err;
    } finally {
      // Unanswered, when the connection was lost or closed (answered: already gone).
      this.#unopened.delete(stream.id);
    }
  }

  // calls and close --------------------------------------------------------

  protected async callRemote(method: string, callJson: string): Promise<unknown> {
    // The call's JSON is this channel's CALL payload as it is.
    const payload = await this.#request(RemoteFrame.CALL, `${method}()`, method, Buffer.from(callJson));
    // The far side's command refuses a result past the limit (a RemoteError,
    // as on every transport): a larger RESULT is the far side's own doing.
    if (payload.length > MAX_CALL_JSON_BYTES) {
      throw new ProtocolError(`${method}(): a RESULT of ${payload.length} bytes, past MAX_CALL_JSON_BYTES (${MAX_CALL_JSON_BYTES})`);
    }
    return parseJson(payload, 'RESULT');
  }

  protected async closeTransport(): Promise<void> {
    this.#closing = true;
    if (!this.#broken) {
      // Settles with CLOSED, an ERROR, or the channel's loss: everything is closed below either way.
      const answered = Promise.race([this.#request(RemoteFrame.CLOSE, 'close', 'close', undefined), this.#lost]).then(
        () => true,
        () => true,
      );
      if (!(await Promise.race([answered, delay(DRAIN_ON_CLOSE_MS).then(() => false)]))) {
        // The command's thread runs its close() only once the call it is in
        // returns, and a call can wait on a relayed stream for good: a
        // writeSync into a pipe whose consumer here does not read (the
        // stream's window is spent, so the server reads no more of it), a
        // readSync of a stream whose source here never ends. The calls were
        // given up when close() began (ClosedError); ending every stream
        // (STOP: the command's writes fail with EPIPE; end of file: its
        // reads return) lets that call return and the command close.
        for (const s of [...this.#streams.values()]) s.abandon();
        this.#streams.clear();
        await Promise.race([answered, delay(CLOSE_WAIT_MS - DRAIN_ON_CLOSE_MS)]);
      }
      // The command's last output (sent before CLOSED) reaches our fds.
      await Promise.race([Promise.all([...this.#streams.values()].map((s) => s.drained())), delay(DRAIN_ON_CLOSE_MS)]);
    }
    for (const s of [...this.#streams.values()]) s.destroy();
    this.#streams.clear();
    if (!this.#broken) await this.commandClosed();
    await this.#teardown();
    // The relay's copies of the caller's stream sockets, closed off the event loop.
    await this.#channel.closesSettled();
    // The channel is closed (#teardown): nothing sent from now on is read,
    // so a request made now (a failed batch's release of the pieces that
    // arrived, once this settled them) would wait for good. It fails or,
    // a release, returns at once instead, as on a lost channel.
    this.#broken ??= this.closedError('request');
    this.#failPending(() => this.closedError('request'));
  }

  /**
   * A connect that failed (its typed timeout, an ERROR, a lost channel):
   * the caller hears of it now, not once the via has had its grace (a via
   * that never answers may not exit at the end of its stdin either). Our
   * ends of its stdio close here; the via's grace, its SIGKILL and its
   * reaping (spawnReapedAtTeardown, should this thread end first) run on.
   */
  #abandon(): void {
    this.#channel.endOutput();
    this.#channel.close();
    this.#stdio.stderr.destroy();
    void this.#teardown();
  }

  /** Ends the channel and the via process (SIGKILL if it does not exit once its stdin ends). */
  async #teardown(): Promise<void> {
    this.#channel.endOutput();
    // No pid: the spawn failed, and there is no process to wait for.
    const gone = this.via.pid === undefined || (await waitForExit(this.via, 5000));
    if (!gone && killIfSpawned(this.via)) await waitForExit(this.via, 1000);
    this.#channel.close();
    this.#stdio.stderr.destroy();
  }

  /**
   * The channel ended, or the via process exited (a process it started may
   * hold the channel open: its exit is enough), or the via stopped taking
   * the channel's output (it closed its stdin and lives on: nothing sent
   * is answered any more). Every pending request rejects with
   * PeerExitedError, every relayed fd here is closed, and the server sees
   * its stdin end. An input or output that failed with EBADF was closed
   * behind fdbridge's back (the program closed our end of the via's
   * stdout or stdin, or the pump let go of its number when the program
   * made a file of fdbridge's there): the via did not exit, so every
   * request fails at once with a ClosedError saying so, without waiting
   * for the via.
   */
  #channelLost(reason: Error | null): void {
    if (this.#broken) return;
    const via = `the via process (pid ${this.via.pid ?? -1}) or the remote command behind it`;
    const behindBack =
      reason instanceof SystemError && reason.errno === -osConstants.errno.EBADF
        ? reason.syscall === 'write'
          ? closedBehindBackError('remote', "its channel's output", this.#outputFd, `nothing more reaches ${via}`)
          : closedBehindBackError('remote', "its channel's input", this.#inputFd, `nothing more is heard from ${via}`)
        : undefined;
    if (reason instanceof ProtocolError) {
      // The far side sent what the protocol does not allow (a frame too
      // large, a reply to no request, ...): said as it is, at once, as the
      // other transports say a peer's violation; the via is not waited for.
      this.#violation = reason;
      this.#broken = this.#violationError('request', reason);
    }
    const exit: PeerExit = {
      transport: 'remote',
      pid: this.via.pid ?? -1,
      exitCode: this.via.exitCode,
      signal: this.via.signalCode,
      detail: reason ? `broke the channel (${reason.message})` : 'closed the channel',
    };
    this.#broken ??= behindBack ?? new PeerExitedError('request', exit);
    for (const s of [...this.#streams.values()]) s.destroy();
    this.#streams.clear();
    // The server sees its stdin end; what it might still send is of no use.
    this.#channel.close();
    this.#onLost();
    if (behindBack) {
      this.#failPending(() => behindBack);
      return;
    }
    if (this.#violation) {
      this.#failPending((operation) => (this.#closing ? new ClosedError(`${operation} failed: the remote connection was closed`) : this.#brokenFor(operation)));
      return;
    }
    const settle = (): void => {
      const status = this.via.exitCode;
      if (status !== null && status < 0) {
        // Node reports a via that could not be started (ENOENT, EACCES) as an exit with -errno.
        const file = this.via.spawnfile;
        this.#failPending((operation) => new SystemError(status, `spawn ${file}`, `${operation} failed: the via process (${file}) could not be started: ${errnoName(status)}`));
        return;
      }
      const final: PeerExit = { ...exit, exitCode: status, signal: this.via.signalCode };
      const tail = this.#stderr();
      if (tail && final.exitCode !== null && final.exitCode !== 0) final.detail = `${exit.detail}; its stderr ends: ${tail.split('\n').slice(-3).join(' | ')}`;
      this.#broken = new PeerExitedError('request', final);
      this.#failPending((operation) => (this.#closing ? new ClosedError(`${operation} failed: the remote connection was closed`) : new PeerExitedError(operation, final)));
    };
    if (this.via.exitCode !== null || this.via.signalCode !== null) settle();
    else void waitForExit(this.via, EXIT_STATUS_WAIT_MS).then(settle);
  }

  #violationError(operation: string, violation: ProtocolError): ProtocolError {
    const where = `the remote command's channel (via process pid ${this.via.pid ?? -1})`;
    return new ProtocolError(`${operation} failed: ${where} broke the protocol: ${violation.message}`, { cause: violation });
  }

  /** The error a request made on a broken connection fails with: a lost channel's, relabelled for `operation`. */
  #brokenFor(operation: string): Error {
    if (this.#violation) return this.#violationError(operation, this.#violation);
    const err = this.#broken as PeerExitedError | ClosedError;
    if (err instanceof ClosedError) return err;
    return new PeerExitedError(operation, {
      transport: 'remote',
      pid: err.pid,
      exitCode: err.exitCode,
      signal: err.signal,
      detail: 'closed the channel',
    });
  }

  #failPending(makeError: (operation: string) => Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(makeError(p.operation));
  }
}

type RemoteFrameTypeOf<K extends keyof typeof RemoteFrame> = (typeof RemoteFrame)[K];

interface Made {
  /** The duplication as the caller asked for it ('dupFileDescriptor(5)', 'dupFileDescriptors (fd 5)'), naming its errors. */
  operation: string;
  plan: RelayPlan;
  stream: RelayStream;
  /** The command's end of the running stream is number `fd` over there: a release of it ends the stream. */
  givenAs(fd: number): void;
  /**
   * Once the stream is announced, a copy's failure, which fails the
   * duplication (named by `operation`): its file held more than a copy may
   * (it grew after it was planned), or could not be read to its end.
   * Undefined for a whole copy and for every other kind.
   */
  copyError(): Error | undefined;
  dispose(): void;
}

/** The client's end of a new stream: its halves, and what it tells once the stream is announced. */
interface Endpoint {
  halves: { source?: RelaySource; sink?: RelaySink; pumped?: PumpedEnd };
  attach(s: RelayStream): void;
  /** A copy's: see Made.copyError. */
  copyError?(operation: string): Error | undefined;
}

/** The command's number for a file it was given, from its OPENED: an fd number (0 to MAX_FD), or the ProtocolError of one that gives none. */
function openedFd(payload: Buffer, operation: string): number | ProtocolError {
  let fd: unknown;
  try {
    fd = (parseJson(payload, 'OPENED') as { fd?: unknown } | undefined)?.fd;
  } catch (err) {
    return err as ProtocolError;
  }
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd > MAX_FD) {
    return new ProtocolError(`${operation}: an OPENED whose fd is not an fd number (${describeValue(fd)})`);
  }
  return fd;
}

/**
 * A copy of `fd` (borrowed) that the relay owns: numbered above the floor
 * and above `above` (native.dupAll), so that it never takes a number the
 * caller closed and may name later in the same batch.
 */
function ownCopy(fd: number, above: number): number {
  return native.dupAll([fd], above)[0] as number;
}

/** A new open file description of the pipe or terminal `fd` names (borrowed), non-blocking; see ownCopy. */
function reopen(fd: number, flags: number, above: number): number {
  try {
    return reopenedCopy(fd, flags | fsConstants.O_NONBLOCK, (opened) => ownCopy(opened, above));
  } catch (err) {
    // A pipe with no reader left cannot be opened for writing without
    // blocking (ENXIO): a duplicate does as well (its writes fail with EPIPE).
    if ((err as NodeJS.ErrnoException).code === 'ENXIO') return ownCopy(fd, above);
    throw err;
  }
}

/**
 * The client's end of a relayed stream for `fd` (borrowed): a copy of its
 * own, owned by the endpoint (a file's) or by the stream (a pipe's or a
 * socket's, pumped by the channel).
 */
function clientEndpoint(fd: number, plan: RelayPlan, above: number): Endpoint {
  const ways = { read: plan.mode === 'up' || plan.mode === 'both', write: plan.mode === 'down' || plan.mode === 'both' };
  if (plan.access === 'file') {
    const own = ownCopy(fd, above);
    if (plan.mode === 'copy') {
      const source = new FileSource(own, MAX_COPY_BYTES);
      const copyError = (operation: string): Error | undefined => {
        if (source.overflowed) return copyOverflowError(operation);
        return source.failure === undefined ? undefined : copyReadError(operation, source.failure);
      };
      return { halves: { source }, attach: (s) => source.attach(s), copyError };
    }
    const sink = new FileSink(own);
    return { halves: { sink }, attach: () => sink.attach() };
  }
  const own = plan.access === 'reopen' ? reopen(fd, plan.openFlags ?? 0, above) : ownCopy(fd, above);
  // A reopened pipe, FIFO or terminal ends by its close; a socket by shutdown(SHUT_WR).
  return { halves: { pumped: { fd: own, ...ways, socket: plan.access !== 'reopen' } }, attach: () => undefined };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Our ends of the via process's stdin and stdout (fds, the channel's), and its stderr. */
interface ViaStdio {
  stdin: number;
  stdout: number;
  stderr: Socket;
}

/**
 * Starts the via process on socketpairs of ours for its stdin, stdout and
 * stderr: numbered above the fd floor and registered as fdbridge's
 * (native.socketpair own), unlike the pipes spawn would make at the lowest
 * free numbers, one of which could be a number the caller has closed and
 * names in a later duplication. The child's ends are closed here once it
 * has them; ours leave the registry when their stream closes them.
 */
function spawnVia(file: string, args: string[]): { via: ChildProcess; stdio: ViaStdio } {
  const pairs: Array<[number, number]> = [];
  try {
    for (let i = 0; i < 3; i++) pairs.push(native.socketpair(native.constants.SOCK_STREAM, true));
  } catch (err) {
    closeOwnFds(pairs.flat());
    throw err;
  }
  let via: ChildProcess;
  try {
    via = spawnReapedAtTeardown(file, args, { stdio: pairs.map(([, theirs]) => theirs) });
  } catch (err) {
    closeOwnFds(pairs.map(([ours]) => ours));
    throw err;
  } finally {
    closeOwnFds(pairs.map(([, theirs]) => theirs));
  }
  const ours = (i: number): number => (pairs[i] as [number, number])[0];
  return { via, stdio: { stdin: ours(0), stdout: ours(1), stderr: ownedStream(ours(2), { readable: true, writable: false }) } };
}

