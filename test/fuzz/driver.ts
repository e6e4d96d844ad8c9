/**
 * A seeded, bounded fuzzer for the wire protocol, in three parts:
 *
 * 1. decodeFrame on random, valid and mutated frames: it must return a
 *    well-formed Frame or throw a ProtocolError, nothing else, and quickly.
 * 2. The command's receive path: sessions of random frames, each with a
 *    random number of fds (0..253), through a real socketpair into
 *    serveConnection in this process (HELLO first, mostly, so that the
 *    later frames reach a live command; a fifth of them pidfd).
 * 3. The client's receive path: a SocketConnection whose command's side
 *    (played here) answers its requests with good, mutated and random
 *    replies, some with fds attached; half the sessions simulate a kernel
 *    without SO_PASSRIGHTS so that those fds really arrive.
 *
 * Invariants checked for every session: no crash or uncaught exception;
 * the connection ends only cleanly or with a ProtocolError (or, at HELLO,
 * with the typed error the command's side reports for a bad command; or
 * EPIPE for a reply sent after the fuzzer hung up);
 * every request settles; no fd comes back; every fd sent is closed (all
 * are copies of one pipe's write end: its read end reports end-of-file).
 * The caller checks the process's fd table against its baseline.
 *
 * Used by test/fuzz/fuzz.test.ts; FDBRIDGE_FUZZ_ITERATIONS and
 * FDBRIDGE_FUZZ_SEED make a longer run (README: "Fuzzing").
 */
import { join } from 'node:path';

import { ProtocolError, RemoteError, SystemError } from '../../src/errors';
import { packageRoot } from '../../src/paths';
import {
  decodeFrame,
  encodeCall,
  encodeDup,
  encodeEmpty,
  encodeFdList,
  encodeGetfd,
  encodeJson,
  encodeResult,
  FRAME_SOCKET_OPTIONS,
  FrameType,
  HEADER_BYTES,
  MAX_FRAME_BYTES,
  PIN_BYTES,
  PROTOCOL_VERSION,
  type Frame,
} from '../../src/protocol';
import { closeFds, makeMemfd, makePipe, setFdFlags } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import { pipeDrained } from '../../scenarios/support/hostile';
import { serveConnection, type ServeStats } from '../../src/transports/serve';
import { SocketConnection } from '../../src/transports/socket-connection';
import type { Rng } from '../../harness/rng';

export const FUZZ_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'fuzz-command.js'), export: 'FuzzCommand' };

const TYPES: readonly number[] = Object.values(FrameType);
const MAX_FDS = 253;

// ---------------------------------------------------------------------------
// Generators

const STRINGS = ['', 'echo', 'fail', 'adopt', 'close', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'nope', '\u0000', 'é\u{1f600}', 'x'.repeat(300)];

/** A random JSON value, nested up to `depth`. */
export function randomJson(rng: Rng, depth = 3): unknown {
  switch (rng.int(0, depth > 0 ? 7 : 4)) {
    case 0:
      return null;
    case 1:
      return rng.next() < 0.5;
    case 2:
      return rng.pick([0, -1, 1, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, 1.5, 1e300, -0, rng.int(0, 1000)]);
    case 3:
      return rng.pick(STRINGS);
    case 4:
      return String.fromCharCode(...Array.from({ length: rng.int(0, 12) }, () => rng.int(0, 0xffff)));
    case 5:
    case 6:
      return Array.from({ length: rng.int(0, 4) }, () => randomJson(rng, depth - 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(0, 4); i > 0; i--) o[rng.pick(['module', 'export', 'args', 'version', 'command', 'pull', 'probeFd', 'value', 'name', 'message', 'code', 'pid', 'method', '__proto__'])] = randomJson(rng, depth - 1);
      return o;
    }
  }
}

function fdNumbers(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => (rng.next() < 0.05 ? -rng.int(1, 2 ** 31) : rng.int(0, 2 ** 31 - 1)));
}

