/**
 * Hostile and broken peers, shared by the 'fault' scenarios and the jest
 * suites (not a scenario itself). Two catalogues:
 *
 * - bad requests: what a client may throw at a command's side (a helper
 *   daemon, a child's entry, serveConnection in-process);
 * - bad replies: what a fake command's side may throw at a client.
 *
 * and the drivers that send one on a raw socket and *prove* it was
 * rejected: the far side ended that connection (EOF), sent no fd back, and
 * every fd we attached was closed over there. The fds we attach are copies
 * of one pipe's write end, so "every copy closed" is observable from here,
 * whatever process the far side is: once we close our own write end, the
 * read end reports end-of-file only when no copy is left anywhere (in the
 * far side's fd table or in flight in a socket).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readSync } from 'node:fs';
import { join } from 'node:path';

import { closeFds, EofError, makePipe, PROBE_COMMAND, setFdFlags, SystemError, UnixSocket, type SocketAddress } from '../../src';
import { packageRoot } from '../../src/paths';
import { commandRequest } from '../../src/command';
import {
  encodeEmpty,
  encodeFdList,
  encodeGetfd,
  encodeJson,
  FRAME_SOCKET_OPTIONS,
  FrameType,
  HEADER_BYTES,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
} from '../../src/protocol';
import { rawSocketPair, setPassRights } from '../../src/testing';
import type { Rng } from '../../harness/rng';

/** SCM_MAX_FD: the most fds one sendmsg can carry. */
export const MAX_FDS = 253;

/** A raw frame: header (type, flags, reserved, id) and payload, nothing checked. */
export function rawFrame(type: number, id: number, payload: Buffer = Buffer.alloc(0), flags = 0, reserved = 0): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES + payload.length);
  buf[0] = type & 0xff;
  buf[1] = flags & 0xff;
  buf.writeUInt16LE(reserved & 0xffff, 2);
  buf.writeUInt32LE(id >>> 0, 4);
  payload.copy(buf, HEADER_BYTES);
  return buf;
}

/** `n` random bytes. */
export function randomBytes(rng: Rng, n: number): Buffer {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = rng.int(0, 255);
  return buf;
}

/** Random bytes that are certainly not a frame header (a non-zero flags byte). */
export function garbage(rng: Rng, n: number): Buffer {
  const buf = randomBytes(rng, Math.max(n, 2));
  buf[1] = rng.int(1, 255);
  return buf;
}

/** A frame longer than any receiver accepts (MSG_TRUNC there), still within one SEQPACKET send. */
export function oversized(rng: Rng, type: number): Buffer {
  // The sender's limit is SO_SNDBUF less 32 bytes (208 KiB by default):
  // MAX_FRAME_BYTES (192 KiB) + up to 8 KiB stays below it.
  return rawFrame(type, 1, Buffer.alloc(MAX_FRAME_BYTES - HEADER_BYTES + rng.int(1, 8192), 0x7b));
}

export function helloFrame(pidfdProbe?: number): Buffer {
  const hello =
    pidfdProbe === undefined
      ? { version: PROTOCOL_VERSION, command: commandRequest(PROBE_COMMAND) }
      : { version: PROTOCOL_VERSION, command: commandRequest(PROBE_COMMAND), pull: 'pidfd', probeFd: pidfdProbe };
  return encodeJson(FrameType.HELLO, 0, hello);
}

// ---------------------------------------------------------------------------
// Bad requests (client -> command's side)

export interface BadRequest {
  /** kebab-case, for reports. */
  name: string;
  /** 'fresh': the first message on a new connection; 'ready': after HELLO was answered with READY. */
  phase: 'fresh' | 'ready';
  data: Buffer;
  /** How many fds to attach (0..253). */
  fds: number;
  /**
   * What rejects it: 'end' (the far side closes the connection) or
   * 'kernel' (SO_PASSRIGHTS: the send itself fails with EPERM; on a kernel
   * without the option the far side must end the connection instead).
   */
  rejectedBy: 'end' | 'kernel';
}

