/**
 * A limit that ends a helper daemon's connection is told to the client as
 * a REFUSED naming the quota, after the replies queued before it: a client
 * that reads slowly (its replies waiting in the daemon's send queue, past
 * what the kernel holds) reads them all, then the REFUSED, then its end of
 * file, and fails with the quota rather than as a peer that went away. A
 * client that does not read them is not waited for past the daemon's
 * stalledReaderTimeoutMs, and one that hangs up is not waited for at all:
 * the daemon lets the connection go either way.
 */
import fc from 'fast-check';

import { closeFd, HelperDaemon, openFdTable } from '../../src';
import { decodeFrame, encodeJson, FrameType, PROTOCOL_VERSION } from '../../src/protocol';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';
import { fdTableSettles } from '../util/processes';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

const RECEIVE_BYTES = 256 * 1024;

/**
 * The next message on raw socket `fd`, turning the event loop while there is none: the frame, or 'eof'.
 * A daemon that closes the connection with calls of the client's unread resets it (ECONNRESET), and
 * recvmsg reports that before the messages the daemon sent earlier, which stay queued up to the end of
 * file: this reads on past it, as a connection's socket does (CONFORMANCE.md, native/unix_socket.cc).
 */
async function next(fd: number): Promise<{ type: number; id: number; message?: string } | 'eof'> {
  for (;;) {
    let m;
    try {
      m = receiveNow(fd, RECEIVE_BYTES, 0);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_FDBRIDGE_EOF') return 'eof';
      if (code === 'ECONNRESET') continue;
      throw e;
    }
    if (m) return decodeFrame(m.data, []) as { type: number; id: number; message?: string };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Every message up to the end of file, as `RESULT <id>` / `REFUSED` lines. */
async function readToEnd(fd: number): Promise<Array<string>> {
  const seen: string[] = [];
  for (let f = await next(fd); f !== 'eof'; f = await next(fd)) {
    seen.push(f.type === FrameType.RESULT ? `RESULT ${f.id}` : f.type === FrameType.REFUSED ? `REFUSED ${f.message ?? ''}` : `type ${f.type}`);
  }
  return seen;
}

/** Waits until `ok()` holds, a TimeoutError naming `what` after a deadline of the test's own. */
function until(ok: () => boolean, what: string): Promise<void> {
  return within(
    (async () => {
      while (!ok()) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    20_000,
    what,
  );
}

let seq = 0;

/**
 * The examples' calls: 30 replies of 100 kB are more than the kernel holds
 * between the daemon and a client that does not read (its socket's send
 * buffer, about 200 kB), so the REFUSED waits in the daemon's send queue.
 */
const FILLING = { calls: 30, size: 100_000 };

test('generated: an idle client cut off with replies unread reads them all, then the REFUSED naming the quota; one that stops reading or hangs up is let go', async () => {
  const before = openFdTable(process.pid);
  await assertGuarded(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 1000, max: 150_000 }),
      fc.constantFrom('reads' as const, 'stops reading' as const, 'hangs up' as const),
      async (calls, size, client) => {
        // A client that reads is never taken for a stalled one here; one that stops is, soon (after its idle
        // timeout). The one that reads has replies to read only if the daemon read its calls before it found
        // it idle: its timeout is long enough that a loaded machine does not keep the daemon from its
        // socket that long between the HELLO and the calls (100 ms did, 4 runs of 4 beside 3 CPU hogs).
        const idleTimeoutMs = client === 'reads' ? 1000 : 100;
        const limits = { idleTimeoutMs, stalledReaderTimeoutMs: client === 'reads' ? 600_000 : 300 };
        const daemon = HelperDaemon.start({ socketPath: `@fdbridge-refused-behind-${process.pid}-${seq++}`, diagnostics: true, limits });
        const fd = rawConnect('seqpacket', daemon.socketPath.slice(1), true);
        let open = true;
        try {
          // The calls follow the HELLO at once, before its READY is read: the daemon finds them queued behind it.
          sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
          // As many echo calls as the sockets take now; none of the replies is read until the daemon has ended the connection.
          const payload = 'e'.repeat(size);
          let sent = 0;
          for (let id = 1; id <= calls; id++) {
            try {
              sendNow(fd, encodeJson(FrameType.CALL, id, { method: 'echo', args: [payload] }));
            } catch (e) {
              if ((e as { code?: string }).code === 'EAGAIN') break;
              throw e;
            }
            sent++;
          }
          expect(sent).toBeGreaterThan(0);
          expect(await next(fd)).toMatchObject({ type: FrameType.READY });
          await until(() => daemon.stats.quotaHits.idleTimeout === 1, 'the idle timeout');
          // Replies that fill what the kernel holds: the REFUSED waits behind them, in the daemon's send queue.
          if (calls === FILLING.calls && size === FILLING.size) expect(daemon.status().clients.map((c) => c.queuedBytes > 0)).toEqual([true]);
          if (client === 'reads') {
            const seen = await within(readToEnd(fd), 20_000, 'the replies, the REFUSED and the end of file');
            // The replies to the calls the daemon read, each once and in order, then the REFUSED.
            const results = seen.slice(0, -1);
            expect(results.length).toBeGreaterThan(0);
            expect(results).toEqual(results.map((_, i) => `RESULT ${i + 1}`));
            expect(seen[seen.length - 1]).toMatch(new RegExp(`^REFUSED quota idleTimeout: idle for more than ${idleTimeoutMs} ms`));
          } else if (client === 'hangs up') {
            closeFd(fd);
            open = false;
          }
          // The daemon lets the connection go (a client that stops reading: once stalledReaderTimeoutMs has passed).
          await daemon.idle(20_000);
          expect(daemon.status().clients).toEqual([]);
        } finally {
          if (open) closeFd(fd);
          await daemon.close();
        }
      },
    ),
    {
      numRuns: 15,
      examples: [
        [FILLING.calls, FILLING.size, 'reads'],
        [2, 1000, 'reads'],
        [FILLING.calls, FILLING.size, 'stops reading'],
        [FILLING.calls, FILLING.size, 'hangs up'],
      ],
    },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);

test('generated: an idle client whose unread replies fill the daemon\'s send queue still reads the REFUSED naming the quota after them', async () => {
  const before = openFdTable(process.pid);
  await assertGuarded(
    fc.asyncProperty(fc.integer({ min: 1, max: 64 * 1024 }), fc.integer({ min: 1000, max: 150_000 }), async (maxQueuedBytes, size) => {
      // Reading pauses once maxQueuedBytes of replies wait (it is below SERVE_PAUSE_READING_AT), and the
      // calls are sent one at a time, each read and answered before the next: the queue ends full
      // (at or past its limit, where any other send is refused), with nothing in flight, until the idle cut.
      const limits = { idleTimeoutMs: 1000, stalledReaderTimeoutMs: 600_000, maxQueuedBytes };
      const daemon = HelperDaemon.start({ socketPath: `@fdbridge-refused-full-${process.pid}-${seq++}`, diagnostics: true, limits });
      const fd = rawConnect('seqpacket', daemon.socketPath.slice(1), true);
      try {
        sendNow(fd, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
        expect(await next(fd)).toMatchObject({ type: FrameType.READY });
        const payload = 'f'.repeat(size);
        const queued = (): number => daemon.status().clients[0]?.queuedBytes ?? 0;
        let sent = 0;
        // The idle cut can come before the queue is full only if this process stopped for idleTimeoutMs
        // between two calls (a machine too loaded to run it): the calls sent then are answered all the same.
        while (queued() < maxQueuedBytes && daemon.stats.quotaHits.idleTimeout === 0) {
          expect(sent).toBeLessThan(500); // the kernel holds a few hundred KiB at most
          sendNow(fd, encodeJson(FrameType.CALL, sent + 1, { method: 'echo', args: [payload] }));
          sent++;
          // The daemon, on this event loop, reads the call and answers it (into the kernel, or the queue).
          for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
          await until(() => (daemon.status().clients[0]?.inFlight ?? 0) === 0, 'the call answered');
        }
        await until(() => daemon.stats.quotaHits.idleTimeout === 1, 'the idle timeout');
        expect(daemon.stats.quotaHits.queuedBytes).toBe(0);
        const seen = await within(readToEnd(fd), 20_000, 'the replies, the REFUSED and the end of file');
        expect(seen.slice(0, -1)).toEqual(Array.from({ length: sent }, (_, i) => `RESULT ${i + 1}`));
        expect(seen[seen.length - 1]).toMatch(/^REFUSED quota idleTimeout: idle for more than 1000 ms/);
        await daemon.idle(20_000);
      } finally {
        closeFd(fd);
        await daemon.close();
      }
    }),
    { numRuns: 10, examples: [[1, 100_000], [64 * 1024, 1000]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);