/** The JSON payload a frame of `type` carries when well-formed. */
function payloadFor(rng: Rng, type: number, probeFd: number): Record<string, unknown> {
  switch (type) {
    case FrameType.HELLO:
      return rng.next() < 0.2
        ? { version: PROTOCOL_VERSION, command: FUZZ_COMMAND, pull: 'pidfd', probeFd }
        : { version: PROTOCOL_VERSION, command: FUZZ_COMMAND };
    case FrameType.READY:
      return { pid: rng.int(1, 1 << 22), threadId: rng.int(0, 8) };
    case FrameType.REFUSED:
      return { message: String(randomJson(rng, 0)) };
    case FrameType.CALL:
      return { method: rng.pick(['echo', 'echo', 'fail', 'adopt', 'nope', 'constructor', '__proto__', 'close']), args: [randomJson(rng)] };
    case FrameType.ERROR:
      return { name: 'Error', message: 'fuzz', code: 'EFUZZ' };
    default:
      return { value: randomJson(rng) };
  }
}

/** A well-formed frame of a random type. `probeFd`: what a pidfd HELLO names. */
export function validFrame(rng: Rng, type = rng.pick(TYPES), id = rng.int(0, 0xffffffff), probeFd = 0): Buffer {
  switch (type) {
    case FrameType.DUP:
      return encodeDup(id);
    case FrameType.DUP_OK:
    case FrameType.RELEASE:
      return encodeFdList(type, id, fdNumbers(rng, rng.int(1, MAX_FDS)).map(Math.abs));
    case FrameType.GETFD: {
      const fds = fdNumbers(rng, rng.int(1, MAX_FDS)).map(Math.abs);
      return encodeGetfd(id, fds, fds.map(() => ({ dev: BigInt(rng.int(0, 0xffff)), ino: BigInt(rng.int(0, 0xffffffff)) })));
    }
    case FrameType.CLOSE:
    case FrameType.CLOSED:
      return encodeEmpty(type, id);
    case FrameType.CALL: {
      const p = payloadFor(rng, type, probeFd);
      return encodeCall(id, p['method'] as string, p['args'] as unknown[]);
    }
    case FrameType.RESULT:
      return encodeResult(id, randomJson(rng));
    default:
      return encodeJson(type as (typeof FrameType)[keyof typeof FrameType], id, payloadFor(rng, type, probeFd));
  }
}

/** `frame` with one to three random mutations. */
export function mutate(rng: Rng, frame: Buffer): Buffer {
  let buf = Buffer.from(frame);
  for (let k = rng.int(1, 3); k > 0; k--) {
    switch (rng.int(0, 9)) {
      case 0: // flip bytes
        for (let i = rng.int(1, 4); i > 0 && buf.length > 0; i--) buf[rng.int(0, buf.length - 1)] = rng.int(0, 255);
        break;
      case 1: // truncate
        buf = buf.subarray(0, rng.int(0, buf.length));
        break;
      case 2: // extend
        buf = Buffer.concat([buf, Buffer.from(Array.from({ length: rng.int(1, 16) }, () => rng.int(0, 255)))]);
        break;
      case 3: // another type
        if (buf.length > 0) buf[0] = rng.next() < 0.7 ? rng.pick(TYPES) : rng.int(0, 255);
        break;
      case 4: // flags or reserved
        if (buf.length >= 4) buf[rng.int(1, 3)] = rng.int(1, 255);
        break;
      case 5: {
        // a JSON payload with one field replaced by a random value
        if (buf.length <= HEADER_BYTES) break;
        let o: unknown;
        try {
          o = JSON.parse(buf.toString('utf8', HEADER_BYTES));
        } catch {
          break;
        }
        if (typeof o !== 'object' || o === null) break;
        const rec = o as Record<string, unknown>;
        const keys = Object.keys(rec);
        const target = keys.length > 0 && rng.next() < 0.8 ? rng.pick(keys) : String(randomJson(rng, 0));
        const inner = rec[target];
        if (typeof inner === 'object' && inner !== null && !Array.isArray(inner) && rng.next() < 0.5) {
          const ik = Object.keys(inner);
          if (ik.length > 0) (inner as Record<string, unknown>)[rng.pick(ik)] = randomJson(rng);
        } else if (rng.next() < 0.2) {
          delete rec[target];
        } else {
          rec[target] = randomJson(rng);
        }
        buf = Buffer.concat([buf.subarray(0, HEADER_BYTES), Buffer.from(JSON.stringify(o))]);
        break;
      }
      case 6: // invalid UTF-8 in the payload
        if (buf.length > HEADER_BYTES) buf[rng.int(HEADER_BYTES, buf.length - 1)] = rng.pick([0x80, 0xc0, 0xff, 0xfe, 0xed]);
        break;
      case 7: // a payload length that is not a multiple of 4
        buf = Buffer.concat([buf, Buffer.alloc(rng.int(1, 3), 0xff)]);
        break;
      case 8: // a negative fd number
        if (buf.length >= HEADER_BYTES + 4) buf.writeInt32LE(-rng.int(1, 2 ** 31), HEADER_BYTES + 4 * rng.int(0, Math.floor((buf.length - HEADER_BYTES) / 4) - 1));
        break;
      default: // the payload repeated
        if (buf.length > HEADER_BYTES) buf = Buffer.concat([buf, buf.subarray(HEADER_BYTES)]);
    }
  }
  return buf;
}