/**
 * Requests no correct client sends. `pidfd`: the connection asks for pidfd
 * pulls (GETFD is then legal, and any fd over the socket is refused).
 */
export function badRequests(rng: Rng, options: { pidfd?: boolean } = {}): BadRequest[] {
  const some = (): number => rng.int(1, MAX_FDS);
  const call = encodeJson(FrameType.CALL, 7, { method: 'echo', args: [1] });
  const list: BadRequest[] = [
    { name: 'random-bytes-first', phase: 'fresh', data: garbage(rng, rng.int(8, 64)), fds: 0, rejectedBy: 'end' },
    { name: 'random-bytes-with-fds', phase: 'ready', data: garbage(rng, rng.int(2, 64)), fds: some(), rejectedBy: 'end' },
    { name: 'short-header', phase: 'ready', data: randomBytes(rng, rng.int(1, HEADER_BYTES - 1)), fds: 0, rejectedBy: 'end' },
    { name: 'short-header-with-fds', phase: 'fresh', data: randomBytes(rng, rng.int(1, HEADER_BYTES - 1)), fds: some(), rejectedBy: 'end' },
    { name: 'empty-message-with-fds', phase: 'ready', data: Buffer.alloc(0), fds: some(), rejectedBy: 'end' },
    { name: 'call-before-hello', phase: 'fresh', data: call, fds: 0, rejectedBy: 'end' },
    { name: 'dup-before-hello', phase: 'fresh', data: rawFrame(FrameType.DUP, 1), fds: some(), rejectedBy: 'end' },
    { name: 'hello-with-253-fds', phase: 'fresh', data: helloFrame(), fds: MAX_FDS, rejectedBy: 'end' },
    { name: 'hello-malformed-json', phase: 'fresh', data: rawFrame(FrameType.HELLO, 0, Buffer.from('{"version":1,')), fds: 0, rejectedBy: 'end' },
    {
      name: 'hello-wrong-version',
      phase: 'fresh',
      data: encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION + 1, command: PROBE_COMMAND }),
      fds: 0,
      rejectedBy: 'end',
    },
    { name: 'second-hello', phase: 'ready', data: helloFrame(), fds: 0, rejectedBy: 'end' },
    { name: 'second-hello-with-fds', phase: 'ready', data: helloFrame(), fds: some(), rejectedBy: 'end' },
    { name: 'call-with-253-fds', phase: 'ready', data: call, fds: MAX_FDS, rejectedBy: 'end' },
    { name: 'unknown-type-with-fds', phase: 'ready', data: rawFrame(rng.int(13, 255), 1), fds: some(), rejectedBy: 'end' },
    { name: 'nonzero-flags-dup', phase: 'ready', data: rawFrame(FrameType.DUP, 1, undefined, rng.int(1, 255)), fds: some(), rejectedBy: 'end' },
    { name: 'nonzero-reserved-dup', phase: 'ready', data: rawFrame(FrameType.DUP, 1, undefined, 0, rng.int(1, 0xffff)), fds: some(), rejectedBy: 'end' },
    { name: 'dup-ok-from-client', phase: 'ready', data: encodeFdList(FrameType.DUP_OK, 1, [3]), fds: 0, rejectedBy: 'end' },
    { name: 'dup-ok-garbage-length', phase: 'ready', data: rawFrame(FrameType.DUP_OK, 1, randomBytes(rng, 3)), fds: 1, rejectedBy: 'end' },
    { name: 'result-from-client', phase: 'ready', data: encodeJson(FrameType.RESULT, 1, { value: 1 }), fds: 0, rejectedBy: 'end' },
    { name: 'closed-from-client', phase: 'ready', data: encodeEmpty(FrameType.CLOSED, 1), fds: 0, rejectedBy: 'end' },
    { name: 'release-bad-length', phase: 'ready', data: rawFrame(FrameType.RELEASE, 1, randomBytes(rng, 5)), fds: 0, rejectedBy: 'end' },
    { name: 'close-with-payload', phase: 'ready', data: rawFrame(FrameType.CLOSE, 1, randomBytes(rng, 4)), fds: 0, rejectedBy: 'end' },
    { name: 'oversized-frame-first', phase: 'fresh', data: oversized(rng, FrameType.HELLO), fds: some(), rejectedBy: 'end' },
  ];
  if (options.pidfd) {
    // fds never travel over a set-up pidfd connection: the kernel refuses
    // them, whatever frame they come with.
    for (const input of list) if (input.phase === 'ready' && input.fds > 0) input.rejectedBy = 'kernel';
    list.push(
      { name: 'dup-on-pidfd-connection', phase: 'ready', data: rawFrame(FrameType.DUP, 1), fds: some(), rejectedBy: 'kernel' },
      { name: 'oversized-dup-on-pidfd-connection', phase: 'ready', data: oversized(rng, FrameType.DUP), fds: some(), rejectedBy: 'kernel' },
    );
  } else {
    list.push(
      { name: 'dup-with-payload', phase: 'ready', data: rawFrame(FrameType.DUP, 1, randomBytes(rng, 4 * rng.int(1, 4))), fds: some(), rejectedBy: 'end' },
      { name: 'dup-without-fds', phase: 'ready', data: rawFrame(FrameType.DUP, 1), fds: 0, rejectedBy: 'end' },
      { name: 'getfd-without-pidfd', phase: 'ready', data: encodeGetfd(1, [0], [{ dev: 0n, ino: 0n }]), fds: 0, rejectedBy: 'end' },
      { name: 'oversized-dup', phase: 'ready', data: oversized(rng, FrameType.DUP), fds: some(), rejectedBy: 'end' },
    );
  }
  return list;
}

