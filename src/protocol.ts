/**
 * The wire protocol between a client and a command running in another
 * process (child or helper transport). One frame is one SEQPACKET message, so
 * frames never need delimiting and fds travel with the frame they belong to.
 *
 *   offset 0  u8   type
 *   offset 1  u8   flags (must be 0)
 *   offset 2  u16  reserved (must be 0)
 *   offset 4  u32  id (little-endian): pairs a reply with its request
 *   offset 8  ...  payload: int32 fd numbers (DUP_OK, RELEASE), pins (GETFD) or UTF-8 JSON
 *
 * Only DUP frames carry fds; an fd arriving on any other frame is a protocol
 * violation (the receiver closes it). A GETFD lists pins of PIN_BYTES each:
 * the int32 fd number in the client, then the u64 device and u64 inode
 * (little-endian) of the file the client pinned there, which the pulling
 * side checks its pull against.
 *
 * This file is the one TypeScript description of the format; native/frame_format.h
 * is the one C++ one (test/native/cross-codec.test.ts holds them together).
 */
import { cutToJsonBytes, errorJson, ProtocolError, type RemoteErrorInfo } from './errors';
import type { CommandSpec } from './command';
import type { FileKey } from './native';
import type { ConstructorFd } from './runtime-fds';

export const FrameType = {
  /** client -> command: {command, version} */
  HELLO: 1,
  /** command -> client: {pid, threadId} */
  READY: 2,
  /**
   * command -> client: {message}; the connection is then closed. Answers
   * HELLO, or comes unasked when a helper daemon ends a served connection
   * for a limit (a message starting "quota <name>:").
   */
  REFUSED: 3,
  /** client -> command: 1..MAX_FDS_PER_FRAME fds in SCM_RIGHTS, no payload */
  DUP: 4,
  /** command -> client: the fds' numbers in the command's process, int32[] */
  DUP_OK: 5,
  /** client -> command: {method, args} */
  CALL: 6,
  /** command -> client: {value} (no key for undefined) */
  RESULT: 7,
  /** command -> client: RemoteErrorInfo */
  ERROR: 8,
  /** client -> command: int32[] fds (given earlier, not adopted) to close there; RESULT follows */
  RELEASE: 9,
  /** client -> command: close the command (its close(), then its unadopted fds); CLOSED follows */
  CLOSE: 10,
  /** command -> client: the command is closed; the client closes the socket, then the far side ends */
  CLOSED: 11,
  /**
   * client -> command (pidfd transport): pins, each an int32 fd number valid
   * in the client and the device and inode of the file it holds there, which
   * the command's side pulls with pidfd_getfd(2) and checks it got; DUP_OK
   * follows. No fd travels over the socket.
   */
  GETFD: 12,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 8;
/** One pin of a GETFD: int32 fd number, u64 device, u64 inode. */
export const PIN_BYTES = 20;
/** The most fds one DUP carries (SCM_MAX_FD), and so the longest fd list a frame holds. */
export const MAX_FDS_PER_FRAME = 253;
/**
 * The largest frame. A SEQPACKET message must fit the sender's SO_SNDBUF
 * (default 208 KiB, less 32 bytes of overhead) or sendmsg fails with EMSGSIZE.
 */
export const MAX_FRAME_BYTES = 192 * 1024;

/**
 * Socket options for a frame connection: room for the largest frame, and one
 * reused receive buffer (every frame is decoded before its handler returns).
 */
export const FRAME_SOCKET_OPTIONS = { bufferSize: MAX_FRAME_BYTES, reuseBuffer: true } as const;

export interface HelloPayload {
  version: number;
  command: CommandSpec;
  /**
   * 'pidfd': the client sends fd numbers (GETFD) and the command's side pulls
   * them with pidfd_getfd; `probeFd` is an fd open in the client, pulled once
   * at HELLO to find out whether the kernel and permissions allow it.
   */
  pull?: 'pidfd';
  probeFd?: number;
}
export interface ReadyPayload {
  pid: number;
  threadId: number;
  /**
   * From a process that serves one command (child, pidfd): the fds its
   * construction opened and left open (fdsOpenedBy), for a leak check whose
   * baseline of that process is read once the connection is up. A target
   * longer than READY_TARGET_BYTES is cut (cutToJsonBytes: its start, then
   * how many characters were cut); entries past what one frame holds are
   * left out from the end of the list, `constructorFdsOmitted` saying how
   * many (absent when none).
   */
  constructorFds?: ConstructorFd[];
  constructorFdsOmitted?: number;
}

export type Frame =
  | { type: typeof FrameType.HELLO; id: number; hello: HelloPayload }
  | { type: typeof FrameType.READY; id: number; ready: ReadyPayload }
  | { type: typeof FrameType.REFUSED; id: number; message: string }
  | { type: typeof FrameType.DUP; id: number; fds: number[] }
  | { type: typeof FrameType.DUP_OK; id: number; fds: number[] }
  | { type: typeof FrameType.CALL; id: number; method: string; args: unknown[] }
  | { type: typeof FrameType.RESULT; id: number; value: unknown }
  | { type: typeof FrameType.ERROR; id: number; error: RemoteErrorInfo }
  | { type: typeof FrameType.RELEASE; id: number; fds: number[] }
  | { type: typeof FrameType.GETFD; id: number; fds: number[]; files: FileKey[] }
  | { type: typeof FrameType.CLOSE; id: number }
  | { type: typeof FrameType.CLOSED; id: number };

/**
 * Buffer's own UTF-8 coders, which `toString('utf8', start)` and
 * `write(string, offset, 'utf8')` reach after normalizing their arguments
 * (every Node this runs on has them on Buffer.prototype): a frame's offsets
 * are known to be in range, and for a short payload the checks cost as
 * much as the decoding itself (a 60-byte CALL's payload decodes in about
 * half the time without them).
 */
const { utf8Slice, utf8Write } = Buffer.prototype as unknown as {
  utf8Slice(this: Uint8Array, start: number, end: number): string;
  utf8Write(this: Uint8Array, text: string, offset: number, length: number): number;
};

function header(type: FrameTypeValue, id: number, payloadBytes: number): Buffer {
  const total = HEADER_BYTES + payloadBytes;
  if (total > MAX_FRAME_BYTES) {
    throw new RangeError(`frame of ${total} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit of one message`);
  }
  const buf = Buffer.allocUnsafe(total);
  // Byte by byte: writeUInt32LE checks its value and offset each time.
  buf[0] = type; // type, flags and reserved (all zero but type)
  buf[1] = 0;
  buf[2] = 0;
  buf[3] = 0;
  buf[4] = id; // id, little-endian (a typed array keeps the low 8 bits)
  buf[5] = id >>> 8;
  buf[6] = id >>> 16;
  buf[7] = id >>> 24;
  return buf;
}

/** A frame with a JSON payload. */
export function encodeJson(type: FrameTypeValue, id: number, payload: unknown): Buffer {
  return encodeJsonText(type, id, JSON.stringify(payload));
}

/** A frame whose JSON payload is already encoded (a call's, by src/json-value.ts). */
export function encodeJsonText(type: FrameTypeValue, id: number, json: string): Buffer {
  const bytes = Buffer.byteLength(json);
  const buf = header(type, id, bytes);
  utf8Write.call(buf, json, HEADER_BYTES, bytes);
  return buf;
}

/** A frame with no payload (CLOSE, CLOSED). */
export function encodeEmpty(type: typeof FrameType.CLOSE | typeof FrameType.CLOSED, id: number): Buffer {
  return header(type, id, 0);
}

/** A DUP request: the fds travel as SCM_RIGHTS beside it. */
export function encodeDup(id: number): Buffer {
  return header(FrameType.DUP, id, 0);
}

export function encodeFdList(
  type: typeof FrameType.DUP_OK | typeof FrameType.RELEASE,
  id: number,
  fds: readonly number[],
): Buffer {
  const buf = header(type, id, fds.length * 4);
  let at = HEADER_BYTES;
  for (const fd of fds) {
    // Past int32 a number would lose its high bits and name another fd:
    // refused as writeInt32LE refuses it (RangeError, ERR_OUT_OF_RANGE).
    if (fd > 0x7fffffff || fd < -0x80000000) {
      throw Object.assign(new RangeError(`an fd list frame carries int32 fd numbers, not ${fd}`), { code: 'ERR_OUT_OF_RANGE' });
    }
    // What writeInt32LE stores, without its checks: little-endian (a typed
    // array keeps the low 8 bits).
    buf[at] = fd;
    buf[at + 1] = fd >>> 8;
    buf[at + 2] = fd >>> 16;
    buf[at + 3] = fd >>> 24;
    at += 4;
  }
  return buf;
}

/**
 * An ERROR frame for `info`, whatever its length: never past
 * MAX_FRAME_BYTES, its message and stack cut to fit, saying so, its name
 * and code kept (errorJson). An error's message may echo what a client
 * sent; a reply that could not be encoded would leave the request
 * unanswered and throw in the loop serving every client.
 */
export function encodeError(id: number, info: RemoteErrorInfo): Buffer {
  return encodeJsonText(FrameType.ERROR, id, errorJson(info, MAX_FRAME_BYTES - HEADER_BYTES));
}

/** A REFUSED frame (id 0) saying `message`, cut to fit one frame as an ERROR's is. */
export function encodeRefused(message: string): Buffer {
  const room = MAX_FRAME_BYTES - HEADER_BYTES - Buffer.byteLength('{"message":}');
  return encodeJsonText(FrameType.REFUSED, 0, JSON.stringify({ message: cutToJsonBytes(message, room) }));
}

/**
 * The most bytes one constructorFds target takes in a READY, as a JSON
 * string: past it the target is cut (cutToJsonBytes). A path takes up to
 * 4 KiB (PATH_MAX), six times that with control characters escaped.
 */
export const READY_TARGET_BYTES = 1024;

/**
 * A READY's JSON payload for `ready`, at most `maxBytes` UTF-8 bytes (at
 * least 256), whatever the number of constructorFds and the length of their
 * targets: each target cut to READY_TARGET_BYTES, then the entries that do
 * not fit left out from the end, `constructorFdsOmitted` saying how many.
 * The one encoder of a READY (the child, pidfd and helper frame's, and the
 * remote channel's, whose frames hold more).
 */
export function readyJson(ready: ReadyPayload, maxBytes: number): string {
  const head = { pid: ready.pid, threadId: ready.threadId };
  const list = ready.constructorFds;
  if (list === undefined) return JSON.stringify(head);
  const entries: string[] = [];
  let bytes = Buffer.byteLength(JSON.stringify({ ...head, constructorFds: [] }));
  // Room for the count of those left out, should any be.
  const room = maxBytes - Buffer.byteLength(`,"constructorFdsOmitted":${list.length}`);
  /** How many entries fit with that count after them. */
  let fits = 0;
  for (const { fd, target } of list) {
    const entry = JSON.stringify({ fd, target: cutToJsonBytes(target, READY_TARGET_BYTES) });
    bytes += Buffer.byteLength(entry) + (entries.length > 0 ? 1 : 0);
    if (bytes > maxBytes) break;
    entries.push(entry);
    if (bytes <= room) fits = entries.length;
  }
  const start = JSON.stringify(head).slice(0, -1);
  if (entries.length === list.length) return `${start},"constructorFds":[${entries.join(',')}]}`;
  return `${start},"constructorFds":[${entries.slice(0, fits).join(',')}],"constructorFdsOmitted":${list.length - fits}}`;
}

/** A READY frame for `ready`, never past MAX_FRAME_BYTES (readyJson). */
export function encodeReady(id: number, ready: ReadyPayload): Buffer {
  return encodeJsonText(FrameType.READY, id, readyJson(ready, MAX_FRAME_BYTES - HEADER_BYTES));
}

/**
 * A READY's payload from its parsed JSON `o`, as readyJson makes it: a JSON
 * object, with pid and threadId integers; constructorFds, if there, a list
 * of { fd, target }; constructorFdsOmitted, if there, a positive integer.
 * The one decoder of a READY (decodeFrame's and the remote channel's).
 */
export function readyPayload(o: unknown): ReadyPayload {
  if (!isJsonObject(o)) throw new ProtocolError('malformed READY frame: its payload is not a JSON object');
  const ready: ReadyPayload = { pid: int(o, 'pid', 'READY'), threadId: int(o, 'threadId', 'READY') };
  if (o['constructorFds'] !== undefined) ready.constructorFds = constructorFds(o['constructorFds'], 'READY');
  if (o['constructorFdsOmitted'] !== undefined) {
    const omitted = int(o, 'constructorFdsOmitted', 'READY');
    if (omitted <= 0 || ready.constructorFds === undefined) {
      throw new ProtocolError(`malformed READY frame: "constructorFdsOmitted" ${omitted} is not a count of fds left out of a "constructorFds"`);
    }
    ready.constructorFdsOmitted = omitted;
  }
  return ready;
}

/**
 * A GETFD naming `fds` (numbers in the client) and the file each holds,
 * `files[i]` (as many).
 */
export function encodeGetfd(id: number, fds: readonly number[], files: readonly FileKey[]): Buffer {
  if (files.length !== fds.length) throw new RangeError(`a GETFD names a file for each fd: ${fds.length} fd(s), ${files.length} file(s)`);
  const buf = header(FrameType.GETFD, id, fds.length * PIN_BYTES);
  for (let i = 0; i < fds.length; i++) {
    const at = HEADER_BYTES + i * PIN_BYTES;
    buf.writeInt32LE(fds[i] as number, at);
    const file = files[i] as FileKey;
    buf.writeBigUInt64LE(file.dev, at + 4);
    buf.writeBigUInt64LE(file.ino, at + 12);
  }
  return buf;
}

export function encodeCall(id: number, method: string, args: readonly unknown[]): Buffer {
  return encodeJson(FrameType.CALL, id, { method, args });
}

export function encodeResult(id: number, value: unknown): Buffer {
  // JSON.stringify leaves out a key whose value is undefined: undefined travels as {} (no key).
  return encodeJson(FrameType.RESULT, id, { value });
}

/** Whether parsed JSON `value` is an object (not null, not an array). */
function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(data: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8Slice.call(data, HEADER_BYTES, data.length));
  } catch (err) {
    throw new ProtocolError(`malformed frame: its JSON payload does not parse`, { cause: err });
  }
  if (!isJsonObject(value)) throw new ProtocolError('malformed frame: its payload is not a JSON object');
  return value;
}

