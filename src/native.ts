/**
 * The only file that loads the compiled addon (build/Release/fdbridge.node).
 * Everything native is reached through the typed `native` object below.
 *
 * Ownership conventions for raw fd numbers (see also fd.ts):
 * - functions that return an fd hand its ownership to the caller;
 * - functions that take an fd borrow it, except `close` and `new Socket(fd)`,
 *   which take it over.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { EofError, ownFdRefusal, QueueFullError, SECOND_OWNER, SystemError, TruncatedError } from './errors';
import { packageRoot } from './paths';
import { installTerminateWake, type TerminateWakeBinding } from './terminate-wake';

/** A hold of a table's files: its id in the process's registry, and its thread (whose own fd table holds the references). */
export interface NativeHold {
  id: bigint;
  tid: number;
}

/** A file, as fdbridge tells one apart: its device and inode. */
export interface FileKey {
  dev: bigint;
  ino: bigint;
}

export interface NativeIdentity {
  dev: bigint;
  ino: bigint;
  /** st_mode: file type and permission bits. */
  mode: number;
}

export interface NativeMessage {
  data: Buffer;
  /** Received fds, close-on-exec, owned by the caller. */
  fds: number[];
  otherControlMessages: number;
}

/** A frame as native/frame_format.h decodes it (JSON payloads are left to TypeScript). */
export interface NativeDecodedFrame {
  type: number;
  id: number;
  payload: 'none' | 'fds' | 'pins' | 'json';
  /** The fd numbers listed (payload 'fds', 'pins'), or the fds beside a DUP. */
  count: number;
  fds?: number[];
  /** A GETFD's pins' files (payload 'pins'): device and inode as decimal strings. */
  files?: Array<{ dev: string; ino: string }>;
}

export interface NativeSocketOptions {
  /** Control buffer room, in fds (0..253; default 253). */
  maxFds?: number;
  /** Receive buffer size in bytes (default 64 KiB). */
  bufferSize?: number;
  /** Receive into one reused ArrayBuffer (`buffer`); onMessage then gets the length, not a Buffer. */
  reuseBuffer?: boolean;
  /** The send queue's bound in bytes (see UnixSocket::SetSendQueueLimits; default 32 MiB). */
  sendQueueLimit?: number;
  /**
   * Messages go to the environment's batch (setMessageBatchHandler), handed
   * to JS once per loop turn with every other batched socket's; the socket
   * reads its next message only after that (native/message_batch.h).
   */
  batch?: boolean;
  /**
   * The fd is a caller's, named to this operation (new UnixSocket,
   * fromListeningFd): one of fdbridge's own numbers is refused (ownFdRefusal:
   * a SystemError EBADF naming the operation and the fd). The look, the
   * steps below and the poll's start are one hold of the registry's lock:
   * no fd of fdbridge's another thread makes at the number after the look
   * is taken.
   */
  caller?: string;
  /** With `caller`: registered as fdbridge's own (own) in that same step; not, if the constructor throws. */
  callerOwn?: boolean;
  /** With `caller`: made close-on-exec and non-blocking in that same step. */
  callerCloexec?: boolean;
}

/**
 * The batch's callback: `count` messages, the i-th for handlers[i] (a
 * socket's onMessage), its bytes in `data` and, in `meta` (float64 each),
 * per message its offset in `data`, its length, its fd count and the fds.
 * The fds are the dispatcher's to hand on; `data` and `meta` are reused by
 * the next batch.
 */
export type NativeBatchDispatcher = (count: number, handlers: NativeMessageCallback[], data: ArrayBuffer, meta: ArrayBuffer) => void;

/**
 * onMessage(err) or onMessage(null, data, fds): fds (undefined when none) are
 * owned by the callee; data is the byte count when the socket reuses its buffer.
 */
export type NativeMessageCallback = (
  err: Error | null,
  data?: Buffer | number,
  fds?: number[],
  /** receiveFrom(true) only: the sender's address, null when it is unbound. */
  from?: string | Buffer | { abstract: string | Buffer } | { relative: string | Buffer } | null,
  /** receiveFrom(true) on a socket with SO_PASSCRED: the sender's credentials. */
  credentials?: { pid: number; uid: number; gid: number },
) => void;
export type NativeAcceptCallback = (err: Error | null, fd?: number) => void;

/**
 * fdbridge's wire protocol on one open socket (native/frame_channel.h):
 * requests and their pending table, settled in C++ from the poll callback;
 * and, on the command's side, DUP requests answered in C++ into the ledger
 * of fds given to the command. Messages it does not take still reach the
 * socket's onMessage, in order.
 */