// ---------------------------------------------------------------------------
// Proving a rejection

export interface Rejection {
  /** 'end': the far side closed the connection; 'kernel': the send failed with EPERM (SO_PASSRIGHTS). */
  how: 'end' | 'kernel';
  /** Frame types the far side sent before it ended (e.g. ERROR for a wrong version). */
  replies: number[];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Resolves once `readFd` (non-blocking) reports end-of-file: no write end
 * is left anywhere. No deadline of its own: an fd the far side never
 * closes holds the caller until its own bound (jest's test timeout, the
 * runner's typed RowTimeout) fails it.
 */
export async function pipeDrained(readFd: number): Promise<void> {
  const buf = Buffer.alloc(64);
  for (;;) {
    try {
      if (readSync(readFd, buf, 0, buf.length, null) === 0) return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
    await sleep(5);
  }
}

function isPeerGone(err: unknown): boolean {
  return err instanceof EofError || (err instanceof SystemError && (err.code === 'ECONNRESET' || err.code === 'EPIPE'));
}

/** A raw frame socket for a hostile client (the receive buffer takes any frame whole). */
export function rawSocket(fd: number): UnixSocket {
  return new UnixSocket(fd, 'seqpacket', { bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
}

/** Connects a raw frame socket to a helper's address (a path, or `@name`). */
export function connectRaw(socketPath: string): Promise<UnixSocket> {
  const address: SocketAddress = socketPath.startsWith('@') ? { abstract: socketPath.slice(1) } : socketPath;
  return UnixSocket.connect(address, { kind: 'seqpacket', bufferSize: FRAME_SOCKET_OPTIONS.bufferSize });
}

/** Sends HELLO (for PROBE_COMMAND) and waits for READY. */
export async function sayHello(socket: UnixSocket, options: { pidfd?: boolean } = {}): Promise<void> {
  await socket.send(helloFrame(options.pidfd ? socket.fd : undefined));
  const m = await socket.receive();
  closeFds(m.fds);
  if (m.fds.length > 0 || m.data[0] !== FrameType.READY) {
    throw new Error(`HELLO was answered with a frame of type ${m.data[0]} and ${m.fds.length} fd(s), not READY: ${m.data.toString('utf8', HEADER_BYTES)}`);
  }
}

/**
 * Sends `input` on `socket` (HELLO first for phase 'ready') and proves it
 * was rejected: the far side ended the connection without sending an fd,
 * or (rejectedBy 'kernel', or phase 'fresh' with `refusesFdsBeforeHello`)
 * the kernel refused the fds with EPERM; either way every attached fd is
 * closed everywhere (pipe end-of-file). Throws, naming the input,
 * otherwise. The caller closes `socket`.
 */
export async function sendBadRequest(
  socket: UnixSocket,
  input: BadRequest,
  options: { pidfd?: boolean; refusesFds?: boolean; refusesFdsBeforeHello?: boolean } = {},
): Promise<Rejection> {
  // Whether the far side is expected to refuse fds in the kernel: a pidfd
  // connection does, where the kernel has SO_PASSRIGHTS; a helper daemon's
  // connection does until its READY.
  const refuses =
    input.phase === 'fresh' && options.refusesFdsBeforeHello === true
      ? kernelHasPassRights()
      : (options.refusesFds ?? (options.pidfd === true && kernelHasPassRights())) && input.rejectedBy === 'kernel';
  const fail = (why: string): Error => new Error(`bad request ${input.name}: ${why}`);
  if (input.phase === 'ready') await sayHello(socket, options);
  const [readEnd, writeEnd] = makePipe();
  setFdFlags(readEnd, { nonblock: true });
  let writeOpen = true;
  try {
    const fds = new Array<number>(input.fds).fill(writeEnd);
    let how: Rejection['how'] = 'end';
    try {
      await socket.send(input.data, fds);
    } catch (err) {
      if (input.fds > 0 && err instanceof SystemError && err.code === 'EPERM') {
        how = 'kernel';
      } else if (!isPeerGone(err)) {
        throw err;
      }
    }
    if (how === 'end' && input.fds > 0 && refuses) {
      throw fail('the fds were sent: the far side does not refuse fds (SO_PASSRIGHTS)');
    }
    if (how === 'kernel' && !refuses) {
      throw fail('the kernel refused the fds (EPERM), but this side should have received and rejected them');
    }
    const replies: number[] = [];
    if (how === 'end') {
      for (;;) {
        let m: { data: Buffer; fds: number[] };
        try {
          m = await socket.receive();
        } catch (err) {
          if (isPeerGone(err)) break;
          throw err;
        }
        closeFds(m.fds);
        if (m.fds.length > 0) throw fail(`the far side sent ${m.fds.length} fd(s) back`);
        replies.push(m.data.length > 0 ? (m.data[0] as number) : -1);
        if (replies.length > 4) throw fail(`the far side keeps answering (${replies.join(', ')}) instead of ending the connection`);
      }
      if (replies.some((t) => t !== FrameType.ERROR)) throw fail(`unexpected replies before the end: types ${replies.join(', ')}`);
    }
    closeFds([writeEnd]);
    writeOpen = false;
    await pipeDrained(readEnd);
    return { how, replies };
  } finally {
    closeFds(writeOpen ? [readEnd, writeEnd] : [readEnd]);
  }
}

/**
 * Whether a helper daemon's kernel refuses `input` whole (EPERM): fds sent
 * before its READY, where the kernel knows SO_PASSRIGHTS.
 */
export function refusedBeforeHello(input: BadRequest): boolean {
  return input.phase === 'fresh' && input.fds > 0 && kernelHasPassRights();
}

/** Whether this kernel knows SO_PASSRIGHTS (Linux 6.16+). Asked each time: a test may simulate an older kernel. */
export function kernelHasPassRights(): boolean {
  const [a, b] = rawSocketPair('seqpacket');
  try {
    setPassRights(a, false);
    return true;
  } catch {
    return false;
  } finally {
    closeFds([a, b]);
  }
}

// ---------------------------------------------------------------------------
// Bad replies (command's side -> client)

/** The request a fake command's side is answering. */
export interface Request {
  type: number;
  id: number;
  /** fds that came with it (a DUP), already closed by the fake. */
  fdCount: number;
}

export interface BadReply {
  name: string;
  /** The client's request that provokes it: a duplication or a call. */
  request: 'dup' | 'call';
  reply(req: Request): { data: Buffer; fds: number };
  /** 'kernel': on this kernel the client's socket refuses the fds (the fake's send fails with EPERM). */
  rejectedBy: 'client' | 'kernel';
}

/** Replies no correct command's side sends. */
export function badReplies(rng: Rng): BadReply[] {
  const some = (): number => rng.int(1, MAX_FDS);
  const fdList = (n: number): number[] => Array.from({ length: n }, () => rng.int(0, 1000));
  return [
    { name: 'result-to-no-request', request: 'call', reply: (r) => ({ data: encodeJson(FrameType.RESULT, r.id + 1000, { value: 1 }), fds: 0 }), rejectedBy: 'client' },
    { name: 'dup-ok-to-no-request', request: 'dup', reply: (r) => ({ data: encodeFdList(FrameType.DUP_OK, r.id + 1000, fdList(r.fdCount)), fds: 0 }), rejectedBy: 'client' },
    { name: 'dup-ok-one-too-many', request: 'dup', reply: (r) => ({ data: encodeFdList(FrameType.DUP_OK, r.id, fdList(r.fdCount + 1)), fds: 0 }), rejectedBy: 'client' },
    {
      name: 'dup-ok-one-too-few',
      request: 'dup',
      reply: (r) => ({ data: r.fdCount > 1 ? encodeFdList(FrameType.DUP_OK, r.id, fdList(r.fdCount - 1)) : rawFrame(FrameType.DUP_OK, r.id), fds: 0 }),
      rejectedBy: 'client',
    },
    {
      name: 'dup-ok-negative-fd',
      request: 'dup',
      reply: (r) => {
        const fds = fdList(r.fdCount);
        fds[rng.int(0, fds.length - 1)] = -rng.int(1, 0x7fffffff);
        return { data: encodeFdList(FrameType.DUP_OK, r.id, fds), fds: 0 };
      },
      rejectedBy: 'client',
    },
    { name: 'dup-ok-to-call', request: 'call', reply: (r) => ({ data: encodeFdList(FrameType.DUP_OK, r.id, [3]), fds: 0 }), rejectedBy: 'client' },
    { name: 'result-to-dup', request: 'dup', reply: (r) => ({ data: encodeJson(FrameType.RESULT, r.id, { value: 3 }), fds: 0 }), rejectedBy: 'client' },
    { name: 'dup-ok-nonzero-flags', request: 'dup', reply: (r) => ({ data: rawFrame(FrameType.DUP_OK, r.id, Buffer.alloc(4 * r.fdCount), rng.int(1, 255)), fds: 0 }), rejectedBy: 'client' },
    { name: 'dup-ok-ragged-length', request: 'dup', reply: (r) => ({ data: rawFrame(FrameType.DUP_OK, r.id, randomBytes(rng, 4 * r.fdCount + rng.int(1, 3))), fds: 0 }), rejectedBy: 'client' },
    { name: 'ready-again', request: 'call', reply: (r) => ({ data: encodeJson(FrameType.READY, r.id, { pid: 1, threadId: 0 }), fds: 0 }), rejectedBy: 'client' },
    { name: 'result-malformed-json', request: 'call', reply: (r) => ({ data: rawFrame(FrameType.RESULT, r.id, Buffer.from('{"value":')), fds: 0 }), rejectedBy: 'client' },
    { name: 'random-bytes', request: 'call', reply: () => ({ data: garbage(rng, rng.int(2, 64)), fds: 0 }), rejectedBy: 'client' },
    { name: 'short-header', request: 'dup', reply: () => ({ data: randomBytes(rng, rng.int(1, HEADER_BYTES - 1)), fds: 0 }), rejectedBy: 'client' },
    { name: 'empty-message', request: 'call', reply: () => ({ data: Buffer.alloc(0), fds: 0 }), rejectedBy: 'client' },
    { name: 'unknown-type', request: 'call', reply: (r) => ({ data: rawFrame(rng.int(13, 255), r.id), fds: 0 }), rejectedBy: 'client' },
    { name: 'oversized-reply', request: 'call', reply: () => ({ data: oversized(rng, FrameType.RESULT), fds: 0 }), rejectedBy: 'client' },
    // fds never travel from the command's side: the client's socket refuses them.
    { name: 'dup-ok-with-fds', request: 'dup', reply: (r) => ({ data: encodeFdList(FrameType.DUP_OK, r.id, fdList(r.fdCount)), fds: some() }), rejectedBy: 'kernel' },
    { name: 'result-with-253-fds', request: 'call', reply: (r) => ({ data: encodeJson(FrameType.RESULT, r.id, { value: 1 }), fds: MAX_FDS }), rejectedBy: 'kernel' },
    { name: 'dup-to-client', request: 'call', reply: (r) => ({ data: rawFrame(FrameType.DUP, r.id), fds: some() }), rejectedBy: 'kernel' },
    { name: 'oversized-reply-with-fds', request: 'dup', reply: () => ({ data: oversized(rng, FrameType.DUP_OK), fds: some() }), rejectedBy: 'kernel' },
  ];
}

/**
 * Reads the client's next request on a fake command's side (closing any
 * fds it carried) and returns it. CALL frames are reported as 'call',
 * DUP as 'dup'.
 */
export async function readRequest(socket: UnixSocket): Promise<Request> {
  const m = await socket.receive();
  closeFds(m.fds);
  return { type: m.data[0] ?? -1, id: m.data.length >= HEADER_BYTES ? m.data.readUInt32LE(4) : -1, fdCount: m.fds.length };
}

/**
 * A fake command's side answering HELLO: reads it and sends READY (naming
 * this process). Returns the HELLO's payload.
 */
export async function answerHello(socket: UnixSocket): Promise<unknown> {
  const m = await socket.receive();
  closeFds(m.fds);
  if (m.data[0] !== FrameType.HELLO) throw new Error(`expected HELLO, got a frame of type ${m.data[0]}`);
  await socket.send(encodeJson(FrameType.READY, m.data.readUInt32LE(4), { pid: process.pid, threadId: 0 }));
  return JSON.parse(m.data.toString('utf8', HEADER_BYTES)) as unknown;
}

/**
 * Sends a bad reply from a fake command's side, attaching `fds` copies of
 * a pipe's write end. Returns 'kernel' when the kernel refused the fds
 * (EPERM: the client's socket has SO_PASSRIGHTS off), else 'sent' (the
 * reply, fds and all, is on its way to the client). `drained` resolves
 * once no copy of the write end is left anywhere (client included).
 */
export async function sendBadReply(
  socket: UnixSocket,
  reply: { data: Buffer; fds: number },
): Promise<{ outcome: 'kernel' | 'sent'; drained: Promise<void> }> {
  const [readEnd, writeEnd] = makePipe();
  setFdFlags(readEnd, { nonblock: true });
  let outcome: 'kernel' | 'sent' = 'sent';
  try {
    await socket.send(reply.data, new Array<number>(reply.fds).fill(writeEnd));
  } catch (err) {
    if (!(reply.fds > 0 && err instanceof SystemError && err.code === 'EPERM')) {
      closeFds([readEnd, writeEnd]);
      throw err;
    }
    outcome = 'kernel';
  }
  closeFds([writeEnd]);
  const drained = pipeDrained(readEnd).finally(() => closeFds([readEnd]));
  return { outcome, drained };
}

// ---------------------------------------------------------------------------
// A child transport's command side, alone

/**
 * Spawns the child transport's far side (dist/src/transports/entries/child-main.js)
 * on a SEQPACKET socketpair, as the child transport does, and hands back
 * our end raw: the caller plays the client, hostile or not. `exited`
 * resolves with its exit code (1 when it ended on an error, 0 on EOF).
 */
export function spawnCommandSide(): { socket: UnixSocket; child: ChildProcess; exited: Promise<number | null> } {
  const entry = join(packageRoot, 'dist', 'src', 'transports', 'entries', 'child-main.js');
  const [mine, theirs] = rawSocketPair('seqpacket');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [entry], { stdio: ['ignore', 'ignore', 'inherit', theirs] });
  } catch (err) {
    closeFds([mine]);
    throw err;
  } finally {
    // The child has its own copy (fd 3); ours would hide its EOF.
    closeFds([theirs]);
  }
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(null));
  });
  return { socket: rawSocket(mine), child, exited };
}