function str(o: Record<string, unknown>, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new ProtocolError(`malformed ${what} frame: "${key}" is not a string`);
  return v;
}

function int(o: Record<string, unknown>, key: string, what: string): number {
  const v = o[key];
  // Number.isInteger is false for anything but a number.
  if (!Number.isInteger(v)) throw new ProtocolError(`malformed ${what} frame: "${key}" is not an integer`);
  return v as number;
}

/** A READY's `constructorFds`: a list of { fd, target }, each an fd number and a string. */
function constructorFds(v: unknown, what: string): ConstructorFd[] {
  if (!Array.isArray(v)) throw new ProtocolError(`malformed ${what} frame: "constructorFds" is not a list`);
  return v.map((e: unknown) => {
    if (typeof e !== 'object' || e === null) throw new ProtocolError(`malformed ${what} frame: "constructorFds" holds ${String(e)}, not { fd, target }`);
    const fd = int(e as Record<string, unknown>, 'fd', what);
    if (fd < 0) throw new ProtocolError(`malformed ${what} frame: "constructorFds" names fd ${fd}`);
    return { fd, target: str(e as Record<string, unknown>, 'target', what) };
  });
}

/**
 * Decodes one received message. Throws ProtocolError for anything that is
 * not a well-formed frame, including fds on a frame that must not carry any.
 * It never closes fds: the caller owns them, and closes them when this throws.
 */
