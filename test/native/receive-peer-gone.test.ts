/**
 * receive({ peerPidfd }) when the peer answers and then exits: everything
 * it sent before its exit is in the receiver's queue by the time its pidfd
 * is readable, so the answers come first, in order, and only receives left
 * waiting once nothing is left to read reject with PeerGoneError — whether
 * the receives were waiting before the peer exited or made after, on a
 * SEQPACKET pair (read message by message, or batched) or a bound datagram
 * socket. Generated: socket kind × messages sent (0–3, 0–2 fds each) ×
 * receives made (1–4) × before/after the exit × whether the peer's end has
 * another holder (no end of file) or not. The jest setup checks the fd
 * table after the test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { EofError, PeerGoneError } from '../../src/errors';
import { closeFds } from '../../src/fd';
import { type Message, UnixSocket } from '../../src/socket';
import { TIME_SCALE, scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';
import { native } from './binding';
import { withScope } from './helpers';

type Kind = 'seqpacket' | 'seqpacket-batched' | 'dgram';

// Sends `count` messages ("m0", "m1", ...), message i carrying `fds[i]`
// fresh opens of file f<i> of `dir`, once a byte arrives on stdin; then exits.
const PEER = String.raw`
import array, os, socket, sys
count, dir, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
fds = [int(x) for x in sys.argv[4].split(',')] if count else []
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if target != '-' else socket.socket(fileno=3)
s.setblocking(True)
sys.stdin.buffer.read(1)
for i in range(count):
    opened = [os.open(os.path.join(dir, 'f%d' % i), os.O_RDONLY) for _ in range(fds[i])]
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', opened))] if opened else []
    if target != '-':
        s.sendmsg([b'm%d' % i], anc, 0, target)
    else:
        s.sendmsg([b'm%d' % i], anc)
`;

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

describe('receive({ peerPidfd }) takes what the peer sent before it exited', () => {
  test('generated: answers first, in order, whole; PeerGoneError only for receives left with nothing to read', () =>
    assertGuarded(
      fc.asyncProperty(
        fc.constantFrom<Kind>('seqpacket', 'seqpacket-batched', 'dgram'),
        fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }),
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom<'before' | 'after'>('before', 'after'),
        fc.boolean(),
        (kind, fdsPerMessage, receives, when, peerEndHeld) =>
          withScope(async (s) => {
            const dir = s.dir();
            fdsPerMessage.forEach((_, i) => writeFileSync(join(dir, `f${i}`), `file ${i}`));
            let rx: UnixSocket | DatagramSocket;
            let peerEnd: UnixSocket | undefined;
            let target = '-';
            const stdio: Array<'pipe' | 'ignore' | 'inherit' | number> = ['pipe', 'ignore', 'inherit'];
            if (kind === 'dgram') {
              target = join(dir, 'rx.sock');
              rx = s.add(DatagramSocket.bind(target));
            } else {
              const [a, b] = UnixSocket.pair('seqpacket', { batchMessages: kind === 'seqpacket-batched' });
              rx = s.add(a);
              peerEnd = s.add(b);
              stdio.push(b.fd);
            }
            const args = ['-c', PEER, String(fdsPerMessage.length), dir, target, fdsPerMessage.join(',') || '0'];
            const peer = s.child(spawn('python3', args, { stdio }));
            // Without another holder, the peer's exit is also an end of file.
            if (!peerEndHeld) peerEnd?.close({ shutdown: false });
            const pidfd = s.own(native.pidfdOpen(peer.pid as number));
            const gone = exited(peer);

            const settle = (p: Promise<Message>): Promise<Message | Error> => p.then((m) => m, (e: Error) => e);
            const pending: Array<Promise<Message | Error>> = [];
            const receiveAll = (): void => {
              for (let i = 0; i < receives; i++) pending.push(settle(rx.receive({ peerPidfd: pidfd.fd, timeoutMs: 20_000 })));
            };
            if (when === 'before') receiveAll();
            (peer.stdin as NonNullable<ChildProcess['stdin']>).end('x');
            await gone;
            expect(peer.exitCode).toBe(0);
            if (when === 'after') receiveAll();
            const results = await Promise.all(pending);

            const answered = Math.min(receives, fdsPerMessage.length);
            results.forEach((r, i) => {
              if (i < answered) {
                expect(r).not.toBeInstanceOf(Error);
                const m = r as Message;
                s.ownAll(m.fds);
                expect(m.data.toString()).toBe(`m${i}`);
                expect(m.fds).toHaveLength(fdsPerMessage[i] as number);
                const want = statSync(join(dir, `f${i}`), { bigint: true });
                for (const fd of m.fds) expect(native.identity(fd)).toMatchObject({ dev: want.dev, ino: want.ino });
              } else if (kind !== 'dgram' && !peerEndHeld) {
                // Nothing left but the end of file: either way the receive ends typed, never with an answer.
                expect(r instanceof PeerGoneError || r instanceof EofError).toBe(true);
              } else {
                expect(r).toBeInstanceOf(PeerGoneError);
              }
            });
            // What no receive took is still there, in order, for the next one.
            for (let i = answered; i < fdsPerMessage.length; i++) {
              const m = await rx.receive({ timeoutMs: 20_000 });
              closeFds(m.fds);
              expect(m.data.toString()).toBe(`m${i}`);
              expect(m.fds).toHaveLength(fdsPerMessage[i] as number);
            }
          }),
      ),
      // Each run starts a python3 peer, which under the sanitizers' preload
      // starts several times slower: that run makes fewer of them (its point
      // is the memory checks; Node 20 and 24 run all 40), and its limit, a
      // hang guard, is scaled as every other.
      { numRuns: Math.ceil(40 / TIME_SCALE) },
    ), scaled(240_000));
});