export interface NativeFrameChannel {
  /**
   * A DUP with `fds` (borrowed) beside it, or with `pull` a GETFD frame
   * listing their numbers. tag 0 (one fd) resolves with its number; 1
   * (dupFileDescriptors) and 2 (several dupFileDescriptor calls in one
   * frame) with the list. Throws, with nothing sent, like Socket.send.
   */
  dup(tag: 0, fds: number | FdList, pull: boolean): Promise<number>;
  dup(tag: 1 | 2, fds: FdList, pull: boolean): Promise<number[]>;
  /**
   * The blocking form of dup(0, fd): waits in poll(2), at most `timeoutMs`,
   * for its reply; whatever else arrives meanwhile settles its requests or
   * reaches onMessage (in order) before it returns. The far side's number,
   * or what ended the wait: another frame answering it, the timeout (the
   * request stays pending: `late` settles with its reply), or the socket's
   * end (`errno` 0: end of file). Throws, with nothing sent, like dup; also
   * when its send, queued behind a full buffer, fails later (the peer's end,
   * EPIPE or ECONNRESET, included: the caller tells them apart).
   * Nothing (undefined) when the outcome could not be made: on a worker
   * thread whose termination was asked for during the wait (Node-API makes
   * no value then, and the error that says so cannot be thrown either).
   */
  dupSync(fd: number, timeoutMs: number): number | SyncDupOutcome | undefined;
  /** A CALL or RELEASE frame (its id is written in); resolves with the RESULT frame. */
  call(frame: Buffer, operation: string, exempt: boolean): Promise<Buffer>;
  /** Rejects every pending request with errorFor(its operation). */
  failAll(errorFor: (operation: string) => Error): void;
  /** Requests waiting for their reply. */
  readonly pending: number;
  /** Of those, the ones that expect fd numbers. */
  readonly pendingDups: number;
  /** Answers DUP requests in C++ into the ledger, at most `maxGiven` fds held. */
  serve(on: boolean, maxGiven?: number): void;
  /**
   * Answers GETFD requests in C++: their numbers pulled through `pidfd`
   * (borrowed: kept open until this is turned off with -1, or serve(false)),
   * close-on-exec, above the floor and registered, into the ledger, at most
   * `maxGiven` fds held. One that does not fit, or whose pulls fail, reaches
   * the socket's message handler as any other message, nothing pulled left open.
   */
  servePulls(pidfd: number, maxGiven?: number): void;
  /**
   * The ledger's fds go to the background closer as the socket's owner
   * (useBackgroundCloser), a sweep's as one batch the socket remembers.
   */
  closeGivenInBackground(on: boolean): void;
  /**
   * Charges the ledger to `budget` from now on (what it holds already
   * included); a DUP that does not fit it is not answered in C++ but
   * reaches the socket's onMessage. null: no budget.
   */
  chargeTo(budget: NativeFdBudget | null): void;
  /** The ledger: fds given to the command, not yet adopted; closed when the socket closes. */
  add(fd: number): void;
  /** Takes `fd` out of the ledger, the command's now and no longer fdbridge's own (disown; still charged while keepAdoptedCharged is on); false if not there. */
  adopt(fd: number): boolean;
  /**
   * Takes `fd` out of the ledger and refunds it (a RELEASE): 'released', the
   * caller's to close now; 'dropped', the command closed that copy itself
   * (its number no longer holds it), nothing to close; undefined, not there.
   */
  release(fd: number): 'released' | 'dropped' | undefined;
  /**
   * While on, an fd the command adopts stays charged to the budget and
   * counted against serve()'s maxGiven (heldCount) until forgetAdopted
   * names it, the ledger is swept, a new fd is received or given at its
   * number, or reclaimClosedAdopted finds it closed.
   */
  keepAdoptedCharged(on: boolean): void;
  /** The command is closing `fds` (closeClientFds): the adopted ones still charged are refunded; returns how many. */
  forgetAdopted(fds: readonly number[]): number;
  /**
   * The command closes `fds` (closeClientFds): to the background closer as
   * the socket's, each adopted one still charged only while its number
   * holds the file it was given with, and each only while its number's
   * install generation is `installs[i]` (installGenerations, as the command
   * held it), then forgetAdopted; returns the batch's ticket. Throws a
   * SystemError EBADF naming the first refused (one of fdbridge's own fds
   * now, an adopted one whose number holds another file or none, or another
   * install at the number), nothing handed over nor forgotten.
   */
  closeClientFds(fds: readonly number[], installs?: readonly number[]): number;
  /**
   * Refunds the adopted fds still charged that the command closed another
   * way: their number free, or another file's (device and inode, read
   * without asking the filesystem); returns how many. One statx per
   * adopted fd: for the path that would refuse a DUP.
   */
  reclaimClosedAdopted(): number;
  /** Closes the ledger's fds and refunds the adopted ones still charged. */
  sweep(): number;
  readonly givenCount: number;
  /** Charged for the client: the ledger's fds and the adopted ones still charged. */
  readonly heldCount: number;
  /** DUP requests answered in C++ so far (kept once the socket is closed). */
  readonly served: number;
}

/**
 * fds that frame channels charged to it hold in their ledgers, against
 * `limit` and every parent's (a helper daemon: one per uid, under one for
 * all). fds waiting for the background closer count against the topmost one.
 */
export interface NativeFdBudget {
  readonly held: number;
  limit: number;
}

export interface NativeFrameChannelCallbacks {
  /**
   * The error for a request its reply fails: an ERROR frame, or a wrong
   * reply (`fds`: the count it expected, 0 for a call). Required to send requests.
   */
  replyError?(operation: string, fds: number, frame: Buffer): Error;
  /** A queued request met a peer that is gone (EPIPE, ECONNRESET). */
  onBroken?(err: Error): void;
  /** Command's side: a served DUP's fds are in the ledger, its reply not yet sent (the after-receive failpoint). */
  afterReceive?(): void;
}

