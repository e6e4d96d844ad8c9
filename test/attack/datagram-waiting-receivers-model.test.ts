/**
 * Model-based: an unbound sender's datagrams, sent with `whenFull: 'wait'`
 * to several names whose receivers are full, read now and then, closed,
 * and replaced by new sockets bound at the same names, in generated orders.
 * Each datagram goes to the receiver its name had when sendTo was called
 * (or, queued behind datagrams for the same name that still wait, to the
 * receiver those wait for, unless a send to it was refused already), or rejects (ECONNREFUSED once that receiver is
 * gone; ENOENT or ECONNREFUSED when the name had none): never to another
 * socket, whichever receivers other datagrams queued before it waited for. A datagram whose
 * receiver stays open and reads is delivered, with its fds; nothing hangs,
 * and the fd table is the same afterwards.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { QueueFullError, TimeoutError } from '../../src/errors';
import { diffFdTables, formatFdTableDiff, openFdTable, sameFile } from '../../src/fd';
import type { SocketAddress } from '../../src/socket';
import { abstractName, openBackgroundClosesDone, withScope, type Scope } from '../native/helpers';

const QLEN = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim());
const CAPACITY = QLEN + 1; // unix_recvq_full: full once it holds more than max_dgram_qlen
const NAMES = 3;
const SEED = Number(process.env.FDBRIDGE_TEST_SEED ?? 20261204);

type Action =
  | { kind: 'send'; name: number; fds: number }
  | { kind: 'turn' }
  | { kind: 'read'; name: number }
  | { kind: 'close'; name: number; rebind: boolean };

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('send' as const), name: fc.nat(NAMES - 1), fds: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('turn' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), name: fc.nat(NAMES - 1) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('close' as const), name: fc.nat(NAMES - 1), rebind: fc.boolean() }),
  },
);

interface Receiver {
  id: number;
  socket: DatagramSocket;
  closed: boolean;
}

interface Sent {
  name: number;
  to: Receiver | undefined; // the receiver it goes to (see the send action)
  queued: boolean; // it waited in the sender's queue (settled since once outcome is set)
  file: number; // which of the files its fds are
  fds: number;
  outcome?: 'sent' | string; // 'sent' or the rejection's code
  message?: string;
  receivedBy?: number;
}

// What the generated runs reached, all runs together (a generator that never
// makes a datagram wait, or never closes a receiver under one, tests nothing).
const reached = { refusedAfterWaiting: 0, deliveredAfterWaiting: 0, rebound: 0 };

async function run(s: Scope, kind: 'path' | 'abstract', actions: readonly Action[]): Promise<void> {
  const dir = join(s.dir(), 'p');
  mkdirSync(dir, { mode: 0o700 });
  const addresses: SocketAddress[] = Array.from({ length: NAMES }, (_, i) =>
    kind === 'path' ? join(dir, `n${i}.sock`) : { abstract: abstractName(`model${i}`) },
  );
  const files = [s.file('f0').fd, s.file('f1').fd, s.file('f2').fd];
  let nextId = 0;
  const receivers: Receiver[] = [];
  const at: Array<Receiver | undefined> = [];
  const bind = (name: number): Receiver => {
    const r = { id: nextId++, socket: DatagramSocket.bind(addresses[name]!), closed: false };
    receivers.push(r);
    at[name] = r;
    return r;
  };
  const tx = DatagramSocket.open();
  const sent: Sent[] = [];
  const settling: Array<Promise<void>> = [];
  const wrong: string[] = [];
  const readOne = async (r: Receiver, timeoutMs: number): Promise<boolean> => {
    let got;
    try {
      got = await r.socket.receive({ timeoutMs });
    } catch (err) {
      if (err instanceof TimeoutError) return false;
      throw err;
    }
    const text = got.data.toString();
    const same = got.fds.map((fd) => fd);
    const tag = /^d(\d+)$/.exec(text);
    if (tag) {
      const i = Number(tag[1]);
      const d = sent[i]!;
      d.receivedBy = r.id;
      if (d.to?.id !== r.id) wrong.push(`d${i} (for ${d.to?.id ?? 'none'}) received by ${r.id}`);
      if (same.length !== d.fds || !same.every((fd) => sameFile(fd, files[d.file]!.fd))) {
        wrong.push(`d${i} came with ${same.length} fds, not ${d.fds} of file ${d.file}`);
      }
    } else if (text !== 'fill') {
      wrong.push(`${r.id} received ${JSON.stringify(text)}`);
    }
    for (const fd of s.ownAll(got.fds)) fd.close();
    return true;
  };
  try {
    for (let name = 0; name < NAMES; name++) {
      bind(name);
      for (let i = 0; i < CAPACITY; i++) await tx.sendTo(addresses[name]!, Buffer.from('fill'), [], { whenFull: 'fail' });
    }
    for (const a of actions) {
      if (a.kind === 'send') {
        const i = sent.length;
        // Behind datagrams for this name that still wait, it waits for their
        // receiver, unless a send to that receiver was refused since (it is gone).
        const refused = (r: Receiver | undefined): boolean => sent.some((e) => e.to === r && e.queued && e.outcome === 'ECONNREFUSED');
        const waiting = sent.find((e) => e.name === a.name && e.queued && e.outcome === undefined && !refused(e.to));
        const d: Sent = { name: a.name, to: waiting ? waiting.to : at[a.name], file: i % files.length, fds: a.fds, queued: false };
        sent.push(d);
        const fds = Array.from({ length: a.fds }, () => files[d.file]!.fd);
        const queuedBefore = tx.queuedSends;
        settling.push(
          tx.sendTo(addresses[a.name]!, Buffer.from(`d${i}`), fds).then(
            () => void (d.outcome = 'sent'),
            (err: { code?: string; message?: string }) => {
              d.outcome = String(err.code);
              d.message = String(err.message);
            },
          ),
        );
        d.queued = tx.queuedSends > queuedBefore;
      } else if (a.kind === 'turn') {
        await new Promise((r) => setImmediate(r));
      } else if (a.kind === 'read') {
        const r = at[a.name];
        if (r) await readOne(r, 20);
      } else {
        const r = at[a.name];
        if (!r) continue;
        r.socket.close();
        r.closed = true;
        at[a.name] = undefined;
        if (a.rebind) bind(a.name);
      }
    }
    // Drain: the open receivers read until every datagram has settled. A
    // bound on the rounds, not on time: a datagram that never settles hangs.
    let all = false;
    void Promise.all(settling).then(() => (all = true));
    for (let round = 0; !all && round < 500; round++) {
      let any = false;
      for (const r of receivers) if (!r.closed && (await readOne(r, 10))) any = true;
      if (!any) await new Promise((r) => setImmediate(r));
    }
    expect({ unsettled: sent.flatMap((d, i) => (d.outcome === undefined ? [`d${i}`] : [])) }).toEqual({ unsettled: [] });
    for (const r of receivers) while (!r.closed && (await readOne(r, 10))); // what was sent, all read
    sent.forEach((d, i) => {
      if (d.outcome === 'sent') {
        // Delivered to its receiver: read by it unless it closed first.
        if (d.to === undefined) wrong.push(`d${i} sent with no receiver at its name`);
        else if (!d.to.closed && d.receivedBy !== d.to.id) wrong.push(`d${i} sent but never read by ${d.to.id}`);
      } else if (d.to === undefined) {
        if (d.outcome !== 'ENOENT' && d.outcome !== 'ECONNREFUSED') wrong.push(`d${i} (no receiver): ${d.outcome}`);
      } else if (d.outcome !== 'ECONNREFUSED' || !d.to.closed) {
        wrong.push(`d${i} (for ${d.to.id}, ${d.to.closed ? 'closed' : 'open'}): ${d.outcome}`);
      } else if (d.queued && !d.message!.includes('when it was sent is gone')) {
        wrong.push(`d${i}'s rejection does not say its receiver is gone: ${d.message}`);
      }
    });
    expect(wrong).toEqual([]);
    expect(tx.queuedSends).toBe(0);
    for (const d of sent) {
      if (d.queued && d.to?.closed && d.outcome === 'ECONNREFUSED') reached.refusedAfterWaiting++;
      if (d.queued && d.outcome === 'sent') reached.deliveredAfterWaiting++;
    }
    if (receivers.length > NAMES) reached.rebound++;
  } finally {
    tx.close();
    for (const r of receivers) r.socket.close();
    for (const f of files) f.close();
  }
}

test("generated: an unbound sender's waiting datagrams go to the receiver their name had when sent, or reject", () =>
  withScope(async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('path' as const, 'abstract' as const), fc.array(action, { maxLength: 40 }), (kind, actions) =>
        withScope((inner) => run(inner, kind, actions)),
      ),
      { numRuns: 60, seed: SEED },
    );
    expect(Object.values(reached).every((n) => n > 0)).toBe(true);
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }), 120_000);

test('the datagrams of a name queued around one for another full receiver all wait for the first receiver', () =>
  withScope(async (s) => {
    // [a1 -> A, b1 -> B, a2 -> A], A and B full: A reads, a1 goes; A is
    // closed and its name bound again while b1 still waits for B; B reads,
    // b1 goes, then a2's turn comes.
    const before = openFdTable();
    for (const kind of ['path', 'abstract'] as const) {
      await run(s, kind, [
        { kind: 'send', name: 0, fds: 1 },
        { kind: 'send', name: 1, fds: 1 },
        { kind: 'send', name: 0, fds: 2 },
        { kind: 'read', name: 0 },
        { kind: 'turn' },
        { kind: 'close', name: 0, rebind: true },
        { kind: 'read', name: 1 },
        { kind: 'turn' },
        { kind: 'send', name: 0, fds: 1 },
      ]);
    }
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));

test('an unbound sender waits for at most 64 receivers at once: past them sendTo rejects with QueueFullError and sends nothing', () =>
  withScope(async (s) => {
    const before = openFdTable();
    const dir = join(s.dir(), 'p');
    mkdirSync(dir, { mode: 0o700 });
    const at = (i: number): string => join(dir, `r${i}.sock`);
    const receivers = Array.from({ length: 65 }, (_, i) => s.add(DatagramSocket.bind(at(i))));
    const tx = s.add(DatagramSocket.open());
    const f = s.file('secret').fd;
    // The first receiver is full: what follows waits behind it, each for its own receiver.
    for (let i = 0; i < CAPACITY; i++) await tx.sendTo(at(0), Buffer.from('fill'), [], { whenFull: 'fail' });
    const sends = Array.from({ length: 64 }, (_, i) => tx.sendTo(at(i), Buffer.from(`d${i}`), [f.fd]));
    const refused = await tx.sendTo(at(64), Buffer.from('d64'), [f.fd]).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(QueueFullError);
    expect((refused as QueueFullError).message).toMatch(/wait for 64 receivers already/);
    expect((refused as QueueFullError).waitingReceivers).toBe(64);
    expect(tx.queuedSends).toBe(64);
    // Room at the first: all of them go, each to its own receiver with its fd.
    for (let i = 0; i < CAPACITY; i++) await receivers[0]!.receive();
    await Promise.all(sends);
    for (let i = 0; i < 64; i++) {
      const got = await receivers[i]!.receive({ timeoutMs: 5000 });
      const fds = s.ownAll(got.fds);
      expect({ data: got.data.toString(), same: got.fds.length === 1 && sameFile(got.fds[0]!, f.fd) }).toEqual({ data: `d${i}`, same: true });
      for (const fd of fds) fd.close();
    }
    await expect(receivers[64]!.receive({ timeoutMs: 50 })).rejects.toBeInstanceOf(TimeoutError);
    // Once they have gone, the refused one can be sent again.
    await tx.sendTo(at(64), Buffer.from('again'), []);
    expect((await receivers[64]!.receive({ timeoutMs: 5000 })).data.toString()).toBe('again');
    tx.close();
    for (const r of receivers) r.close();
    f.close();
    await openBackgroundClosesDone();
    expect(formatFdTableDiff(diffFdTables(before, openFdTable()))).toBe('');
  }));
