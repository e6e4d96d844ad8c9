/**
 * A datagram that waits for a full receiver (`whenFull: 'wait'`) is sent
 * again by name once the receiver has room or is gone. If the receiver
 * closed and another socket bound the same name meanwhile (a path this
 * process binds again, an abstract name anyone may take, another user
 * included), the waiting datagram and its fds must not go to that socket:
 * every datagram queued for the name rejects (ECONNREFUSED, as for a
 * receiver that went away), the new socket gets none of them, and a send
 * made after that reaches the new socket as any send does. Datagrams queued
 * for other names are not touched.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { createRng } from '../../harness/rng';
import { DatagramSocket } from '../../src/datagram';
import type { SocketAddress } from '../../src/socket';
import { TimeoutError } from '../../src/errors';
import { diffFdTables, formatFdTableDiff, openFdTable, sameFile } from '../../src/fd';
import { abstractName, expectSystemError, openBackgroundClosesDone, rejection, withScope, type Scope } from '../native/helpers';

const QLEN = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim());
// unix_recvq_full: a receiver is full once it holds more than max_dgram_qlen.
const CAPACITY = QLEN + 1;
const SEED = Number(process.env.FDBRIDGE_TEST_SEED ?? 20261204);

function addressIn(s: Scope, kind: 'path' | 'abstract', tag: string): SocketAddress {
  if (kind === 'abstract') return { abstract: abstractName(tag) };
  const dir = join(s.dir(), 'p');
  mkdirSync(dir, { mode: 0o700 });
  return join(dir, `${tag}.sock`);
}

/** Fills `address`'s receiver to CAPACITY with datagrams that carry no fd. */
async function fill(tx: DatagramSocket, address: SocketAddress): Promise<void> {
  for (let i = 0; i < CAPACITY; i++) await tx.sendTo(address, Buffer.from(`fill${i}`), [], { whenFull: 'fail' });
}