export interface NativeSocket {
  readonly fd: number;
  readonly queuedSends: number;
  /** Queued sends retried and found the socket (or a DGRAM receiver) still full: one per wake-up. */
  readonly fullSends: number;
  /** Once closed: how many tickets of its later background closes it keeps (done ones until its next drop). */
  readonly keptTickets: number;
  /** What the send queue holds, in bytes charged against its limit. */
  readonly queuedSendBytes: number;
  /** Messages that waited in the send queue and have since gone to the kernel whole (0 once closed). */
  readonly sentFromQueue: number;
  /**
   * Bounds the send queue (`limit` bytes: send throws QueueFullError while it
   * holds that much) and pauses reading while it holds more than
   * `pauseReadingAt` bytes (-1: never).
   */
  setSendQueueLimits(limit: number, pauseReadingAt: number): void;
  /** While not reading, report a peer's hangup at once as EOF (its unread messages left unread). */
  watchHangup(on: boolean): void;
  /** True when the peer has closed its end (POLLHUP now, nothing read). */
  hungUp(): boolean;
  /**
   * True when the socket's fd (one of fdbridge's own) was closed behind
   * fdbridge's back: the socket has let go of the number and never uses it
   * again. Looks at the file (an fstat); once closed, what the close found.
   */
  lost(): boolean;
  /** The reused receive buffer (reuseBuffer) once the socket has read, else undefined. */
  readonly buffer: ArrayBuffer | undefined;
  /** A receive buffer of `bytes` instead; false once the buffer is made (the first read). */
  setReceiveBufferSize(bytes: number): boolean;
  /**
   * From now on the socket itself is closed by the background closer, as
   * `owner`'s (default 0; see closeInBackground), as is: no shutdown,
   * nothing drained. Without it close() shuts the socket down, hands what
   * its receive queue holds to the closer and closes it at once
   * (native/unix_socket.h, Close). A truncated message's fds go to the
   * closer, as `owner`'s, either way.
   */
  useBackgroundCloser(on: boolean, owner?: number): void;
  /**
   * Closes `fd`, a connection this listening socket accepted that nobody
   * takes, as closeConnection does, as this socket's owner's; the socket
   * remembers the tickets (backgroundCloseTickets). On a closed socket, as
   * owner 0's, the tickets forgotten.
   */
  closeAccepted(fd: number): void;
  /**
   * closeInBackground as this socket's owner; the socket remembers the
   * ticket (backgroundCloseTickets).
   */
  closeInBackground(fds: readonly number[]): number;
  /** The tickets of this socket's background closes (truncated messages' fds, closeInBackground's) not yet done. */
  backgroundCloseTickets(): number[];
  /**
   * Sends data and fds (borrowed). Returns 0 when the kernel took it now, 1
   * when it waits for writability (then `done` is called once, with null or
   * an error, and `tag`, whatever value it is). Throws a typed error, with
   * nothing sent or queued, on failure (QueueFullError when the send queue
   * is at its limit).
   */
  send<T = undefined>(
    data: Uint8Array,
    fds?: readonly number[],
    done?: (err: Error | null, tag: T) => void,
    tag?: T,
    /** Queued even when the send queue is at its limit. */
    exempt?: boolean,
    /**
     * The fds are fdbridge's own pins, sent for a caller: not refused as
     * fds fdbridge holds for itself (see disown).
     */
    ownFds?: boolean,
  ): 0 | 1;
  /**
   * sendto(2) on an unconnected DGRAM socket, fds borrowed. Returns 0 when
   * the kernel took it now; 1 when a full receiver made it wait (only with
   * `waitWhenFull`; then `done` is called). Throws a typed error (EAGAIN for
   * a full receiver without `waitWhenFull`), with nothing queued, on failure.
   */
  sendTo<T = undefined>(
    name: string | Uint8Array,
    abstract: boolean,
    data: Uint8Array,
    fds: readonly number[] | undefined,
    waitWhenFull: boolean,
    done?: (err: Error | null, tag: T) => void,
    tag?: T,
  ): 0 | 1;
  /** Datagrams then reach onMessage with the sender's address and credentials. */
  receiveFrom(on: boolean): void;
  /**
   * The fds this socket receives from now on are `tag`'s receipts
   * (newReceiptTag), which the command holding that tag claims as its
   * client's (claimReceipts).
   */
  recordReceiptsFor(tag: number): void;
  startReading(): void;
  stopReading(): void;
  startAccepting(): void;
  stopAccepting(): void;
  ref(): void;
  unref(): void;
  /**
   * Closes the fd, stops polling, fails queued sends (ECANCELED; their
   * copies of the fds go to the background closer). Idempotent. Returns the
   * tickets of the socket's background closes not done yet.
   * `shutdown: false`: the socket's file is shared with another holder that
   * goes on using it (a listening socket systemd passed, a connection
   * handed to another process): only this copy is closed, on the background
   * closer, with no shutdown and nothing drained (native/unix_socket.h, Close).
   */
  close(options?: { shutdown?: boolean }): number[];
  /**
   * Notes the socket file this socket bound (`path` absolute), with its
   * identity as it is now, so that the environment's teardown (a worker
   * terminated, whose close() never runs) removes it as close() does, if
   * the path still names that very file. False (nothing noted) when there
   * is no socket file at `path`, or the socket is closed.
   */
  boundFile(path: string): boolean;
}

export interface NativeSocketConstructor {
  /** Takes ownership of `fd`; if the constructor throws, the fd is still the caller's. */
  new (
    fd: number,
    type: number,
    options?: NativeSocketOptions,
    onMessage?: NativeMessageCallback,
    onAccept?: NativeAcceptCallback,
  ): NativeSocket;
}

/** Watches a pidfd (a duplicate of it): onExit() runs once, when its process has exited. */
export interface NativeExitWatch {
  close(): void;
  ref(): void;
  unref(): void;
}

/**
 * The remote transport's channel on two fds (native/relay_pump.h): frames
 * in and out, and the relayed streams whose local end is a pipe or a
 * stream socket, pumped in C++. onEvent(kind, ...):
 * 0 (type, id, payload) a frame that is not a pumped stream's;
 * 1 (stream, half) a pumped stream's half ended (1 out, 2 in);
 * 2 () the output's backlog drained;
 * 3 (err, message) the input ended (0), failed (-errno) or broke the protocol (1).
 */
export interface NativeRelayPump {
  send(type: number, id: number, payload?: Uint8Array): void;
  /** The pump owns `fd` from here on (closed when the stream ends or is removed). */
  addStream(id: number, fd: number, read: boolean, write: boolean, socket: boolean): void;
  /** Sends what the stream's fd holds now; true once its end of file went out too. */
  flush(id: number): boolean;
  removeStream(id: number): void;
  /** [in, out]: DATA bytes received and sent so far. */
  streamBytes(id: number): [number, number] | undefined;
  stopInput(): void;
  endOutput(): void;
  closeOutput(): void;
  /** Closes everything; returns the tickets of its background closes (its stream sockets') not done yet. */
  close(): number[];
  /** The tickets of the background closes of its stream sockets not done yet. */
  closeTickets(): number[];
  readonly queuedBytes: number;
  readonly congested: boolean;
  readonly outputOpen: boolean;
}

export type RelayPumpEvent = (kind: number, a?: number, b?: number | string, payload?: Buffer) => void;