/** A frame to throw at a decoder or a receiver: random bytes, valid, mutated, or (rarely) huge. */
export function randomFrame(rng: Rng, probeFd = 0): Buffer {
  const r = rng.next();
  if (r < 0.15) return Buffer.from(Array.from({ length: rng.int(0, 40) }, () => rng.int(0, 255)));
  if (r < 0.4) return validFrame(rng, undefined, undefined, probeFd);
  if (r < 0.995) return mutate(rng, validFrame(rng, undefined, undefined, probeFd));
  // Near and beyond the largest frame: a JSON string of that size.
  const size = MAX_FRAME_BYTES + rng.int(-64, 4096);
  const buf = Buffer.alloc(size, 0x61);
  buf.writeUInt32LE(rng.pick([FrameType.RESULT, FrameType.CALL, FrameType.DUP_OK]), 0);
  buf.write('{"value":"', HEADER_BYTES);
  buf.write('"}', size - 2);
  return buf;
}

/** An fd count: mostly none or a few, sometimes up to 253. */
function fdCount(rng: Rng): number {
  const r = rng.next();
  if (r < 0.5) return 0;
  if (r < 0.85) return rng.int(1, 4);
  return rng.int(5, MAX_FDS);
}

// ---------------------------------------------------------------------------
// 1. decodeFrame

export interface DecoderStats {
  iterations: number;
  decoded: Record<string, number>;
  rejected: number;
  /** The slowest single call, ms. */
  slowestMs: number;
}

/** Checks that a decoded frame agrees with the bytes it came from; throws otherwise. */
function checkFrame(frame: Frame, data: Buffer, fds: readonly number[]): void {
  const fail = (why: string): never => {
    throw new Error(`decodeFrame accepted a bad frame (${why}): ${data.subarray(0, 64).toString('hex')}`);
  };
  if (frame.type !== data[0] || !TYPES.includes(frame.type)) fail('type');
  if (data[1] !== 0 || data.readUInt16LE(2) !== 0) fail('flags');
  if (frame.id !== data.readUInt32LE(4)) fail('id');
  if (frame.type === FrameType.DUP) {
    if (data.length !== HEADER_BYTES || fds.length === 0 || frame.fds.join() !== fds.join()) fail('DUP');
    return;
  }
  if (fds.length > 0) fail('fds on a frame that carries none');
  switch (frame.type) {
    case FrameType.DUP_OK:
    case FrameType.RELEASE:
      if (frame.fds.length * 4 !== data.length - HEADER_BYTES || frame.fds.length < 1 || frame.fds.length > MAX_FDS) fail('fd list length');
      if (!frame.fds.every((fd) => Number.isInteger(fd) && fd >= 0)) fail('fd numbers');
      break;
    case FrameType.GETFD:
      if (frame.fds.length * PIN_BYTES !== data.length - HEADER_BYTES || frame.fds.length < 1 || frame.fds.length > MAX_FDS) fail('pin list length');
      if (frame.files.length !== frame.fds.length) fail('pin files');
      if (!frame.fds.every((fd) => Number.isInteger(fd) && fd >= 0)) fail('fd numbers');
      break;
    case FrameType.HELLO: {
      const h = frame.hello;
      if (!Number.isInteger(h.version) || typeof h.command.module !== 'string') fail('HELLO');
      if (h.command.export !== undefined && typeof h.command.export !== 'string') fail('HELLO export');
      if (h.command.args !== undefined && !Array.isArray(h.command.args)) fail('HELLO args');
      if (h.pull !== undefined && (h.pull !== 'pidfd' || !Number.isInteger(h.probeFd) || (h.probeFd as number) < 0)) fail('HELLO pull');
      break;
    }
    case FrameType.READY:
      if (!Number.isInteger(frame.ready.pid) || !Number.isInteger(frame.ready.threadId)) fail('READY');
      break;
    case FrameType.REFUSED:
      if (typeof frame.message !== 'string') fail('REFUSED');
      break;
    case FrameType.CALL:
      if (typeof frame.method !== 'string' || !Array.isArray(frame.args)) fail('CALL');
      break;
    case FrameType.ERROR:
      if (typeof frame.error.name !== 'string' || typeof frame.error.message !== 'string') fail('ERROR');
      break;
    case FrameType.CLOSE:
    case FrameType.CLOSED:
      if (data.length !== HEADER_BYTES) fail('payload on CLOSE/CLOSED');
      break;
    default:
      break;
  }
}

