/**
 * receive({ timeoutMs }) when the messages are already queued and the event
 * loop comes late: a loop turn runs its due timers before it reads, so the
 * deadline's timer fires first, yet a message queued by then is received,
 * not a TimeoutError, and only the receives left with nothing to read time
 * out. The late turn is staged by blocking the loop past every deadline
 * right after the receives are made (no timing bound decides the verdict:
 * the block only makes sure every timer is due). Generated: socket kind ×
 * messages queued (0–3, 0–2 fds each) × receives made (1–4, timeouts 0–3
 * ms). The jest setup checks the fd table after the test.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { TimeoutError } from '../../src/errors';
import { closeFds, sameFile } from '../../src/fd';
import { type Message, UnixSocket } from '../../src/socket';
import { withScope } from './helpers';

type Kind = 'seqpacket' | 'seqpacket-batched' | 'dgram';

function blockLoop(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

test('generated: a message queued before a late loop turn is received, not timed out', () =>
  fc.assert(
    fc.asyncProperty(
      fc.constantFrom<Kind>('seqpacket', 'seqpacket-batched', 'dgram'),
      fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }),
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 4 }),
      (kind, fdsPerMessage, timeouts) =>
        withScope(async (s) => {
          const files = fdsPerMessage.map((_, i) => s.file(`f${i}`).fd.fd);
          let rx: UnixSocket | DatagramSocket;
          let send: (data: Buffer, fds: number[]) => Promise<void>;
          if (kind === 'dgram') {
            const address = join(s.dir(), 'rx.sock');
            const bound = s.add(DatagramSocket.bind(address));
            const tx = s.add(DatagramSocket.open());
            rx = bound;
            send = (data, fds) => tx.sendTo(address, data, fds);
          } else {
            const [a, b] = UnixSocket.pair('seqpacket', { batchMessages: kind === 'seqpacket-batched' });
            rx = s.add(a);
            const tx = s.add(b);
            send = (data, fds) => tx.send(data, fds);
          }
          for (const [i, n] of fdsPerMessage.entries()) await send(Buffer.from(`m${i}`), Array.from({ length: n }, () => files[i]!));

          const outcomes = timeouts.map((timeoutMs) =>
            rx.receive({ timeoutMs }).then(
              (m: Message) => m,
              (err: unknown) => err,
            ),
          );
          blockLoop(Math.max(...timeouts) + 20);
          const got = await Promise.all(outcomes);

          const received = got.filter((g): g is Message => !(g instanceof Error));
          try {
            // The first receives take the queued messages, in order, whole; the rest time out, saying after how long (and, for a datagram socket, why no end of file came).
            const why = kind === 'dgram' ? ' (a datagram peer that died sends no end of file)' : '';
            expect(got.map((g) => (g instanceof TimeoutError ? `timeout: ${g.message}` : g instanceof Error ? `${g.name}: ${g.message}` : (g as Message).data.toString()))).toEqual(
              timeouts.map((t, i) => (i < fdsPerMessage.length ? `m${i}` : `timeout: receive: nothing arrived within ${t} ms${why}`)),
            );
            received.forEach((m, i) => {
              expect(m.fds.length).toBe(fdsPerMessage[i]);
              for (const fd of m.fds) expect(sameFile(fd, files[i]!)).toBe(true);
            });
          } finally {
            closeFds(received.flatMap((m) => m.fds));
          }
        }),
    ),
    { numRuns: 60 },
  ));