export function decodeFrame(data: Buffer, fds: readonly number[]): Frame {
  if (data.length < HEADER_BYTES) {
    throw new ProtocolError(`malformed frame: ${data.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  }
  const type = data[0] as number;
  if (data[1] !== 0 || data[2] !== 0 || data[3] !== 0) {
    throw new ProtocolError(`malformed frame: non-zero flags or reserved bytes (type ${type})`);
  }
  const id = ((data[4] as number) | ((data[5] as number) << 8) | ((data[6] as number) << 16) | ((data[7] as number) << 24)) >>> 0;
  if (type === FrameType.DUP) {
    if (data.length !== HEADER_BYTES) throw new ProtocolError('malformed DUP frame: it has a payload');
    if (fds.length === 0) throw new ProtocolError('malformed DUP frame: no fds arrived with it');
    return { type, id, fds: [...fds] };
  }
  if (fds.length > 0) {
    throw new ProtocolError(`unexpected fds: ${fds.length} fd(s) arrived with a frame of type ${type}`);
  }
  switch (type) {
    case FrameType.GETFD: {
      const n = data.length - HEADER_BYTES;
      if (n === 0 || n % PIN_BYTES !== 0 || n / PIN_BYTES > MAX_FDS_PER_FRAME) {
        throw new ProtocolError(`malformed GETFD frame: ${n} payload bytes is not 1..${MAX_FDS_PER_FRAME} pins of ${PIN_BYTES} bytes`);
      }
      const fds: number[] = [];
      const files: FileKey[] = [];
      for (let off = HEADER_BYTES; off < data.length; off += PIN_BYTES) {
        const fd = data.readInt32LE(off);
        if (fd < 0) throw new ProtocolError(`malformed GETFD frame: fd ${fd} is negative`);
        fds.push(fd);
        files.push({ dev: data.readBigUInt64LE(off + 4), ino: data.readBigUInt64LE(off + 12) });
      }
      return { type, id, fds, files };
    }
    case FrameType.DUP_OK:
    case FrameType.RELEASE: {
      const what = type === FrameType.DUP_OK ? 'DUP_OK' : 'RELEASE';
      const n = data.length - HEADER_BYTES;
      if (n === 0 || n % 4 !== 0 || n / 4 > MAX_FDS_PER_FRAME) {
        throw new ProtocolError(`malformed ${what} frame: ${n} payload bytes is not 1..${MAX_FDS_PER_FRAME} int32 fd numbers`);
      }
      const out: number[] = [];
      for (let off = HEADER_BYTES; off < data.length; off += 4) {
        // An int32, little-endian (what readInt32LE reads, without its checks).
        const fd = (data[off] as number) | ((data[off + 1] as number) << 8) | ((data[off + 2] as number) << 16) | ((data[off + 3] as number) << 24);
        if (fd < 0) throw new ProtocolError(`malformed ${what} frame: fd ${fd} is negative`);
        out.push(fd);
      }
      return { type, id, fds: out };
    }
    case FrameType.HELLO: {
      const o = parseJson(data);
      const version = int(o, 'version', 'HELLO');
      const command = o['command'];
      if (typeof command !== 'object' || command === null) {
        throw new ProtocolError('malformed HELLO frame: "command" is not an object');
      }
      const c = command as Record<string, unknown>;
      // A helper's client names a command; a child's parent may give a module
      // instead (without a name, the module is required).
      const spec: CommandSpec = {};
      if (c['name'] !== undefined) spec.name = str(c, 'name', 'HELLO');
      if (c['module'] !== undefined || spec.name === undefined) spec.module = str(c, 'module', 'HELLO');
      if (c['export'] !== undefined) spec.export = str(c, 'export', 'HELLO');
      if (c['args'] !== undefined) {
        if (!Array.isArray(c['args'])) throw new ProtocolError('malformed HELLO frame: "args" is not an array');
        spec.args = c['args'];
      }
      const hello: HelloPayload = { version, command: spec };
      if (o['pull'] !== undefined) {
        if (o['pull'] !== 'pidfd') throw new ProtocolError('malformed HELLO frame: "pull" is not "pidfd"');
        hello.pull = 'pidfd';
        const probeFd = int(o, 'probeFd', 'HELLO');
        // An fd number is an int32 >= 0; anything else would get as far as
        // the native pidfd_getfd binding and fail there with a RangeError.
        if (probeFd < 0 || probeFd > 0x7fffffff) throw new ProtocolError(`malformed HELLO frame: "probeFd" ${probeFd} is not an fd number`);
        hello.probeFd = probeFd;
      }
      return { type, id, hello };
    }
    case FrameType.READY: {
      return { type, id, ready: readyPayload(parseJson(data)) };
    }
    case FrameType.REFUSED:
      return { type, id, message: str(parseJson(data), 'message', 'REFUSED') };
    case FrameType.CALL: {
      const o = parseJson(data);
      const args = o['args'];
      if (!Array.isArray(args)) throw new ProtocolError('malformed CALL frame: "args" is not an array');
      return { type, id, method: str(o, 'method', 'CALL'), args };
    }
    case FrameType.RESULT:
      return { type, id, value: parseJson(data)['value'] };
    case FrameType.CLOSE:
    case FrameType.CLOSED:
      if (data.length !== HEADER_BYTES) throw new ProtocolError(`malformed frame of type ${type}: it has a payload`);
      return { type, id };
    case FrameType.ERROR: {
      const o = parseJson(data);
      const error: RemoteErrorInfo = { name: str(o, 'name', 'ERROR'), message: str(o, 'message', 'ERROR') };
      if (typeof o['code'] === 'string') error.code = o['code'];
      if (typeof o['syscall'] === 'string') error.syscall = o['syscall'];
      if (typeof o['stack'] === 'string') error.stack = o['stack'];
      return { type, id, error };
    }
    default:
      throw new ProtocolError(`malformed frame: unknown type ${type}`);
  }
}