export interface NativeBinding extends TerminateWakeBinding {
  Socket: NativeSocketConstructor;
  RelayPump: {
    /** Its stream sockets close on the background closer as `closeOwner`'s (default 0). */
    new (inFd: number, outFd: number, onEvent: RelayPumpEvent, closeOwner?: number): NativeRelayPump;
    /** The wire format's numbers as the pump has them. */
    readonly constants: Readonly<Record<'HEADER_BYTES' | 'DATA' | 'CREDIT' | 'EOF' | 'STOP' | 'MAX_DATA_BYTES' | 'MAX_FRAME_BYTES' | 'STREAM_WINDOW' | 'CONGESTED_BYTES', number>>;
  };
  ExitWatch: new (pidfd: number, onExit: () => void) => NativeExitWatch;
  FrameChannel: new (socket: NativeSocket, callbacks: NativeFrameChannelCallbacks) => NativeFrameChannel;
  FdBudget: new (limit: number, parent?: NativeFdBudget) => NativeFdBudget;
  /**
   * `makeError` builds the addon's errors; `intArray` (optional) turns the
   * first `n` numbers of an Int32Array into a plain array: the addon makes
   * its arrays of fds with it from 16 numbers on, one call where Node-API
   * would set each element on its own.
   */
  init(
    makeError: (kind: string, errno: number, syscall: string, details: Record<string, unknown>) => Error,
    intArray?: (list: Int32Array, n: number) => number[],
  ): void;
  /** Sets (or replaces) the dispatcher of the batched sockets' messages (NativeSocketOptions.batch). */
  setMessageBatchHandler(dispatcher: NativeBatchDispatcher): void;
  /**
   * `own`: the sockets are fdbridge's own (a transport's connection), not a
   * caller's: numbered at or above fdFloor() and registered as fds fdbridge
   * holds for itself (refused with EBADF where a caller names an fd, see
   * disown), so that one never takes a number the caller closed and may
   * still name. So for listen, connect, dgramSocket, peerPidfd and
   * pidfdOpen; a connection accepted on a registered listening socket is
   * registered too. Closing (close, closeInBackground, a Socket's close)
   * unregisters them.
   */
  socketpair(type: number, own?: boolean): [number, number];
  /**
   * Hands the fds to the background closer (close(2) can block: a TCP
   * socket with SO_LINGER and unsent data waits out its linger time) as one
   * batch of `owner`'s (default 0): one owner's closes run on a few of the
   * closer's threads at most, so that its closes that block hold back only
   * its own (fd_ops.h). Returns the batch's ticket (0 for no fds: done).
   * `given`: the fds are the copies `owner`'s ledger was given (dupHigh's
   * and dupAll's `givenTo`), and each is closed only while its number still
   * holds that copy: one the program closed behind fdbridge's back is left
   * alone, whatever took its number since (ticket 0 when none is left).
   */
  closeInBackground(fds: readonly number[], owner?: number, given?: boolean): number;
  /**
   * closeInBackground of fds a command holds as its client's
   * (CommandContext.closeClientFds: adopted, or received by the command
   * itself), as `owner`'s: one that is one of fdbridge's own fds now (a copy
   * given to a command and not adopted, another connection's copy or socket
   * that took the number of one the command closed by itself) is refused,
   * checked as they are handed over: a SystemError EBADF naming it (`fd`),
   * nothing handed over; so is one whose `expected[i]` is set and whose
   * number holds another file now, or none (an adopted fd the command closed
   * itself: the file disownGiven gave), and one whose number's install
   * generation is not `installs[i]` (installGenerations as the command held
   * it: an fd fdbridge put there since is another's, of whatever file). A
   * list naming one number twice is a TypeError, nothing handed over (the
   * second close could close another fd that took the number after the
   * first). A number one of fdbridge's fds takes after that, or another
   * install there, is left alone by the close. Returns the batch's ticket.
   */
  closeClientFds(fds: readonly number[], owner?: number, expected?: ReadonlyArray<FileKey | undefined>, installs?: readonly number[]): number;
  /** Whether every fd of the batch `ticket` is closed. */
  backgroundCloseDone(ticket: number): boolean;
  /**
   * Calls `callback` on this thread's event loop (never synchronously) once
   * every batch named is done; keeps the loop alive until then, unless
   * `keepAlive` is false.
   */
  afterBackgroundCloses(tickets: number | readonly number[], callback: () => void, keepAlive?: boolean): void;
  /** The tickets of every batch not closed yet. */
  openBackgroundCloses(): number[];
  /** Background closes finished since the process started. */
  backgroundClosesDone(): number;
  /** The background closer's threads now, how many are in a close, its caps (shared, per owner), and its reserve (see reserveCloserThreads). */
  closerThreads(): { threads: number; busy: number; made: number; max: number; perOwner: number; reserve: number; reservedOwners: number; minReserve: number; maxReserve: number };
  /**
   * Keeps a thread of the closer's reserve for `owners` more owners
   * (negative: gives them back); returns the reserve now, at least
   * minReserve and at most maxReserve.
   */
  reserveCloserThreads(owners: number): number;
  /**
   * Writes all of `data` into a copy of `fd` (made now: a SystemError if it
   * cannot be) on a thread of `owner`'s lane, never libuv's pool: one
   * owner's writes that block (a pipe nobody reads) hold back only that
   * owner's (lane_writer.h). A pipe, FIFO or socket is written with
   * RWF_NOWAIT, waiting in poll for room, so the client's O_NONBLOCK is left
   * alone and the write can be cancelled. `callback` runs on this thread's
   * event loop once the copy is closed: the bytes written, or -errno
   * (-ECANCELED: laneWriteCancel(group) ended it; laneTargetRefusal's
   * -errno, nothing written, for a file that takes no text).
   */
  laneWrite(fd: number, data: Uint8Array, owner: number, group: number, callback: (result: number) => void): void;
  /**
   * 0 when laneWrite writes into `fd` (borrowed): a regular file, pipe or
   * FIFO, socket or character device open for writing; else -errno: EBADF
   * (no fd, or one not open for writing: O_PATH, O_RDONLY), EISDIR (a
   * directory), EINVAL (an anonymous inode: eventfd, timerfd, signalfd,
   * epoll...; a block device). Asks no filesystem (lane_writer.h).
   */
  laneTargetRefusal(fd: number): number;
  /** A new cancel group for laneWrite (unique in the process). */
  laneGroup(): number;
  /** Ends `group`'s writes: queued ones at once, one waiting for room as its thread wakes, one inside write(2) when it returns. */
  laneWriteCancel(group: number): void;
  /** The lanes' threads, those in a write, the writes waiting for a thread, the owners with a lane, and the threads an owner may have. */
  laneWriters(): { threads: number; busy: number; queued: number; owners: number; perOwner: number };
  /**
   * The numbers of the fds the lanes hold now: each write's copy, from
   * laneWrite until the background closer has it (read before
   * backgroundCloseFds, a copy is in one of the two), and the eventfd of a
   * write waiting for its fd to take more. A copy stays for as long as its
   * write(2) does not return (a terminal whose output is stopped).
   */
  laneWriterFds(): number[];
  /** fds given to closeInBackground and not yet closed. */
  backgroundClosesPending(): number;
  /** An owner for closeInBackground of this process's own (its closes run on any shared closer thread), never given before in this process, whichever thread asks. */
  newCloseOwner(): number;
  /** Their numbers: those no closer thread has taken yet (open, the closer's), and those being closed (in the table until close(2) takes them out). */
  backgroundCloseFds(): { queued: number[]; running: number[] };
  /**
   * Of those, the fds peers gave us (closeInBackground's, and a socket's
   * given fds); not a closed socket's own fd. With `owner`: that owner's only.
   */
  backgroundClosesOfPeerFds(owner?: number): number;
  /**
   * The others, sockets of ours (a closed socket's own fd, when it uses the
   * background closer), that are held up: an owner's count while its closes
   * have no thread to spare, 0 otherwise (native/fd_ops.h). With `owner`:
   * that owner's only.
   */
  backgroundClosesOfOwnSockets(owner?: number): number;
  /** For each fd, whether poll(2) says it is readable (or hung up) right now. */
  pollReadable(fds: readonly number[]): boolean[];
  /** Socket objects (all environments) not yet garbage collected, open or closed. */
  socketsAlive(): number;
  /** Binds (and, but for DGRAM, listens); `passCred` sets SO_PASSCRED before bind(2). */
  listen(type: number, name: string | Uint8Array, abstract: boolean, mode: number, backlog: number, passCred?: boolean, own?: boolean): number;
  /**
   * listen(2) again on a listening socket (non-blocking), so that clients'
   * SO_PEERCRED names this process; returns the connections queued before,
   * which saw the socket's maker (native/sock_ops.h, SockListenAgain).
   */
  listenAgain(fd: number, backlog: number): number[];
  /**
   * Closes `fd`, a connection nobody takes whose receive queue may hold fds
   * a peer sent (one accepted and never served, say): shut down and
   * emptied, what was queued handed to the background closer as `owner`'s
   * (default 0), then closed here; one that cannot be emptied for certain
   * is shut down and closed in background (native/scm_rights.h,
   * ScmCloseConnection). Returns the tickets of its background closes.
   */
  closeConnection(fd: number, owner?: number): number[];
  /** An unbound DGRAM socket. */
  dgramSocket(own?: boolean): number;
  connect(type: number, name: string | Uint8Array, abstract: boolean, own?: boolean): number;
  /**
   * Whether an AF_UNIX socket of this network namespace is bound to the
   * file of device one of `devs` (stat's st_dev) and inode number whose low
   * 32 bits are `ino32` (the kernel reports no more), asked of the kernel
   * (NETLINK_SOCK_DIAG, unix_diag). A SystemError, syscall 'sock_diag', when
   * the kernel does not answer (native/sock_diag.h says when).
   */
  unixFileBound(devs: readonly number[], ino32: number): boolean;
  /** A close-on-exec duplicate at the lowest free number: for the caller's own use. */
  dup(fd: number): number;
  /**
   * A close-on-exec duplicate that fdbridge makes for itself (a pin, a
   * duplicate given to a command in this process), numbered at or above
   * fdFloor(), so that it never takes a number the caller closed and may
   * still name. EMFILE when no number is free there. `givenTo`: a copy
   * given to a command in this process, which the ledger of that closer
   * owner closes unless the command adopts it (closeInBackground with
   * `given`): its registration keeps that owner and the copy's file (one
   * statx(2) more).
   */
  dupHigh(fd: number, givenTo?: number): number;
  /**
   * dupHigh for every fd, all or none, each numbered above the highest in the
   * list and at least `above` (a batch sent in pieces passes its highest + 1):
   * a closed fd later in the list or batch fails with EBADF instead of
   * matching a fresh duplicate's number. `givenTo`: as dupHigh's.
   */
  dupAll(fds: FdList, above?: number, givenTo?: number): number[];
  /**
   * The index of the first entry dupAll would refuse with EBADF (not open,
   * or one of fdbridge's own fds), or -1. Nothing is duplicated or closed
   * (closing a copy drops this process's POSIX record locks on the file).
   */
  firstNotGivable(fds: FdList): number;
  /**
   * `fd` stays open but is no longer one fdbridge holds for itself (a
   * command adopted it). The fds fdbridge holds for itself (dupHigh,
   * dupAll, queued sends' copies, pidfdGetfd, fds a command was given and
   * has not adopted) are refused with EBADF wherever a caller names an fd
   * (dupHigh, dupAll, a socket's send, sendTo, a frame channel's dup): past the
   * floor, one of them can take a number the caller closed and still names.
   * With `registration` (registration(fd), read while the fd was open): only
   * if `fd` still has that one, for an fd of ours closed by someone else
   * (libuv, for a stream on it): a new fd of ours at that number keeps its own.
   */
  disown(fd: number, registration?: number): void;
  /**
   * disown of a copy given under the closer owner `owner` (dupHigh's and
   * dupAll's `givenTo`), only while `fd` is still that copy, its
   * registration and the file it was made with (one statx): false when the
   * program closed it behind fdbridge's back and its number holds another
   * fd of fdbridge's now (another ledger's copy, a socket: nothing done),
   * or is free, or holds another file (the copy's registration ends as
   * closed by someone else). Else the command's now: the file the copy was
   * made with (for closeClientFds' `expected`), or true when it is not known.
   */
  disownGiven(fd: number, owner: number): FileKey | boolean;
  /** The registration of `fd` as one fdbridge holds for itself (never reused), or 0 when it is not. */
  registration(fd: number): number;
  /**
   * A leak check starts (true) or stops (false) watching for fds of
   * fdbridge's that fdbridge finds closed by someone else (EBADF where it
   * closes one, or a worker's loop fd closed or holding another file at
   * the thread's teardown): their registrations end noted as such
   * (closedByOther) while any check watches. Counted per environment: a
   * stop ends one of this environment's watches (none of another's), and
   * the environment's teardown ends those still running (a worker
   * terminated mid-check).
   */
  watchClosedByOthers(on: boolean): void;
  /** Whether `registration` ended with fdbridge finding its fd closed by someone else, while a check watched. */
  closedByOther(registration: number): boolean;
  /**
   * fdbridge found `fd`, held under `registration`, closed or holding
   * another file where something of its own (a libuv stream) is about to
   * close it: the registration ends, noted for closedByOther while a check
   * watches. Nothing for a registration `fd` no longer has.
   */
  foundClosedByOther(fd: number, registration: number): void;
  /**
   * `fd`, one of fdbridge's, is a libuv stream's to close from now on:
   * should this environment end first (a worker terminated), its teardown,
   * which comes after Node has closed every handle, only unregisters it.
   * Returns its registration (as registration(fd)).
   */
  runtimeCloses(fd: number): number;
  /**
   * That stream (runtimeCloses) begins its close: libuv closes `fd` now. Until
   * then a new fd of fdbridge's that would take the number (someone else
   * closed the stream's) is moved to another, the stream's close being
   * libuv's, by number (fd_ops.h: FdMarkNew). Only while `fd` still has
   * `registration`.
   */
  runtimeClosing(fd: number, registration: number): void;
  /**
   * The child process `pid`, just spawned from this thread, is reaped by
   * this environment's teardown if Node has not reaped it by then (after a
   * grace of 5 s it is sent SIGKILL): Node reaps a child only through the
   * event loop of the thread that spawned it, and a terminated worker's loop
   * is gone. The teardown closes the fds this environment held for itself
   * only once these processes have exited. Returns an id for unwatchChild,
   * to call once Node has reaped the process ('exit'); 0 when no pidfd could
   * be opened for it (then Node alone reaps it). Ends the spawn begun
   * (spawnBegins).
   */
  watchChild(pid: number): number;
  /**
   * This thread is about to spawn a process it will watch: until
   * watchChild (or spawnEnds, when no process was made), should this
   * environment end (the JavaScript stopped anywhere, a worker terminated),
   * its teardown reaps the process as if it had been watched, found among
   * the children this thread forked since by the environment entry returned
   * ('NAME=TOKEN', a fresh random token), which the spawn must add to the
   * process's environment. '' when the process could not be told apart
   * (then none is taken).
   */
  spawnBegins(): string;
  spawnEnds(): void;
  unwatchChild(id: number): void;
  /** Ended environments whose teardown still waits for child processes to exit (watchChild) before closing what they held. */
  reapsPending(): number;
  /**
   * Registers `fd`, at the number it has, as one fdbridge holds for itself:
   * for an fd it took over without making it (a listening socket systemd
   * passed), which it closes with close or a Socket's close.
   */
  own(fd: number): void;
  /**
   * Each number's install generation now (0: none): every fd fdbridge's
   * native code puts in the process's table (a dup, a socket, a received
   * fd, a pidfd...) gives its number a new one, process-wide, never given
   * to any number before (fd_ops.h, FdInstalled). A command's hold of an fd
   * records it; closeClientFds closes the number only while it is still
   * that.
   */
  installGenerations(fds: readonly number[]): number[];
  /** A receipt tag never given before: one for each command's record of its client's fds (client-fds.ts). */
  newReceiptTag(): number;
  /**
   * A command's hold of fds a socket of its own received: each number's
   * install generation where its current install is a receipt of a socket
   * with `tag` (recordReceiptsFor) not claimed yet, which it is from now
   * on; 0 for any other number (one the caller chose, another's receipt or
   * copy, an fd made otherwise, a receipt claimed already), which is not
   * the command's. One hold of the registry's lock.
   */
  claimReceipts(fds: readonly number[], tag: number): number[];
  /**
   * Registers the fds this thread's event loop holds (its epoll fd, signal
   * pipe, async wakeup fd...) as fdbridge's until this thread exits, after
   * libuv has closed them, and ends the loop start `start`
   * (loopStartBegins) in the same step; returns how many. For the worker
   * transport's thread, whose loop opens them at the lowest free numbers as
   * it starts (see native/loop_fds.h). -1, nothing registered and the start
   * not ended, when one of them is at the number of a libuv stream of
   * fdbridge's still to close it (native/addon_env.cc OwnLoopFds): the
   * thread must end and another start be made.
   */
  ownLoopFds(start?: number): number;
  /**
   * This thread is about to start a worker thread that will call
   * ownLoopFds(start). Until then (or loopStartEnds(start), once that
   * thread is gone), a number a caller names is refused (EBADF) when the fd
   * there could be one its loop opened: see FdLoopStartBegin in
   * native/fd_ops.h for what it can and cannot tell.
   */
  loopStartBegins(): number;
  loopStartEnds(start: number): void;
  /** Loop starts not ended, in the process. */
  loopStartsOpen(): number;
  /**
   * For a test: this environment's teardown, once done (just before Node
   * closes the thread's event loop), writes one byte to the socket `fd` and
   * waits until one comes back.
   */
  testHoldTeardown(fd: number): void;
  /** How many fds fdbridge holds for itself in this process now. */
  ownedFdCount(): number;
  /** fcntl F_SETLK of the whole file (tests). */
  posixLock(fd: number, type: 'read' | 'write' | 'unlock'): void;
  /** F_OFD_GETLK of a write lock on the whole file: what it would meet (tests). */
  conflictingLock(fd: number): 'read' | 'write' | 'none';
  /**
   * Has this thread's event loop open now the fds libuv opens lazily and
   * keeps for the loop's life (the EMFILE reserve, the inotify fd).
   */
  warmLoop(): void;
  /** The lowest number dupHigh, dupAll, queued sends and pidfdGetfd use (see native/fd_ops.h). */
  fdFloor(): number;
  close(fd: number): void;
  /** close for each of `fds` in one call; what is not an open fd is passed over. How many closed. */
  closeAll(fds: FdList): number;
  /**
   * The caller's close of its own fds (closeFds): in one hold of the
   * registry's lock, refuses a list naming a number fdbridge holds for
   * itself (refuseOwnFd's), returning -1 - that number, nothing closed;
   * else closes each open one, checked and closed in that hold (the close
   * that may block done after it, on a copy above the floor:
   * native/fd_ops.h, FdCloseCallers), and returns how many it closed. What
   * is not an open fd is passed over.
   */
  closeCallers(fds: FdList): number;
  /**
   * closeCallers of one fd (closeFd, OwnedFd's close): false when fdbridge
   * holds the number for itself, nothing closed; true once closed. A number
   * not open, or a close that failed, throws (SystemError).
   */
  closeCaller(fd: number): boolean;
  /**
   * The fds a native call returns as numbers (socketpair, connect, listen,
   * dgramSocket, dup, pipe, memfd, eventfd, peerPidfd and pidfdOpen without
   * `own`, recvNow's, listenAgain's, and those a Socket's onMessage or
   * onAccept receives), unless registered as fdbridge's, are kept by this
   * environment until the library takes them (a Socket, a RelayPump or a
   * frame channel's ledger takes them, close, closeAll or closeInBackground
   * closes them) or hands them on with this call: to its caller, or to
   * another thread. Whatever is still kept when the environment ends (a
   * worker terminated between the native call and the step that takes the
   * fds: its JavaScript stops there, no catch runs) is closed then, as
   * nobody else knows those numbers. So a number must be handed over
   * before it leaves the library, never after.
   */
  handOver(fds: readonly number[]): void;
  /** The numbers this environment keeps now (see handOver), for tests. */
  unclaimedFds(): number[];
  identity(fd: number): NativeIdentity;
  /** Bit 0: FD_CLOEXEC, bit 1: O_NONBLOCK. */
  getFlags(fd: number): number;
  setCloexec(fd: number, on: boolean): void;
  setNonblock(fd: number, on: boolean): void;
  /** [fd, target] rows of /proc/<pid>/fd (pid 0 or omitted: this process). */
  listFds(pid?: number): Array<[number, string]>;
  /**
   * With `files`: [fd, target, "mnt_id:ino" from fdinfo ('' when unread)]
   * rows, one walk.
   */
  listFds(pid: number, files: true): Array<[number, string, string]>;
  /** O_PATH references to the files of `fds` of process `pid` (0: this one), kept in the fd table of a thread of ours (fd_hold.h). */
  holdFiles(pid: number, fds: readonly number[]): NativeHold & { held: string[] };
  /** Drops every reference and ends the hold's thread; false when there was no such hold (released already). */
  releaseHold(hold: NativeHold): boolean;
  /** How many holds are alive in this process (tests). */
  liveHolds(): number;
  getFdLimit(): [number, number];
  setFdLimit(soft: number, hard: number): void;
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  peerPidfd(fd: number, own?: boolean): number;
  /** pipe2(O_CLOEXEC): [read end, write end]. */
  pipe(): [number, number];
  /** memfd_create(name, MFD_CLOEXEC). */
  memfd(name?: string): number;
  /** eventfd(0, EFD_CLOEXEC). */
  eventfd(): number;
  pidfdOpen(pid: number, own?: boolean): number;
  /** pidfd_getfd(2), the new fd moved at or above fdFloor(). */
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /**
   * pidfdGetfd for each of `targetFds` (at most 253), all or none, in one
   * call. With `files` (as many), each pull must be that file (device and
   * inode), else a SystemError EBADF naming the fd (`entry`), nothing kept.
   */
  pidfdGetfdAll(pidfd: number, targetFds: FdList, files?: readonly FileKey[]): number[];
  socketType(fd: number): number;
  /** Whether a socket is AF_UNIX (SO_DOMAIN), its SO_TYPE and SO_ACCEPTCONN (ENOTSOCK for anything else). */
  socketShape(fd: number): { unix: boolean; type: number; listening: boolean };
  setPassRights(fd: number, on: boolean): void;
  /** SO_PASSRIGHTS (Linux 6.16+; before, a SystemError ENOPROTOOPT). */
  getPassRights(fd: number): boolean;
  setPassCred(fd: number, on: boolean): void;
  /** SO_PASSPIDFD (Linux 6.5+): every message then brings an SCM_PIDFD, which the receive path closes. */
  setPassPidfd(fd: number, on: boolean): void;
  shutdown(fd: number, how: number): void;
  sendNow(fd: number, data: Uint8Array, fds?: readonly number[]): number;
  recvNow(fd: number, bufferSize: number, maxFds: number): NativeMessage | null;
  /** native/frame_format.h seen from JS (for the cross-codec test). */
  frameCodec: {
    /** null for a malformed frame; `fds` for a frame listing fd numbers, and `files` for a GETFD's pins. */
    decode(data: Uint8Array, nfds: number): NativeDecodedFrame | null;
    encodeFdList(type: number, id: number, fds: readonly number[]): Buffer;
    encodeGetfd(id: number, fds: readonly number[], files: ReadonlyArray<{ dev: string; ino: string }>): Buffer;
    constants: Record<string, number>;
  };
  constants: {
    SOCK_STREAM: number;
    SOCK_DGRAM: number;
    SOCK_SEQPACKET: number;
    SHUT_RD: number;
    SHUT_WR: number;
    SHUT_RDWR: number;
    MAX_FDS_PER_MESSAGE: number;
    /** From this many numbers on, the addon's arrays of fds are made from an Int32Array, and fdList passes one. */
    INT_ARRAY_VIA_JS: number;
    MAX_SOCKET_PATH_BYTES: number;
  };
}

