/**
 * Test utilities: many DUPs of 253 fds that reach a helper daemon's event
 * loop in one turn (a sender run as another uid, and a hold on the loop
 * while it sends).
 */
import { closeFd, connect, makePipe } from '../../src';
import { DIST_SRC } from './nobody';

/** SCM_MAX_FD: the fds one message can carry. */
export const MAX_FDS = 253;

/**
 * `node -e` script: `connections` connections to @`name` (probe command),
 * each HELLO and READY; prints {ready}. Once told a line on stdin, sends a
 * DUP frame of 253 copies of /dev/null on each (without waiting) and
 * prints {sent}; hangs up on the next line.
 */
export function dupSender(name: string, connections: number): string {
  return `
  const { UnixSocket } = require(${JSON.stringify(`${DIST_SRC}/socket`)});
  const { sendNow } = require(${JSON.stringify(`${DIST_SRC}/testing`)});
  const { encodeJson, FrameType, PROTOCOL_VERSION } = require(${JSON.stringify(`${DIST_SRC}/protocol`)});
  const fs = require('node:fs');
  (async () => {
    const sockets = [];
    for (let i = 0; i < ${connections}; i++) {
      const s = await UnixSocket.connect({ abstract: ${JSON.stringify(name)} }, { kind: 'seqpacket', bufferSize: 256 * 1024 });
      await s.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
      if ((await s.receive()).data[0] !== FrameType.READY) throw new Error('no READY');
      sockets.push(s);
    }
    console.log(JSON.stringify({ ready: sockets.length }));
    const lines = [];
    process.stdin.on('data', () => lines.shift()?.());
    await new Promise((resolve) => lines.push(resolve));
    const devnull = fs.openSync('/dev/null', 'r');
    const fds = new Array(${MAX_FDS}).fill(devnull);
    for (const s of sockets) {
      const frame = Buffer.alloc(8);
      frame[0] = FrameType.DUP;
      frame.writeUInt32LE(1, 4);
      sendNow(s.fd, frame, fds);
    }
    fs.closeSync(devnull);
    console.log(JSON.stringify({ sent: sockets.length }));
    await new Promise((resolve) => lines.push(resolve));
    for (const s of sockets) s.close();
    process.exit(0);
  })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack) })); process.exit(1); });`;
}

/**
 * Runs `step` with the daemon's event loop held: a root client's probe
 * command reads a pipe of ours (readSync on the daemon's thread) until
 * `step` has run and the pipe's write end is closed (end of file). What
 * clients send meanwhile waits, and is all readable at once when the loop
 * turns again. (Not SIGSTOP: a stop signal ends a close that waits out its
 * linger time, tcp_close's wait being interruptible.)
 */
export async function whileLoopHeld(socketPath: string, step: () => Promise<unknown>): Promise<void> {
  const [r, w] = makePipe();
  const blocker = await connect('helper', { command: { name: 'probe' }, socketPath, timeoutMs: 20000 });
  try {
    const there = await blocker.dupFileDescriptor(r);
    const held = blocker.call<string>('read', there, 1);
    try {
      await step();
    } finally {
      closeFd(w);
    }
    expect(await held).toBe('');
  } finally {
    closeFd(r);
    await blocker.close();
  }
}