/** Runs decodeFrame `iterations` times; throws on the first broken invariant. */
export function fuzzDecoder(rng: Rng, iterations: number): DecoderStats {
  const stats: DecoderStats = { iterations, decoded: {}, rejected: 0, slowestMs: 0 };
  for (let i = 0; i < iterations; i++) {
    const data = randomFrame(rng);
    // The decoder never touches the fds: any numbers do.
    const fds = fdCount(rng) === 0 ? [] : fdNumbers(rng, rng.int(1, 3)).map(Math.abs);
    const t0 = performance.now();
    let frame: Frame | undefined;
    try {
      frame = decodeFrame(data, fds);
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        throw new Error(`decodeFrame threw ${(err as Error)?.name}: ${(err as Error)?.message} for ${data.subarray(0, 64).toString('hex')}`, { cause: err });
      }
      stats.rejected++;
    }
    stats.slowestMs = Math.max(stats.slowestMs, performance.now() - t0);
    if (frame) {
      checkFrame(frame, data, fds);
      const name = Object.keys(FrameType).find((k) => FrameType[k as keyof typeof FrameType] === frame.type) as string;
      stats.decoded[name] = (stats.decoded[name] ?? 0) + 1;
    }
  }
  return stats;
}

// ---------------------------------------------------------------------------
// Shared session plumbing

export interface SessionStats {
  sessions: number;
  frames: number;
  fdsSent: number;
  /** Sends the kernel refused (EPERM: the receiver has SO_PASSRIGHTS off). */
  refusedByKernel: number;
  /** How connections ended: 'clean', 'ProtocolError', 'helloRefused'. */
  endings: Record<string, number>;
  /** Counted by the receiving side: fds closed on arrival, protocol errors. */
  unexpectedFds: number;
  protocolErrors: number;
}

function newStats(): SessionStats {
  return { sessions: 0, frames: 0, fdsSent: 0, refusedByKernel: 0, endings: {}, unexpectedFds: 0, protocolErrors: 0 };
}