/**
 * The addon's file: the one FDBRIDGE_ADDON names (a path, relative to the
 * package root or absolute: the sanitizer build, build/Sanitize/fdbridge.node,
 * run by `npm run test:sanitize`); else a build from source (build/Release,
 * then build/Debug) when there is one, else the prebuilt binary for this
 * platform, arch and libc (prebuilds/<platform>-<arch>/fdbridge.napi.<libc>.node:
 * one Node-API build serves every supported Node), found by node-gyp-build's
 * rules. The variable is inherited, so the far sides a test starts (children,
 * helper daemons) load the same file.
 */
function addonPath(): string {
  const named = process.env['FDBRIDGE_ADDON'];
  if (named !== undefined && named !== '') {
    const file = resolve(packageRoot, named);
    if (!existsSync(file)) throw new Error(`fdbridge: FDBRIDGE_ADDON names ${file}, which does not exist (npm run build:sanitize builds build/Sanitize/fdbridge.node)`);
    return file;
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(packageRoot);
  } catch (err) {
    const checkout = existsSync(join(packageRoot, 'tsconfig.json'));
    throw new Error(
      `fdbridge: no native addon for ${process.platform}-${process.arch} (${existsSync('/etc/alpine-release') ? 'musl' : 'glibc'}), ` +
        `Node ${process.versions.node}: none was built from source in ${join(packageRoot, 'build')}, and the package has no prebuilt ` +
        `binary for this platform. ${checkout ? 'Run `npm run build`' : 'Run `npm rebuild fdbridge`'} (building needs python3, make and g++).`,
      { cause: err },
    );
  }
}

