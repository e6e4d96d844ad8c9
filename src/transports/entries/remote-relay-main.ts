/**
 * `fdbridge serve --stdio`, its relay thread: the channel on the process's
 * stdin and stdout, and every relayed stream's pipe or socketpair end. It
 * runs apart from the command's thread so that a command blocking its own
 * thread (a readSync on a relayed fd waiting for bytes, a large writeSync
 * into a full pipe) never stalls the relays or the channel: the bytes it
 * waits for are moved here.
 *
 * workerData: { inFd, outFd } (owned). Talks to the main thread
 * (remote-serve.ts), which hosts the command, through RelayToHost and
 * HostToRelay messages; the command's end of each stream is given to it
 * ('give') before the client is told its number, so a call naming the fd
 * always finds it in the command's ledger.
 */
import { readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

import type { CommandSpec } from '../../command';
import { describeError, ProtocolError } from '../../errors';
import { closeOwnFd, closeOwnFds, handedOver, reopenedCopy } from '../../fd';
import { constants, native } from '../../native';
import { readyJson } from '../../protocol';
import { Channel, isStreamFrame, MAX_FRAME_BYTES, parseJson, RemoteFrame, RelayStream, REMOTE_PROTOCOL_VERSION, type OpenRequest, type PumpedEnd } from '../remote-channel';
import { MemorySink } from '../remote-endpoints';
import type { HostToRelay, RelayToHost } from '../remote-serve';

const port = parentPort;
if (!port) throw new Error('remote-relay-main must run in a worker thread');
const { inFd, outFd } = workerData as { inFd: number; outFd: number };
const post = (m: RelayToHost): void => port.postMessage(m);

/** How long a CLOSE waits for the command's output still in its pipes to reach the client. */
const DRAIN_ON_CLOSE_MS = 2000;

const streams = new Map<number, RelayStream>();
/** Stream ids seen so far: a client may not reuse one. */
let highestStream = 0;
let hello = false;
/** CLOSE arrived: no stream is opened or completed for the command any more. */
let closing = false;

const channel = new Channel(
  inFd,
  outFd,
  {
    onFrame,
    onEnd(reason) {
      for (const s of [...streams.values()]) s.destroy();
      streams.clear();
      post({ type: 'end', reason: reason ? reason.message : null });
    },
  },
);

function onFrame(type: number, id: number, payload: Buffer): void {
  if (isStreamFrame(type)) {
    // Frames for a stream that has finished here may still be in flight.
    streams.get(id)?.handle(type, payload);
    return;
  }
  if (!hello && type !== RemoteFrame.HELLO) throw new ProtocolError(`expected HELLO, got frame type ${type}`);
  switch (type) {
    case RemoteFrame.HELLO: {
      if (hello) throw new ProtocolError('a second HELLO');
      hello = true;
      const h = parseJson(payload, 'HELLO') as { version?: unknown; command?: CommandSpec } | undefined;
      if (h?.version !== REMOTE_PROTOCOL_VERSION) {
        channel.sendError(id, { name: 'ProtocolError', code: 'ERR_FDBRIDGE_PROTOCOL', message: `protocol version ${String(h?.version)} is not ${REMOTE_PROTOCOL_VERSION}` });
        return;
      }
      post({ type: 'hello', id, command: h.command ?? {} });
      return;
    }
    case RemoteFrame.CALL: {
      const c = parseJson(payload, 'CALL') as { method?: unknown; args?: unknown };
      if (typeof c?.method !== 'string' || !Array.isArray(c.args)) throw new ProtocolError('a CALL without a method name and an argument array');
      post({ type: 'call', id, method: c.method, args: c.args });
      return;
    }
    case RemoteFrame.OPEN:
      open(id, parseJson(payload, 'OPEN') as OpenRequest);
      return;
    case RemoteFrame.RELEASE: {
      const fds = parseJson(payload, 'RELEASE');
      if (!Array.isArray(fds) || !fds.every((fd) => Number.isInteger(fd))) throw new ProtocolError('a RELEASE without a list of fd numbers');
      post({ type: 'release', id, fds: fds as number[] });
      return;
    }
    case RemoteFrame.CLOSE:
      closing = true;
      post({ type: 'close', id });
      return;
    default:
      throw new ProtocolError(`a client sent a frame of type ${type}, which only the server sends`);
  }
}

/** Makes the command's end of a new stream, and this thread's end of it. */
function open(id: number, req: OpenRequest): void {
  if (closing) throw new ProtocolError('an OPEN after CLOSE');
  if (typeof req !== 'object' || req === null || !Number.isInteger(req.stream) || req.stream <= highestStream) {
    throw new ProtocolError(`an OPEN with a stream id that is not new (${String(req?.stream)})`);
  }
  highestStream = req.stream;
  const made: number[] = [];
  let commandEnd = -1;
  let halves: { sink?: MemorySink; pumped?: PumpedEnd };
  let copied: (() => void) | undefined;
  let copyDone = false;
  try {
    switch (req.mode) {
      case 'up': {
        const [r, w] = native.pipe();
        made.push(r, w);
        commandEnd = r;
        halves = { pumped: { fd: w, read: false, write: true, socket: false } };
        break;
      }
      case 'down': {
        const [r, w] = native.pipe();
        made.push(r, w);
        commandEnd = w;
        halves = { pumped: { fd: r, read: true, write: false, socket: false } };
        break;
      }
      case 'both': {
        const [a, b] = native.socketpair(constants.SOCK_STREAM);
        made.push(a, b);
        // The command's end blocks, like any socket it would open itself.
        native.setNonblock(a, false);
        commandEnd = a;
        halves = { pumped: { fd: b, read: true, write: true, socket: true } };
        break;
      }
      case 'copy': {
        const memfd = native.memfd(`fdbridge-relay-copy`);
        made.push(memfd);
        copied = () => {
          copyDone = true;
          if (closing) {
            closeOwnFd(memfd);
            channel.sendError(id, { name: 'ClosedError', code: 'ERR_FDBRIDGE_CLOSED', message: 'the connection was closed before the copy was complete' });
            return;
          }
          let ro = -1;
          try {
            // The command's fd is read-only, like the client's, and starts at its offset.
            ro = reopenedCopy(memfd, 'r', (opened) => native.dup(opened));
            skip(ro, Number(req.offset ?? 0));
            post({ type: 'give', fd: handedOver(ro) });
            channel.sendJson(RemoteFrame.OPENED, id, { fd: ro });
          } catch (err) {
            if (ro >= 0) closeOwnFd(ro);
            channel.sendError(id, describeError(err));
          } finally {
            closeOwnFd(memfd);
          }
        };
        halves = { sink: new MemorySink(memfd, copied) };
        break;
      }
      default:
        throw new ProtocolError(`an OPEN of unknown mode ${String(req.mode)}`);
    }
  } catch (err) {
    closeOwnFds(made);
    if (err instanceof ProtocolError) throw err;
    channel.sendError(id, describeError(err));
    return;
  }
  const stream = new RelayStream(req.stream, channel, halves, (s) => {
    streams.delete(s.id);
    if (req.mode === 'copy' && !copyDone) {
      // The copy could not be written (the memfd's memory ran out, say).
      closeOwnFd(made[0] as number);
      channel.sendError(id, { name: 'SystemError', message: `the copy of the ${req.kind} could not be completed here` });
    }
  });
  streams.set(req.stream, stream);
  if (req.mode !== 'copy') {
    // The OPENED goes out before anything of the stream (remote-channel.ts):
    // start() only has the pump poll this end, and its reads (and a call's
    // reply flushing it) run on a later turn of this thread's loop, after
    // the OPENED below is queued on the channel, whose frames leave in order.
    try {
      stream.start();
    } catch (err) {
      // This side's end could not be pumped (the stream is destroyed, its fd closed).
      closeOwnFd(commandEnd);
      channel.sendError(id, describeError(err));
      return;
    }
    post({ type: 'give', fd: handedOver(commandEnd) });
    channel.sendJson(RemoteFrame.OPENED, id, { fd: commandEnd });
  }
}

/** Moves `fd`'s offset `n` bytes on by reading (fs has no lseek). */
function skip(fd: number, n: number): void {
  const buf = Buffer.allocUnsafe(Math.min(n, 1 << 20));
  while (n > 0) {
    const got = readSync(fd, buf, 0, Math.min(n, buf.length), null);
    if (got === 0) return;
    n -= got;
  }
}

port.on('message', (m: HostToRelay) => {
  switch (m.type) {
    case 'ready':
      channel.send(RemoteFrame.READY, m.id, Buffer.from(readyJson({ pid: m.pid, threadId: m.threadId, constructorFds: m.constructorFds }, MAX_FRAME_BYTES)));
      return;
    case 'failed':
      channel.sendError(m.id, m.error);
      return;
    case 'error':
      flushStreams();
      channel.sendError(m.id, m.error);
      return;
    case 'result':
      flushStreams();
      channel.send(RemoteFrame.RESULT, m.id, m.json === undefined ? undefined : Buffer.from(m.json));
      return;
    case 'closed':
      void closeStreams().then(() => channel.send(RemoteFrame.CLOSED, m.id));
      return;
  }
});

/** What the command wrote during a call goes out before the call's reply (see RelayStream.flushSource). */
function flushStreams(): void {
  for (const s of streams.values()) s.flushSource();
}

/**
 * After the command closed its fds: what it wrote is still in its pipes.
 * Let that reach the client (each outgoing half ends at its end of file),
 * within DRAIN_ON_CLOSE_MS (a grandchild may hold a write end), then close
 * every stream here.
 */
async function closeStreams(): Promise<void> {
  const outgoing = [...streams.values()].map((s) => s.sent());
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(outgoing), new Promise((r) => (timer = setTimeout(r, DRAIN_ON_CLOSE_MS)))]);
  clearTimeout(timer);
  for (const s of [...streams.values()]) s.destroy();
  streams.clear();
}
