/**
 * An unbound DGRAM sender's pins (native/datagram_wait.cc: a socket of
 * fdbridge's connected to a receiver its queued datagrams go through) at the
 * edges a user's code reaches: a completion that runs inside the sender's
 * close(), and the send queue's two limits, its bytes and the receivers it
 * waits for at once, each named by the QueueFullError it gives.
 */
import { closeSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DatagramSocket } from '../../src/datagram';
import { QueueFullError } from '../../src/errors';
import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { native } from './binding';

const CAPACITY = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim()) + 1;

function sender(): InstanceType<typeof native.Socket> {
  return new native.Socket(native.dgramSocket(), native.constants.SOCK_DGRAM, { maxFds: 0 });
}

function fill(tx: InstanceType<typeof native.Socket>, to: string): void {
  for (let i = 0; i < CAPACITY; i++) expect(tx.sendTo(to, false, Buffer.from(`m${i}`), [], true)).toBe(0);
}

/**
 * Runs `body` with a receiver bound at a path in a private directory and an
 * unbound raw sender; closes both and checks the fd table settles as it was.
 */
async function withSenderAndReceiver(body: (tx: InstanceType<typeof native.Socket>, rx: DatagramSocket, to: string) => Promise<void>): Promise<void> {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-pins-'));
  const rx = DatagramSocket.bind(join(dir, 'p', 'rx.sock'));
  const tx = sender();
  try {
    await body(tx, rx, rx.address as string);
  } finally {
    tx.close();
    rx.close();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

test("a completion that close() runs finds the waiting datagram's pin closed: a socket made at its number is made", () =>
  withSenderAndReceiver(async (tx, _rx, to) => {
    fill(tx, to);
    const had = new Set(openFdTable().keys());
    let pin = -1;
    const seen: string[] = [];
    expect(
      tx.sendTo(to, false, Buffer.from('waits'), [], true, (err: Error | null) => {
        // Inside tx.close(): the pin is closed already, so its number is free.
        seen.push(String((err as { code?: string } | null)?.code));
        let closedIt = 'closed it';
        try {
          closeSync(pin);
        } catch (e) {
          closedIt = String((e as { code?: string }).code);
        }
        seen.push(closedIt);
        const fd = native.dgramSocket(true);
        try {
          new native.Socket(fd, native.constants.SOCK_DGRAM, { maxFds: 0 }).close();
          seen.push('made');
        } catch (e) {
          seen.push(`refused ${String((e as { code?: string }).code)}`);
          closeSync(fd);
        }
      }),
    ).toBe(1);
    await turns(2);
    const made = [...openFdTable()].filter(([fd, target]) => !had.has(fd) && target.startsWith('socket:'));
    expect(made).toHaveLength(1); // the pin
    pin = made[0]![0];
    tx.close();
    expect(seen).toEqual(['ECANCELED', 'EBADF', 'made']);
  }));

test('64 receivers waited for: a datagram for a 65th is refused for them (waitingReceivers), one refused for the bytes says the bytes', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-pins-'));
  const receivers = Array.from({ length: 65 }, (_, i) => DatagramSocket.bind(join(dir, 'p', `r${i}.sock`)));
  const tx = sender();
  const at = (i: number): string => receivers[i]!.address as string;
  try {
    fill(tx, at(0));
    const settled: Array<string | null> = [];
    for (let i = 0; i < 64; i++) {
      expect(tx.sendTo(at(i), false, Buffer.from(`d${i}`), [], true, (err: Error | null) => settled.push(err ? String((err as { code?: string }).code) : null))).toBe(1);
    }
    let err: unknown;
    try {
      tx.sendTo(at(64), false, Buffer.from('d64'), [], true);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(QueueFullError);
    expect((err as QueueFullError).waitingReceivers).toBe(64);
    expect((err as Error).message).toMatch(/wait for 64 receivers already/);
    // The bytes refuse one for a receiver already waited for: said as the bytes.
    tx.setSendQueueLimits(10, -1);
    err = undefined;
    try {
      tx.sendTo(at(1), false, Buffer.from('over the bytes'), [], true);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(QueueFullError);
    expect((err as QueueFullError).waitingReceivers).toBeUndefined();
    expect((err as Error).message).toMatch(/the send queue is full \(64 messages/);
    tx.close();
    await turns(2);
    expect(new Set(settled)).toEqual(new Set(['ECANCELED']));
  } finally {
    tx.close();
    for (const r of receivers) r.close();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('a burst of waits reuses its retired pin: one socket made for many bursts to one receiver', () =>
  withSenderAndReceiver(async (tx, rx, to) => {
    const had = new Set(openFdTable().keys());
    const pins = new Set<string>();
    for (let burst = 0; burst < 5; burst++) {
      fill(tx, to);
      let done!: (err: Error | null) => void;
      const sent = new Promise<Error | null>((r) => (done = r));
      expect(tx.sendTo(to, false, Buffer.from(`b${burst}`), [], true, (e: Error | null) => done(e))).toBe(1);
      for (const [fd, target] of openFdTable()) if (!had.has(fd) && target.startsWith('socket:')) pins.add(target);
      for (let i = 0; i <= CAPACITY; i++) await rx.receive();
      expect(await sent).toBeNull();
    }
    expect(pins.size).toBe(1);
  }));

test("a queued datagram for a name whose receiver was refused since goes to the socket bound there now", async () => {
  const before = openFdTable();
  const name = { abstract: `fdb-pins-retry-${process.pid}` };
  const a = DatagramSocket.bind(name);
  const tx = DatagramSocket.open();
  let a2: DatagramSocket | undefined;
  try {
    for (let i = 0; i < CAPACITY; i++) await tx.sendTo(name, Buffer.from('m'), [], { whenFull: 'fail' });
    let retry: Promise<string> | undefined;
    const first = tx.sendTo(name, Buffer.from('a1')).catch((err: unknown) => {
      // Refused: its receiver is gone. What is sent now goes to the name's socket now.
      retry = tx.sendTo(name, Buffer.from('retry')).then(
        () => 'sent',
        (e: { code?: string }) => `rejected ${String(e.code)}`,
      );
      return (err as { code?: string }).code;
    });
    const second = tx.sendTo(name, Buffer.from('a2')).catch((err: { code?: string }) => err.code);
    await turns(2);
    a.close();
    a2 = DatagramSocket.bind(name);
    expect([await first, await second]).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
    expect(await retry).toBe('sent');
    expect((await a2.receive({ timeoutMs: 5000 })).data.toString()).toBe('retry');
  } finally {
    tx.close();
    a.close();
    a2?.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('a path names the socket file it leads to now: after a chdir, or a symlink moved, a queued datagram goes to the socket there', async () => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-pins-'));
  const cwd = process.cwd();
  mkdirSync(join(dir, 'one'), { mode: 0o700 });
  mkdirSync(join(dir, 'two'), { mode: 0o700 });
  const one = DatagramSocket.bind(join(dir, 'one', 'r.sock'));
  const two = DatagramSocket.bind(join(dir, 'two', 'r.sock'));
  const tx = DatagramSocket.open();
  try {
    for (const how of ['chdir', 'symlink'] as const) {
      let name: string;
      if (how === 'chdir') {
        process.chdir(join(dir, 'one'));
        name = 'r.sock';
      } else {
        symlinkSync(join(dir, 'one'), join(dir, 'L'));
        name = join(dir, 'L', 'r.sock');
      }
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(name, Buffer.from('fill'), [], { whenFull: 'fail' });
      const d1 = tx.sendTo(name, Buffer.from(`${how} d1 for one`));
      if (how === 'chdir') {
        process.chdir(join(dir, 'two'));
      } else {
        symlinkSync(join(dir, 'two'), join(dir, 'L2'));
        renameSync(join(dir, 'L2'), join(dir, 'L'));
      }
      const d2 = tx.sendTo(name, Buffer.from(`${how} d2 for two`));
      expect(tx.queuedSends).toBe(2);
      for (let i = 0; i < CAPACITY; i++) await one.receive();
      await Promise.all([d1, d2]);
      expect([(await one.receive({ timeoutMs: 5000 })).data.toString(), (await two.receive({ timeoutMs: 5000 })).data.toString()]).toEqual([
        `${how} d1 for one`,
        `${how} d2 for two`,
      ]);
      process.chdir(cwd);
    }
  } finally {
    process.chdir(cwd);
    tx.close();
    one.close();
    two.close();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