function load(): NativeBinding {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const binding = require(addonPath()) as NativeBinding;
  binding.init((kind, errno, syscall, details) => {
    switch (kind) {
      case 'eof':
        return new EofError(`${syscall}: the peer closed the socket (end of file)`);
      case 'truncated':
        return new TruncatedError(
          details['what'] === 'data' ? 'data' : 'control',
          Number(details['fdsClosed'] ?? 0),
          Number(details['bytes'] ?? 0),
          syscall,
          Buffer.isBuffer(details['data']) ? details['data'] : undefined,
        );
      case 'queuefull': {
        const queue = {
          queuedBytes: Number(details['queuedBytes'] ?? 0),
          queuedMessages: Number(details['queuedMessages'] ?? 0),
          limit: Number(details['limit'] ?? 0),
        };
        if (details['waitingReceivers'] === undefined) {
          return new QueueFullError(
            `${syscall}: the send queue is full (${queue.queuedMessages} messages, ${queue.queuedBytes} bytes ` +
              `waiting for the peer to read; limit ${queue.limit} bytes): nothing was sent; wait for earlier sends to leave`,
            queue,
          );
        }
        const waitingReceivers = Number(details['waitingReceivers']);
        return new QueueFullError(
          `${syscall}: the datagrams waiting (${queue.queuedMessages}) wait for ${waitingReceivers} receivers already, ` +
            'the most one socket waits for at once: nothing was sent; wait for earlier sends to leave',
          { ...queue, waitingReceivers },
        );
      }
      case 'notclients': {
        const fd = Number(details['fd']);
        return new SystemError(
          errno,
          syscall,
          `${syscall}: fd ${fd} is not the client's to close: it is one of fdbridge's own fds now (a copy given to the command ` +
            "and not adopted, or another connection's fd or socket that took the number after the command closed the client's fd " +
            "itself), or another file, or another fd fdbridge put at the number since the command got it (another command's, of " +
            'whatever file); nothing was closed',
          { entry: { index: Number(details['index']), fd } },
        );
      }
      case 'swappedpin': {
        const fd = Number(details['fd']);
        return new SystemError(
          errno,
          syscall,
          `${syscall}: the client's fd ${fd} is not the file its request named: the client's pin at that number was closed ` +
            "behind fdbridge's back and the number holds another file (the client program's); nothing was pulled",
          { entry: { index: Number(details['index']), fd } },
        );
      }
      case 'ownfd':
        return ownFdRefusal(Number(details['fd']), syscall, SECOND_OWNER);
      default:
        return new SystemError(errno, syscall);
    }
  }, intArray);
  installTerminateWake(binding);
  return binding;
}