test('generated: datagrams waiting for a receiver that closed are never given to the socket that binds its name next', () =>
  withScope(async (s) => {
    const rng = createRng(SEED);
    const before = openFdTable();
    for (let round = 0; round < 16; round++) {
      const kind = rng.pick(['path', 'abstract'] as const);
      const rebound = rng.pick([true, true, false]);
      const waiting = rng.int(1, 4);
      const otherAt = rng.next() < 0.5 ? rng.int(0, waiting) : -1; // a datagram for another receiver, queued among them
      const fdCount = rng.int(0, 3);
      // Event-loop turns before the receiver closes: 0, the first datagram has
      // met its receiver full in sendTo; more, the socket waits on its pin.
      const turns = rng.int(0, 2);
      const where = `round ${round}: ${kind}, ${waiting} waiting, rebound ${rebound}, other at ${otherAt}, ${fdCount} fds, ${turns} turns`;
      const address = addressIn(s, kind, `r${round}`);
      const otherAddress = addressIn(s, kind, `o${round}`);
      const r1 = DatagramSocket.bind(address);
      const other = s.add(DatagramSocket.bind(otherAddress));
      const tx = s.add(DatagramSocket.open());
      const f = s.file(`secret${round}`).fd;
      await fill(tx, address);
      const sends: Array<Promise<void>> = [];
      let otherSend: Promise<void> | undefined;
      for (let i = 0; i <= waiting; i++) {
        if (i === otherAt) otherSend = tx.sendTo(otherAddress, Buffer.from('for-other'), [f.fd]);
        if (i < waiting) sends.push(tx.sendTo(address, Buffer.from(`for-r1-${i}`), Array.from({ length: fdCount }, () => f.fd)));
      }
      // One for the other receiver ahead of them all goes at once (the queue is empty).
      expect(tx.queuedSends).toBe(waiting + (otherAt > 0 ? 1 : 0));
      for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
      r1.close(); // in this turn: the sender's wake-up comes in a later one, after the new bind
      const r2 = rebound ? s.add(DatagramSocket.bind(address)) : undefined;
      const outcomes = await Promise.all(sends.map((p) => rejection(p)));
      // The receiver they waited for is gone, whoever has the name now.
      for (const err of outcomes) expectSystemError(err, 'ECONNREFUSED', 'sendto');
      if (otherSend) {
        await otherSend;
        const got = await other.receive({ timeoutMs: 5000 });
        const fds = s.ownAll(got.fds);
        expect({ where, data: got.data.toString(), same: got.fds.length === 1 && sameFile(got.fds[0]!, f.fd) }).toEqual({ where, data: 'for-other', same: true });
        for (const fd of fds) fd.close();
      }
      if (r2) {
        await expect(r2.receive({ timeoutMs: 50 })).rejects.toBeInstanceOf(TimeoutError);
        // What is sent from now on goes to the socket that has the name now.
        await tx.sendTo(address, Buffer.from('fresh'), [f.fd]);
        const got = await r2.receive({ timeoutMs: 5000 });
        const fds = s.ownAll(got.fds);
        expect({ where, data: got.data.toString(), fds: got.fds.length }).toEqual({ where, data: 'fresh', fds: 1 });
        for (const fd of fds) fd.close();
        r2.close();
      }
      expect(tx.queuedSends).toBe(0);
      tx.close();
      other.close();
      f.close();
    }
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));

const asRoot = process.getuid?.() === 0 ? test : test.skip;

asRoot("another user that binds a closed receiver's abstract name gets none of the datagrams that waited for it", () =>
  withScope(async (s) => {
    const before = openFdTable();
    const name = abstractName('squat');
    const address = { abstract: name };
    const r1 = DatagramSocket.bind(address);
    const tx = s.add(DatagramSocket.open());
    const secret = s.file('root-secret').fd;
    await fill(tx, address);
    const waiting = tx.sendTo(address, Buffer.from('for-r1-only'), [secret.fd]);
    // The other user's socket takes the name once it is free and says so in
    // a file; the event loop is held meanwhile (a synchronous wait), so the
    // name is taken before the sender looks at its receiver again.
    const dir = s.dir();
    chmodSync(dir, 0o777);
    const flag = join(dir, 'bound');
    const squatter = s.child(
      spawn(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          '/usr/bin/python3',
          '-c',
          [
            'import socket, sys, os, array',
            's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
            'while True:',
            '    try:',
            "        s.bind(b'\\0' + sys.argv[1].encode()); break",
            '    except OSError: pass',
            "open(sys.argv[2], 'w').write('bound')",
            's.settimeout(1.0)',
            'got = []',
            'try:',
            '    while True:',
            '        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(253 * 4))',
            '        got.append([msg.decode(), sum(len(d) // 4 for _, _, d in anc)])',
            'except socket.timeout: pass',
            'print(got, flush=True)',
          ].join('\n'),
          name,
          flag,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      ),
    );
    let out = '';
    squatter.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const ended = new Promise<number | null>((resolve) => squatter.once('exit', resolve));
    // The receiver closes; the other user spins on bind until the name is free.
    r1.close();
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let waited = 0; !existsSync(flag); waited += 5) {
      // A guard against a squatter that never starts (no python3, no setpriv), not a bound on the outcome.
      if (waited > 30_000) throw new Error('the other user never bound the name');
      Atomics.wait(pause, 0, 0, 5);
    }
    expectSystemError(await rejection(waiting), 'ECONNREFUSED', 'sendto');
    expect(await ended).toBe(0);
    expect(out.trim()).toBe('[]');
    tx.close();
    secret.close();
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));

test("a receiver closed and its name bound again by a sent datagram's own callback: the next one waiting for it is not delivered there", () =>
  withScope(async (s) => {
    const before = openFdTable();
    for (const behindOther of [false, true]) {
      const address = addressIn(s, 'path', behindOther ? 'b' : 'a');
      const otherAddress = addressIn(s, 'path', 'o');
      const r1 = DatagramSocket.bind(address);
      const other = s.add(DatagramSocket.bind(otherAddress));
      const tx = s.add(DatagramSocket.open());
      const f = s.file(behindOther ? 'secret-b' : 'secret-a').fd;
      await fill(tx, address);
      // Queued behind a datagram for another receiver, full too: these meet
      // their receiver full only once that one has gone.
      if (behindOther) await fill(tx, otherAddress);
      const first = behindOther ? tx.sendTo(otherAddress, Buffer.from('b1')) : undefined;
      const a1 = tx.sendTo(address, Buffer.from('a1'));
      const a2 = tx.sendTo(address, Buffer.from('a2-for-r1-only'), [f.fd]);
      let r2: DatagramSocket | undefined;
      void a1.then(() => {
        r1.close();
        r2 = s.add(DatagramSocket.bind(address));
      });
      if (first) {
        await other.receive();
        await first;
      }
      await r1.receive(); // room for a1
      await a1;
      expectSystemError(await rejection(a2), 'ECONNREFUSED', 'sendto');
      await expect(r2!.receive({ timeoutMs: 50 })).rejects.toBeInstanceOf(TimeoutError);
      r2!.close();
      tx.close();
      other.close();
      f.close();
    }
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));

test('a bound sender whose receiver is connected back to it waits on its own full send buffer: no send fails', () =>
  withScope(async (s) => {
    const before = openFdTable();
    const dir = join(s.dir(), 'p');
    mkdirSync(dir, { mode: 0o700 });
    const txPath = join(dir, 'tx.sock');
    const rxPath = join(dir, 'rx.sock');
    const tx = s.add(DatagramSocket.bind(txPath));
    // A receiver connected to the sender (as a client that connect()s to its
    // server): the kernel skips the queue check for its peer, so a full
    // send buffer of ours is what stops the sends.
    const receiver = s.child(
      spawn(
        '/usr/bin/python3',
        [
          '-c',
          [
            'import socket, sys, time',
            's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
            's.bind(sys.argv[1]); s.connect(sys.argv[2])',
            "print('ready', flush=True)",
            'sys.stdin.read()',
          ].join('\n'),
          rxPath,
          txPath,
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      ),
    );
    await new Promise<void>((resolve) => receiver.stdout!.once('data', () => resolve()));
    const outcomes: string[] = [];
    const sends = Array.from({ length: 600 }, () =>
      tx.sendTo(rxPath, Buffer.alloc(1000, 1)).then(
        () => outcomes.push('sent'),
        (err: { code?: string }) => outcomes.push(String(err.code)),
      ),
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(outcomes.filter((o) => o !== 'sent')).toEqual([]);
    expect(tx.queuedSends).toBeGreaterThan(0); // some wait: the test reached the full buffer
    tx.close();
    await Promise.all(sends);
    expect(new Set(outcomes.filter((o) => o !== 'sent'))).toEqual(new Set(['ECANCELED']));
    receiver.stdin!.end();
    await new Promise((r) => receiver.once('exit', r));
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));
