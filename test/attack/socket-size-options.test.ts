/**
 * `maxFds` and `bufferSize` of a socket (DatagramSocket, UnixSocket) are
 * integers in their ranges (0..253 fds, 1 byte..64 MiB), or the socket is
 * refused with a RangeError and nothing is left open. The addon truncated
 * what it was given: `maxFds: NaN` made a socket that took 0 fds a receive
 * (every datagram carrying one arrived truncated, its fds closed),
 * `maxFds: 1.5` one that took 1, and a string was ignored for the default.
 *
 * Generated: values in range (each then receives a datagram of exactly
 * `maxFds` fds whole, and one of `bufferSize` bytes whole) and values out of
 * it (fractions, NaN, infinities, strings, past either end); the fd table is
 * the same after each case.
 */
import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { closeFds, formatFdTableDiff, openFdTable } from '../../src/fd';
import { UnixSocket } from '../../src/socket';
import { settleFdTable } from '../util/settle';

let n = 0;
const name = (): string => `fdbridge-attack-size-options-${process.pid}-${n++}`;

const notAnInteger = fc.oneof(
  fc.constantFrom<unknown>(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0.5, 1.5, '5', null, true, {}),
  fc.double({ noInteger: true, noNaN: true, min: -1e6, max: 1e9 }),
);

/** `fn` throws a RangeError with `message` (the addon's: another realm's RangeError, compared by name). */
function expectRangeError(fn: () => unknown, message: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toMatchObject({ name: 'RangeError', message });
}

async function tableBack(before: Map<number, string>): Promise<void> {
  expect(formatFdTableDiff(await settleFdTable(process.pid, before, 2000))).toBe('');
}

test('generated: maxFds 0..253 receives a datagram of that many fds whole; anything else is a RangeError and nothing is open', async () => {
  const bad = fc.oneof(notAnInteger, fc.integer({ max: -1 }), fc.integer({ min: 254 }));
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.integer({ min: 0, max: 253 }).map((v) => ({ v, ok: true })), bad.map((v) => ({ v, ok: false }))), async ({ v, ok }) => {
      const before = openFdTable();
      if (!ok) {
        expectRangeError(() => DatagramSocket.bind({ abstract: name() }, { maxFds: v as number }), 'maxFds must be between 0 and 253');
        expectRangeError(() => DatagramSocket.open({ maxFds: v as number }), 'maxFds must be between 0 and 253');
        expectRangeError(() => UnixSocket.pair('seqpacket', { maxFds: v as number }), 'maxFds must be between 0 and 253');
        await tableBack(before);
        return;
      }
      const k = v as number;
      const rx = DatagramSocket.bind({ abstract: name() }, { maxFds: k });
      const tx = DatagramSocket.open();
      try {
        const fds = Array.from({ length: k }, () => rx.fd);
        await tx.sendTo(rx.address!, Buffer.from('x'), fds);
        const got = await rx.receive();
        const table = openFdTable();
        try {
          expect(got.fds.map((fd) => table.get(fd))).toEqual(fds.map(() => table.get(rx.fd)));
        } finally {
          closeFds(got.fds);
        }
      } finally {
        rx.close();
        tx.close();
      }
      await tableBack(before);
    }),
    { numRuns: 40 },
  );
});

test('generated: bufferSize 1 byte..64 MiB receives a datagram of that many bytes whole; anything else is a RangeError and nothing is open', async () => {
  const bad = fc.oneof(notAnInteger, fc.integer({ max: 0 }), fc.integer({ min: 64 * 1024 * 1024 + 1 }));
  // In range: sizes a datagram can have here (the kernel's own limit on one is about 208 KiB by default).
  const good = fc.oneof(fc.constantFrom(1, 64 * 1024 * 1024), fc.integer({ min: 1, max: 150_000 }));
  await fc.assert(
    fc.asyncProperty(fc.oneof(good.map((v) => ({ v, ok: true })), bad.map((v) => ({ v, ok: false }))), async ({ v, ok }) => {
      const before = openFdTable();
      if (!ok) {
        expectRangeError(() => DatagramSocket.bind({ abstract: name() }, { bufferSize: v as number }), 'bufferSize must be between 1 and 64 MiB');
        expectRangeError(() => DatagramSocket.open({ bufferSize: v as number }), 'bufferSize must be between 1 and 64 MiB');
        expectRangeError(() => UnixSocket.pair('seqpacket', { bufferSize: v as number }), 'bufferSize must be between 1 and 64 MiB');
        await tableBack(before);
        return;
      }
      const size = Math.min(v as number, 150_000);
      const rx = DatagramSocket.bind({ abstract: name() }, { bufferSize: v as number });
      const tx = DatagramSocket.open();
      try {
        const data = Buffer.alloc(size, 7);
        await tx.sendTo(rx.address!, data);
        expect((await rx.receive()).data.equals(data)).toBe(true);
      } finally {
        rx.close();
        tx.close();
      }
      await tableBack(before);
    }),
    { numRuns: 40 },
  );
});