/**
 * The first `n` numbers of `list` as a plain array (NativeBinding.init). It
 * reads `n` rather than `list.length`, and sets each element as
 * napi_set_element would.
 */
function intArray(list: Int32Array, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out[i] = list[i] as number;
  return out;
}

/** What ended a dupSync without a number. */
export type SyncDupOutcome =
  | { status: 'reply'; reply: Buffer; fdsClosed: number }
  /** `late` settles with the request's late reply (absent only when no promise could be made). */
  | { status: 'timeout'; late?: Promise<number> }
  /** As 'timeout', for a worker thread being terminated (src/terminate-wake.ts). */
  | { status: 'woken'; late?: Promise<number> }
  | { status: 'gone'; errno: number };

export const native: NativeBinding = load();
export const constants = native.constants;
const INT_ARRAY_VIA_JS = constants.INT_ARRAY_VIA_JS;

/**
 * An fd list as the addon takes it: an array of numbers, or an Int32Array
 * of them (fdList), which it reads in one copy instead of an element at a
 * time and checks as it checks an array of the same numbers.
 */
export type FdList = readonly number[] | Int32Array;

/**
 * `fds` for the addon's fd-list arguments: from INT_ARRAY_VIA_JS numbers on,
 * an Int32Array of them when every entry is an integer an int32 holds, so
 * the addon copies the list at once (a Node-API read per element costs
 * about 65 ns: 16 µs for a batch of 253); otherwise the list itself, which
 * the addon reads element by element and refuses with the error it gives
 * any such list (a hole, a fraction, NaN, a string, past 2^31 - 1). A
 * negative integer is passed as it is in either form: the addon's range
 * check is the same for both.
 */
