/**
 * A dead peer never hangs a caller, and close() is no way to hang one
 * either: when a child or pidfd connection's command process dies, or the
 * caller closes the connection, the client closes what it held for
 * requests not yet delivered (pidfd: the pins the command had not pulled;
 * child and helper: the copies in the send queue behind a full socket). Such a copy
 * can be the last reference to its file: the caller may close its own copy
 * once the call is made (the queue and the pins hold their own for that
 * reason). close(2) of the last reference to a TCP socket with SO_LINGER
 * and unsent data waits out the linger time (CONFORMANCE: close can block),
 * so such a close must not run on the caller's event loop (the helper
 * daemon closes what its clients gave on background threads for the same
 * reason).
 *
 * The scene: python3 makes a lingering TCP socket (its peer never reads,
 * SO_LINGER 3600 s) and hands it to this process; the command's process is
 * stopped (so it reads and pulls nothing; eight calls of 190 KB made first
 * fill the socket, so that on child and helper the duplication waits in
 * the send queue; on helper the stopped process is the daemon, one this
 * test starts), the socket is duplicated, the caller closes its copy, and then
 * the command's process is killed (pidfd) or the caller closes the
 * connection (pidfd, child, helper). (child with the process killed blocks the
 * same way when the queued copy is still there as the death is seen, but
 * whether it is depends on timing, so it is not staged here.) A watcher thread looks at
 * the main thread's kernel state until the test is over: if it finds the
 * main thread blocked in a lingering close, it records that and has python
 * reset the connection (RST at the peer), which ends the close at once, so
 * the test ends either way. Deterministic: a close on the main thread blocks
 * until that reset, so the watcher finds it however loaded the machine is;
 * a close elsewhere never puts the main thread in that state.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { ClosedError, closeFd, connect, makePipe, PeerExitedError, PROBE_COMMAND } from '../../src';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { hasPython, PYTHON } from '../util/linger-attacker';
import { startHelperProcess } from '../util/processes';

/** Makes a lingering socket, sends it on fd 3 and closes its own copy; on a line on stdin, resets the peer and exits. */
const LINGERING = `
import socket, struct, sys
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(1)
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
tcp.connect(lst.getsockname()); peer, _ = lst.accept()
peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
tcp.setblocking(False)
try:
    while True: tcp.send(b'x' * 65536)
except BlockingIOError: pass
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 3600))
socket.send_fds(socket.socket(fileno=3), [b'x'], [tcp.fileno()])
tcp.close()
sys.stdin.readline()
peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); peer.close()
`;

/**
 * The watcher: polls the main thread's kernel stack (wchan and syscall where
 * the stack is not readable) until told 'done'; a main thread found waiting
 * in a TCP close is recorded, and python told to reset its peer (a write to
 * the pipe that is its stdin; fd numbers are the process's).
 */
const WATCHER = `
const { readFileSync, writeSync } = require('node:fs');
const { parentPort, workerData: { tid, resetFd } } = require('node:worker_threads');
const read = (f) => { try { return readFileSync('/proc/self/task/' + tid + '/' + f, 'utf8'); } catch { return ''; } };
let blocked = null;
let done = false;
parentPort.on('message', () => { done = true; });
const look = () => {
  if (done) return parentPort.postMessage({ blocked });
  if (blocked === null) {
    const stack = read('stack');
    const syscall = read('syscall').split(' ')[0];
    const inClose = syscall === '3' || syscall === '436'; // close, close_range
    if (stack.includes('sk_stream_wait_close') || (stack === '' && inClose && read('wchan') === 'wait_woken')) {
      blocked = 'syscall ' + syscall + ': ' + stack.split('\\n').slice(0, 4).map((l) => l.replace(/^\\[<0>\\] /, '').replace(/\\+.*/, '')).join(' < ');
      writeSync(resetFd, 'go\\n');
    }
  }
  setTimeout(look, 5);
};
look();
`;

const CASES = [
  ['pidfd', 'its command process killed'],
  ['pidfd', 'the connection closed'],
  ['child', 'the connection closed'],
  ['helper', 'the connection closed'],
] as const;

(hasPython() ? test.each(CASES) : test.skip.each(CASES))("%s, %s: the caller's event loop does not block in the close of a held copy that is a lingering socket's last reference", async (transport, end) => {
  const [mine, theirs] = rawSocketPair('seqpacket');
  const [stdinRead, stdinWrite] = makePipe();
  const py = spawn(PYTHON, ['-c', LINGERING], { stdio: [stdinRead, 'ignore', 'inherit', theirs] });
  const pyExited = new Promise((resolve) => py.once('exit', resolve));
  closeFd(theirs);
  closeFd(stdinRead);
  const watcher = new Worker(WATCHER, { eval: true, workerData: { tid: process.pid, resetFd: stdinWrite } });
  const verdict = new Promise<{ blocked: string | null }>((resolve) => watcher.once('message', resolve));
  try {
    // The lingering socket, from python (which has closed its copy): ours is its only reference.
    let lingering = -1;
    while (lingering < 0) {
      const message = receiveNow(mine, 16, 1);
      if (message !== null) lingering = message.fds[0] as number;
      else await new Promise((r) => setTimeout(r, 10));
    }
    // helper: a daemon of this test's own, stopped below as the command's process is on child and pidfd.
    const helperDir = transport === 'helper' ? mkdtempSync(join(tmpdir(), 'fdbridge-attack-linger-')) : '';
    const helper = transport === 'helper' ? await startHelperProcess(join(helperDir, 'helper.sock'), ['--diagnostics']) : undefined;
    const conn = await connect(transport, { command: PROBE_COMMAND, ...(helper ? { socketPath: join(helperDir, 'helper.sock') } : {}) });
    try {
      process.kill(conn.location.pid, 'SIGSTOP'); // pulls nothing from now on
      while (!/State:\s+T/.test(readFileSync(`/proc/${conn.location.pid}/status`, 'utf8'))) await new Promise((r) => setTimeout(r, 5));
      // Calls too large for the socket's buffer to take them all: the duplication queues behind them.
      const fill = Array.from({ length: 8 }, () => conn.call('echo', 'q'.repeat(190000)).catch(() => 'failed'));
      const request = conn.dupFileDescriptor(lingering).then(
        () => 'resolved',
        (err: unknown) => (err instanceof PeerExitedError ? 'PeerExitedError' : err instanceof ClosedError ? 'ClosedError' : String(err)),
      );
      closeFd(lingering); // the caller's copy: the pin (pidfd) or the queued copy (child) is now the last reference
      const closing = end === 'its command process killed' ? (process.kill(conn.location.pid, 'SIGKILL'), Promise.resolve()) : conn.close();
      expect(await request).toBe(end === 'its command process killed' ? 'PeerExitedError' : 'ClosedError');
      await closing;
      await Promise.all(fill);
    } finally {
      await conn.close();
      if (helper) {
        process.kill(helper.pid, 'SIGCONT');
        await helper.stop();
        rmSync(helperDir, { recursive: true, force: true });
      }
    }
    watcher.postMessage('done');
    // Expected: null (the main thread never waited in that close). Fails with
    // 'syscall 3: wait_woken < sk_stream_wait_close < __tcp_close < tcp_close'
    // (syscall 436, close_range, in a plain node run): the client closed the
    // pin or queued copy on its event loop, which stayed there until the watcher had the
    // peer reset (for the linger time, 3600 s, without it).
    expect((await verdict).blocked).toBeNull();
  } finally {
    // End any close still waiting (a background one) and python.
    closeFd(stdinWrite);
    await pyExited;
    await watcher.terminate();
    closeFd(mine);
  }
});