function bump(stats: SessionStats, ending: string): void {
  stats.endings[ending] = (stats.endings[ending] ?? 0) + 1;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`fuzz: ${what} did not happen within ${ms} ms (a hang)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Sends `data` with `n` copies of `fd`; 'sent', 'refused' (EPERM) or 'gone' (the peer ended). */
async function sendWith(socket: UnixSocket, data: Buffer, fd: number, n: number): Promise<'sent' | 'refused' | 'gone'> {
  try {
    await socket.send(data, new Array<number>(n).fill(fd));
    return 'sent';
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (n > 0 && code === 'EPERM') return 'refused';
    if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ECANCELED' || code === 'ERR_FDBRIDGE_CLOSED') return 'gone';
    if (code === 'EMSGSIZE') return 'sent'; // bigger than the socket can carry: never left, nothing to check
    throw err;
  }
}

// ---------------------------------------------------------------------------
// 2. The command's receive path (serveConnection)

/** Whether `data` decodes as a HELLO of this protocol version (whatever command it names). */
function isCurrentHello(data: Buffer): boolean {
  try {
    const frame = decodeFrame(data, []);
    return frame.type === FrameType.HELLO && frame.hello.version === PROTOCOL_VERSION;
  } catch {
    return false;
  }
}

/** Throws random sessions at serveConnection until `frames` frames have been sent. */
export async function fuzzCommandSide(rng: Rng, frames: number): Promise<SessionStats> {
  const stats = newStats();
  while (stats.frames < frames) {
    await commandSession(rng, stats);
  }
  return stats;
}

async function commandSession(rng: Rng, stats: SessionStats): Promise<void> {
  stats.sessions++;
  const [c, s] = rawSocketPair('seqpacket');
  let ended!: (v: { reason: Error | null; stats: ServeStats }) => void;
  const end = new Promise<{ reason: Error | null; stats: ServeStats }>((r) => (ended = r));
  serveConnection(new UnixSocket(s, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), {
    transport: 'child',
    onEnd: (reason, st) => ended({ reason, stats: { ...st } }),
  });
  const client = new UnixSocket(c, 'seqpacket', { bufferSize: MAX_FRAME_BYTES + 8192 });
  const [readEnd, writeEnd] = makePipe();
  setFdFlags(readEnd, { nonblock: true });
  // Replies are read only to check that none carries an fd.
  let fdsBack = 0;
  client.setMessageHandler((err, _data, fds) => {
    if (err) return;
    fdsBack += fds?.length ?? 0;
    closeFds(fds ?? []);
  });
  let helloIsFirst = false;
  try {
    let gone = false;
    const n = rng.int(1, 8);
    for (let i = 0; i < n && !gone; i++) {
      let data: Buffer;
      let count = fdCount(rng);
      if (i === 0 && rng.next() < 0.85) {
        // Mostly a real HELLO first, so the later frames reach a live command.
        data = rng.next() < 0.85 ? validFrame(rng, FrameType.HELLO, 0, writeEnd) : mutate(rng, validFrame(rng, FrameType.HELLO, 0, writeEnd));
        count = rng.next() < 0.9 ? 0 : count;
      } else {
        const r = rng.next();
        if (r < 0.35) {
          data = validFrame(rng, FrameType.DUP);
          count = Math.max(1, count);
        } else if (r < 0.5) {
          data = validFrame(rng, FrameType.CALL);
        } else if (r < 0.55) {
          data = validFrame(rng, FrameType.CLOSE);
        } else {
          data = randomFrame(rng, writeEnd);
        }
      }
      if (i === 0) helloIsFirst = isCurrentHello(data);
      stats.frames++;
      const sent = await sendWith(client, data, writeEnd, count);
      if (sent === 'sent') stats.fdsSent += count;
      else if (sent === 'refused') stats.refusedByKernel++;
      else gone = true;
      if (rng.next() < 0.3) await sleep(0);
    }
    // Hang up (if the far side has not already): it must end cleanly then.
    // shutdown() first: a pidfd session's GETFD may have pulled a copy of
    // this very socket into the far side's ledger, and close() alone would
    // then not give it EOF.
    try {
      client.shutdown('both');
    } catch {
      // already disconnected
    }
    client.close();
    const { reason, stats: st } = await within(end, 5000, 'the command side ending the connection');
    stats.unexpectedFds += st.unexpectedFds;
    stats.protocolErrors += st.protocolErrors;
    if (reason === null) bump(stats, 'clean');
    else if (reason instanceof ProtocolError) bump(stats, 'ProtocolError');
    // A well-formed HELLO naming a command that does not load (a mutated
    // module path or export), or a probe fd that cannot be pulled: refused
    // with an ERROR reply and a typed error, not a protocol violation.
    else if (helloIsFirst && /command module|pidfd transport|not a built-in command/.test(reason.message)) bump(stats, 'helloRefused');
    // A reply it sent after we hung up: the client is gone, not hostile.
    else if (reason instanceof SystemError && (reason.code === 'EPIPE' || reason.code === 'ECONNRESET')) bump(stats, 'clientGone');
    else throw new Error(`fuzz: the command side ended with ${reason.name}: ${reason.message}`);
    if (fdsBack > 0) throw new Error(`fuzz: the command side sent ${fdsBack} fd(s) back`);
    closeFds([writeEnd]);
    await pipeDrained(readEnd); // every fd sent to the command side is closed
  } finally {
    client.close();
    closeFds([readEnd, writeEnd]);
  }
}

// ---------------------------------------------------------------------------
// 3. The client's receive path (SocketConnection)

/** Throws random sessions at a SocketConnection until `frames` replies have been sent. */
export async function fuzzClientSide(rng: Rng, frames: number): Promise<SessionStats> {
  const stats = newStats();
  while (stats.frames < frames) {
    const oldKernel = rng.next() < 0.5;
    const restore = oldKernel ? simulateKernelWithoutPassRights() : undefined;
    try {
      await clientSession(rng, stats);
    } finally {
      restore?.();
    }
  }
  return stats;
}

async function clientSession(rng: Rng, stats: SessionStats): Promise<void> {
  stats.sessions++;
  const [c, f] = rawSocketPair('seqpacket');
  const fake = new UnixSocket(f, 'seqpacket', { bufferSize: MAX_FRAME_BYTES + 8192 });
  const conn = new SocketConnection(new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), 'helper', { pid: process.pid, threadId: 0 }, async () => ({
    transport: 'helper',
    pid: process.pid,
    exitCode: null,
    signal: null,
  }));
  const [readEnd, writeEnd] = makePipe();
  setFdFlags(readEnd, { nonblock: true });
  const source = makeMemfd('fuzz-source');
  const settled: Array<Promise<void>> = [];
  const failures: Error[] = [];
  const track = (p: Promise<unknown>): void => {
    settled.push(
      p.then(
        () => undefined,
        (err: unknown) => {
          // A well-formed ERROR reply is a RemoteError; everything else must be the protocol error.
          if (!(err instanceof ProtocolError) && !(err instanceof RemoteError)) failures.push(err as Error);
        },
      ),
    );
  };
  // The fake command side: answers each request, well or badly.
  let fakeDone = false;
  fake.setMessageHandler((err, data, fds) => {
    closeFds(fds ?? []); // a DUP's fds: copies of `source`
    if (err || !data || fakeDone) return;
    const buf = Buffer.from(data);
    void answer(buf, fds?.length ?? 0).catch((e: unknown) => failures.push(e as Error));
  });
  const answer = async (req: Buffer, nfds: number): Promise<void> => {
    const type = req[0];
    const id = req.length >= HEADER_BYTES ? req.readUInt32LE(4) : 0;
    const count = type === FrameType.DUP ? nfds : type === FrameType.GETFD ? (req.length - HEADER_BYTES) / PIN_BYTES : 0;
    let reply: Buffer;
    let fds = 0;
    const r = rng.next();
    if (r < 0.6) {
      // The right answer.
      reply = type === FrameType.DUP ? encodeFdList(FrameType.DUP_OK, id, Array.from({ length: count }, () => rng.int(0, 4096))) : encodeResult(id, 'ok');
    } else if (r < 0.8) {
      reply = mutate(rng, type === FrameType.DUP ? encodeFdList(FrameType.DUP_OK, id, Array.from({ length: Math.max(1, count) }, () => rng.int(0, 4096))) : encodeResult(id, randomJson(rng)));
      fds = rng.next() < 0.3 ? fdCount(rng) : 0;
    } else {
      reply = randomFrame(rng);
      fds = fdCount(rng);
    }
    stats.frames++;
    const sent = await sendWith(fake, reply, writeEnd, fds);
    if (sent === 'sent') stats.fdsSent += fds;
    else if (sent === 'refused') {
      stats.refusedByKernel++;
      // The request is still waiting: answer it properly.
      await sendWith(fake, type === FrameType.DUP ? encodeFdList(FrameType.DUP_OK, id, new Array<number>(Math.max(1, count)).fill(7)) : encodeResult(id, 'ok'), writeEnd, 0);
    }
  };
  try {
    const n = rng.int(1, 6);
    for (let i = 0; i < n; i++) {
      const r = rng.next();
      if (r < 0.4) track(conn.dupFileDescriptor(source));
      else if (r < 0.55) for (let k = rng.int(2, 6); k > 0; k--) track(conn.dupFileDescriptor(source)); // folded
      else if (r < 0.7) track(conn.dupFileDescriptors(new Array<number>(rng.int(1, 300)).fill(source)));
      else track(conn.call(rng.pick(['echo', 'x']), randomJson(rng)));
      if (rng.next() < 0.3) await sleep(0);
    }
    await within(Promise.all(settled), 5000, 'every request of the client settling');
    if (failures.length > 0) throw new Error(`fuzz: a request failed with ${failures[0]?.name}: ${failures[0]?.message}`, { cause: failures[0] });
    const st = conn.stats;
    stats.unexpectedFds += st.unexpectedFds;
    stats.protocolErrors += st.protocolErrors;
    bump(stats, st.protocolErrors > 0 ? 'ProtocolError' : 'clean');
  } finally {
    fakeDone = true;
    fake.close();
    await conn.close();
    closeFds([writeEnd, source]);
  }
  try {
    await pipeDrained(readEnd); // every fd sent to the client is closed
  } finally {
    closeFds([readEnd]);
  }
}
