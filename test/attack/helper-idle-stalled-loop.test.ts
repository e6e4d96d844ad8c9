/**
 * A helper daemon whose event loop was held up (a long garbage collection,
 * a command's synchronous work, a machine too loaded to run it) longer than
 * idleTimeoutMs must not cut a client whose request came meanwhile and
 * waits, unread, in its socket: that client is not idle, the daemon is
 * late. Its timer looks at the clients only once the requests waiting have
 * been read. Here the daemon runs in this process and the test holds the
 * loop up itself, with the client's CALL already sent: after the hold the
 * due timer and the waiting request meet in the same loop turn.
 */
import { HelperDaemon, openFdTable, closeFd } from '../../src';
import { decodeFrame, encodeJson, FrameType, PROTOCOL_VERSION } from '../../src/protocol';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';
import { fdTableSettles } from '../util/processes';
import { within } from '../util/within';

/** The next frame on raw socket `fd`, turning the event loop while there is none. */
async function next(fd: number): Promise<{ type: number; id: number; message?: string } | 'eof'> {
  for (;;) {
    let m;
    try {
      m = receiveNow(fd, 64 * 1024, 0);
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_FDBRIDGE_EOF') return 'eof';
      throw e;
    }
    if (m) return decodeFrame(m.data, []) as { type: number; id: number; message?: string };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Holds this thread (and the daemon's event loop with it) for `ms`. */
function holdLoop(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // the loop cannot turn
  }
}

test.each([1, 2, 3])('a request that waits unread while the loop is held up past idleTimeoutMs is answered, not cut as idle (hold %i x the timeout)', async (times) => {
  const before = openFdTable(process.pid);
  const idleTimeoutMs = 200;
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-idle-stalled-${process.pid}-${times}`, diagnostics: true, limits: { idleTimeoutMs } });
  const fd = rawConnect('seqpacket', daemon.socketPath.slice(1), true);
  try {
    sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
    expect(await next(fd)).toMatchObject({ type: FrameType.READY });
    sendNow(fd, encodeJson(FrameType.CALL, 1, { method: 'where', args: [] }));
    // The timer is due well before the hold ends: at least idleTimeoutMs since READY, and since the CALL was sent.
    holdLoop(times * idleTimeoutMs + idleTimeoutMs);
    expect(await within(next(fd), 20_000, 'the reply to the call')).toMatchObject({ type: FrameType.RESULT, id: 1 });
    expect(daemon.stats.quotaHits.idleTimeout).toBe(0);
  } finally {
    closeFd(fd);
    await daemon.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