export function fdList(fds: FdList): FdList {
  if (fds instanceof Int32Array) return fds;
  const n = fds.length;
  if (n < INT_ARRAY_VIA_JS) return fds;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const fd = fds[i];
    // `fd | 0` is fd itself only for an int32 (-0 reads as 0, as the addon takes it).
    if (typeof fd !== 'number' || (fd | 0) !== fd) return fds;
    out[i] = fd;
  }
  return out;
}

/** A batch's fd lists read in one walk (checkedFdLists). */
export interface CheckedFdLists {
  /** The batch in pieces of at most `size` entries, each as fdList would give it for the addon. */
  lists: FdList[];
  /** One more than the highest entry (0 for an empty batch), at most 2^31 - 1. */
  above: number;
}

/**
 * A batch's fds, checked and made the addon's lists in one walk instead of
 * a check, a copy per piece and fdList's conversion: `check(fd, i)` is
 * called for each entry that is not a non-negative int32 and throws for
 * any that is not a non-negative integer (the first one met decides the
 * error); a piece with an entry it lets through (an integer past
 * 2^31 - 1) is a plain array, as fdList leaves it, for the addon to
 * refuse. Each entry is read once, so what was checked is what is sent;
 * a piece is allocated only once the walk reaches it (a list whose length
 * alone was set fails at its first index, not at an 8 GB allocation).
 */
export function checkedFdLists(fds: readonly unknown[], size: number, check: (fd: unknown, index: number) => void): CheckedFdLists {
  const n = fds.length;
  const lists: FdList[] = [];
  let above = 0;
  for (let start = 0; start < n; start += size) {
    const m = Math.min(size, n - start);
    let list: number[] | Int32Array = m < INT_ARRAY_VIA_JS ? new Array<number>(m) : new Int32Array(m);
    for (let k = 0; k < m; k++) {
      const fd = fds[start + k];
      // `fd | 0` is fd itself only for an int32 (-0 reads as 0, as the addon takes it).
      if (typeof fd !== 'number' || (fd | 0) !== fd || fd < 0) {
        check(fd, start + k);
        if (list instanceof Int32Array) list = Array.from(list.subarray(0, k));
      }
      const v = fd as number;
      list[k] = v;
      // Stryker disable next-line ConditionalExpression,EqualityOperator,ArithmeticOperator: a lower `above` changes no outcome while every copy is registered as fdbridge's (a registered number is refused as closed, EBADF); this is the second guard
      if (v >= above) above = v + 1;
    }
    lists.push(list);
  }
  // At most 2^31 - 1, the highest number the addon takes: a list holding
  // 2^31 - 1 itself (never open: Linux's nr_open stops below it) then fails
  // on that entry with EBADF, as any closed fd does.
  return { lists, above: Math.min(above, 0x7fffffff) };
}

