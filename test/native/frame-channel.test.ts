/**
 * The frame channel (native/frame_channel.h), both ends of the protocol in
 * C++. The command's side: with serve on, a well-formed DUP request gets its
 * DUP_OK from the native layer (no JS callback), its fds join the ledger,
 * and everything else still reaches the message handler, in order. The
 * client's side: requests wait in one pending table and are settled from
 * their replies, an ERROR or a wrong reply through replyError, everything
 * at once through failAll; what is no reply to a pending request reaches the
 * handler.
 */
import { closeSync } from 'node:fs';

import fc from 'fast-check';

import { SystemError } from '../../src/errors';
import { closeFd, closesSettled, fdIdentity, fileAt, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { ChannelLedger, openFrameChannel, type FrameChannel, type FrameChannelCallbacks } from '../../src/frame-channel';
import { native } from './binding';
import { decodeFrame, encodeDup, encodeFdList, encodeJson, encodeResult, FrameType, HEADER_BYTES, MAX_FDS_PER_FRAME } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { setPassRights } from '../../src/testing';
import { withScope, type Scope } from './helpers';
import { fillUpTo } from '../util/fill-up-to';

interface Served {
  served: UnixSocket;
  channel: FrameChannel;
  ledger: ChannelLedger;
  client: UnixSocket;
  handled: Array<{ type: number; fds: number[] }>;
}

/** A served socket (the command's side) and a plain peer (the client's side). */
function pair(scope: Scope, callbacks: FrameChannelCallbacks = {}): Served {
  const [served, client] = UnixSocket.pair('seqpacket', { reuseBuffer: true });
  scope.add(served);
  scope.add(client);
  const handled: Array<{ type: number; fds: number[] }> = [];
  served.setMessageHandler((err, data, fds) => {
    if (err) throw err;
    handled.push({ type: (data as Buffer)[0] as number, fds: [...(fds as number[])] });
    scope.ownAll(fds as number[]);
  });
  const channel = openFrameChannel(served, callbacks);
  channel.serve(true);
  return { served, channel, ledger: new ChannelLedger(channel), client, handled };
}

function dupRequest(id: number): Buffer {
  const frame = encodeDup(0);
  frame.writeUInt32LE(id, 4);
  return frame;
}

test('a DUP is answered natively with the received fds, which join the ledger', () =>
  withScope(async (scope) => {
    const { channel, ledger, client, handled } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const b = scope.own(makeMemfd('b')).fd;
    await client.send(dupRequest(0xdeadbeef), [a, b, a]);
    const reply = await client.receive();
    expect(reply.fds).toEqual([]);
    expect(reply.data.length).toBe(HEADER_BYTES + 12);
    expect(reply.data[0]).toBe(FrameType.DUP_OK);
    expect(reply.data.readUInt32LE(4)).toBe(0xdeadbeef);
    const remote = [0, 1, 2].map((i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i));
    expect(sameFile(remote[0]!, a)).toBe(true);
    expect(sameFile(remote[1]!, b)).toBe(true);
    expect(sameFile(remote[2]!, a)).toBe(true);
    expect(handled).toEqual([]);
    expect(channel.served).toBe(1);
    expect(ledger.size).toBe(3);
    // Adopting takes one out of the ledger (the adopter closes it); a
    // sweep closes the rest.
    expect(ledger.adopt(remote[1]!)).toBe(true);
    expect(ledger.adopt(remote[1]!)).toBe(false);
    scope.own(remote[1]!);
    expect(ledger.sweep()).toBe(2);
    expect(openFdTable().has(remote[0]!)).toBe(false);
    expect(openFdTable().has(remote[2]!)).toBe(false);
    expect(fdIdentity(remote[1]!).type).toBe('file');
  }));

test('anything but a well-formed DUP goes to the handler, in order; so does every DUP once turned off', () =>
  withScope(async (scope) => {
    const { channel, client, handled } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const withPayload = Buffer.concat([dupRequest(1), Buffer.from([0])]);
    const flagged = dupRequest(2);
    flagged[1] = 1;
    native.sendNow(client.fd, withPayload, [a]);
    native.sendNow(client.fd, dupRequest(3), [a]); // served
    native.sendNow(client.fd, flagged, [a]);
    native.sendNow(client.fd, dupRequest(4), []); // no fds: not a DUP the native side answers
    native.sendNow(client.fd, encodeJson(FrameType.CALL, 5, { method: 'x', args: [] }));
    const reply = await client.receive();
    expect(reply.data.readUInt32LE(4)).toBe(3);
    // The CALL was sent last: once it is handled, everything before it has been.
    await until(() => handled.some((h) => h.type === FrameType.CALL));
    expect(handled.map((h) => h.type)).toEqual([FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CALL]);
    expect(handled.map((h) => h.fds.length)).toEqual([1, 1, 0, 0]);
    channel.serve(false);
    native.sendNow(client.fd, dupRequest(6), [a]);
    await until(() => handled.length >= 5);
    expect(handled.map((h) => h.type)).toEqual([FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CALL, FrameType.DUP]);
    expect(channel.served).toBe(1);
  }));

/**
 * To the loop's check phase: called from there, to the next turn's, after
 * its poll phase (the served socket's reads).
 */
const checkPhase = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * When the served side reads on after a DUP it answered (FrameChannel::ReadOn):
 * while the reads after answered DUPs have found the next request more often
 * than not lately (a score: +1 a request found, -1 the socket empty, within
 * [-2, 4], from 1; above 0 it reads on), and at every 16th DUP served. After
 * any other frame (a CALL) it reads on, and that read does not count.
 */
class ReadOnModel {
  score = 1;
  served = 0;
  /** Runs the loop's turns over `frames`, all queued at once; returns how many DUPs each turn answers. */
  turns(frames: ReadonlyArray<'dup' | 'call'>): number[] {
    const perTurn: number[] = [];
    let next = 0;
    while (next < frames.length) {
      const served = this.served;
      for (;;) {
        const frame = frames[next++];
        let readOn = true;
        if (frame === 'dup') {
          this.served++;
          readOn = this.score > 0 || this.served % 16 === 0;
        }
        if (!readOn) break;
        const found = next < frames.length;
        // Only the read after an answered DUP counts.
        if (frame === 'dup') this.score = found ? Math.min(this.score + 1, 4) : Math.max(this.score - 1, -2);
        if (!found) break;
      }
      perTurn.push(this.served - served);
    }
    return perTurn;
  }
}

type ReadOnFrames = Array<'dup' | 'call'>;
const alone = (n: number): ReadOnFrames[] => Array.from({ length: n }, () => ['dup']);
/**
 * What the client queues at once, step by step: DUPs one at a time (each
 * read after its answer finds nothing; once the score is down, only the
 * 16th DUPs read on, and 33-60 of them bring it to its floor), 2-20 DUPs
 * and CALLs together, or a few DUPs alone and then 24 DUPs together 3 or 4
 * times (each crosses a 16th DUP served: how the channel finds its way
 * back to reading on). At most 30 frames at once: the loop's 32 reads a
 * turn are never the limit.
 */
const readOnSteps = fc.oneof(
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 12 }).map(alone) },
  { weight: 1, arbitrary: fc.integer({ min: 33, max: 60 }).map(alone) },
  { weight: 3, arbitrary: fc.array(fc.constantFrom<'dup' | 'call'>('dup', 'dup', 'dup', 'dup', 'dup', 'call'), { minLength: 2, maxLength: 20 }).map((f) => [f]) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: 6, max: 12 }), fc.integer({ min: 3, max: 4 }))
      .map(([n, m]): ReadOnFrames[] => [...alone(n), ...Array.from({ length: m }, (): ReadOnFrames => Array.from({ length: 24 }, () => 'dup'))]),
  },
);

test('generated: the served side reads on after an answered DUP while those reads keep finding the next request, and at every 16th; a CALL\'s read on does not count', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.array(readOnSteps, { minLength: 1, maxLength: 30 }).map((s) => s.flat()), (steps) =>
      withScope(async (scope) => {
        const { channel, client, handled } = pair(scope);
        const a = scope.own(makeMemfd('a')).fd;
        const model = new ReadOnModel();
        let id = 1;
        let calls = 0;
        for (const frames of steps) {
          // From the loop's check phase, the frames are all queued before
          // its next poll phase reads any; the next check phase follows it.
          await checkPhase();
          const served = channel.served;
          for (const frame of frames) {
            if (frame === 'dup') native.sendNow(client.fd, dupRequest(id++), [a]);
            else native.sendNow(client.fd, encodeJson(FrameType.CALL, id++, { method: 'x', args: [] }));
          }
          // Turn by turn: what each answered (the rest stays queued, and
          // the next turn's poll reads it: epoll is level-triggered).
          const expected = model.turns(frames);
          const seen: number[] = [];
          let last = served;
          for (let t = 0; t < expected.length; t++) {
            await checkPhase();
            seen.push(channel.served - last);
            last = channel.served;
          }
          expect(seen).toEqual(expected);
          const dups = frames.filter((f) => f === 'dup').length;
          calls += frames.length - dups;
          expect(channel.served).toBe(served + dups);
          expect(handled).toHaveLength(calls);
          for (let i = 0; i < dups; i++) await client.receive();
        }
        expect(handled.every((h) => h.type === FrameType.CALL)).toBe(true);
      }),
    ),
    { numRuns: 40 },
  );
  expect(openFdTable()).toEqual(before);
});

test('closing the socket closes the ledger\'s fds nobody adopted; one added later is closed at once', () =>
  withScope(async (scope) => {
    const { served, ledger, client } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    await client.send(dupRequest(7), [a, a, a, a]);
    const reply = await client.receive();
    const remote = [0, 1, 2, 3].map((i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i));
    for (const fd of remote) expect(openFdTable().has(fd)).toBe(true);
    ledger.add(scope.own(makeMemfd('added')).release());
    served.close();
    for (const fd of remote) expect(openFdTable().has(fd)).toBe(false);
    expect(ledger.size).toBe(0);
    const late = makeMemfd('late');
    ledger.add(late);
    expect(openFdTable().has(late)).toBe(false);
  }));

describe('a channel without a mark (no closeGivenInBackground): a copy the command closed itself', () => {
  /** A DUP of `file` on `served`'s client: the number the copy has in this process. */
  async function give(served: Served, id: number, file: number): Promise<number> {
    await served.client.send(dupRequest(id), [file]);
    const reply = await served.client.receive();
    return reply.data.readInt32LE(HEADER_BYTES);
  }

  test.each(['adopt', 'release', 'sweep'] as const)(
    '%s leaves its number alone once another channel\'s copy took it: that copy stays open, registered and adoptable there',
    (act) =>
      withScope(async (scope) => {
        const a = pair(scope);
        const b = pair(scope);
        const file = scope.own(makeMemfd('given')).fd;
        const n = await give(a, 1, file);
        // fdbridge's own copies below n: the next fd received takes n once it is free.
        const fillers = scope.ownAll(fillUpTo(n, file));
        closeSync(n); // the command closes its copy itself, behind fdbridge's back
        expect(await give(b, 2, file)).toBe(n);
        const registration = native.registration(n);
        expect(registration).toBeGreaterThan(0);
        if (act === 'sweep') {
          expect(a.ledger.sweep()).toBe(1);
        } else {
          expect(act === 'adopt' ? a.channel.adopt(n) : a.channel.release(n)).toBe(act === 'adopt' ? false : 'dropped');
        }
        expect(sameFile(n, file)).toBe(true);
        // B's copy is still fdbridge's own (registered as it was), B's to give to its command.
        expect(native.registration(n)).toBe(registration);
        expect(a.ledger.size).toBe(0);
        expect(b.ledger.adopt(n)).toBe(true);
        scope.own(n);
        expect(native.registration(n)).toBe(0);
        for (const f of fillers) f.close();
      }),
  );

  test('adopt refuses its number once it is free, and its registration ends', () =>
    withScope(async (scope) => {
      const a = pair(scope);
      const file = scope.own(makeMemfd('given')).fd;
      const n = await give(a, 1, file);
      expect(native.registration(n)).toBeGreaterThan(0);
      closeSync(n);
      expect(a.ledger.adopt(n)).toBe(false);
      expect(native.registration(n)).toBe(0);
      expect(a.ledger.size).toBe(0);
    }));
});

/** One step of the ledger's accounting, on a channel that keeps adopted fds charged. */
type LedgerStep =
  | { kind: 'dup'; n: number }
  | { kind: 'add' }
  | { kind: 'reuse'; pick: number }
  | { kind: 'adopt' | 'release' | 'forget' | 'closeBehind'; pick: number; k: number }
  | { kind: 'sweep' };

const ledgerStep: fc.Arbitrary<LedgerStep> = fc.oneof(
  fc.record({ kind: fc.constant('dup' as const), n: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ kind: fc.constant('add' as const) }),
  fc.record({ kind: fc.constant('reuse' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constantFrom('adopt' as const, 'release' as const, 'forget' as const, 'closeBehind' as const), pick: fc.nat(), k: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('sweep' as const) }),
);

test('generated: with adopted fds kept charged, the budget holds exactly the ledger\'s fds and the adopted ones not yet forgotten, swept, or closed and their number given again', () =>
  fc.assert(
    fc.asyncProperty(fc.array(ledgerStep, { minLength: 1, maxLength: 40 }), (steps) =>
      withScope(async (scope) => {
        const { channel, ledger, client } = pair(scope);
        const budget = new native.FdBudget(1 << 20);
        channel.chargeTo(budget);
        channel.keepAdoptedCharged(true);
        const a = scope.own(makeMemfd('a')).fd;
        // The model: the ledger's numbers, and the adopted ones charged (`open`: not closed behind the channel's back).
        const given = new Set<number>();
        const adopted = new Map<number, { open: boolean }>();
        /** The adopted fds still open: the test's (the command's) to close. */
        const mine = new Set<number>();
        const taken = (fd: number): void => {
          // A number adopted and closed is given again: its charge passes to the new fd.
          adopted.delete(fd);
          given.add(fd);
        };
        const pick = (from: Iterable<number>, at: number, k: number): number[] => {
          const list = [...from];
          return list.length === 0 ? [] : [...list.slice(at % list.length), ...list].slice(0, Math.min(k, list.length));
        };
        for (const step of steps) {
          if (step.kind === 'dup') {
            await client.send(dupRequest(1), new Array<number>(step.n).fill(a));
            const reply = await client.receive();
            for (let i = 0; i < step.n; i++) taken(reply.data.readInt32LE(HEADER_BYTES + 4 * i));
          } else if (step.kind === 'add') {
            const fd = makeMemfd('added');
            ledger.add(fd);
            taken(fd);
          } else if (step.kind === 'reuse') {
            // A new fd given at the number of an adopted one closed behind the channel's back.
            const [closed] = pick([...adopted].filter(([, x]) => !x.open).map(([fd]) => fd), step.pick, 1);
            if (closed === undefined) continue;
            const fillers: number[] = [];
            // The lowest free numbers below it are filled first.
            let fd = native.dup(a);
            while (fd < closed) {
              fillers.push(fd);
              fd = native.dup(a);
            }
            for (const f of fillers) closeFd(f);
            expect(fd).toBe(closed);
            ledger.add(fd);
            taken(fd);
          } else if (step.kind === 'adopt') {
            for (const fd of pick(given, step.pick, step.k)) {
              expect(ledger.adopt(fd)).toBe(true);
              given.delete(fd);
              adopted.set(fd, { open: true });
              mine.add(fd);
            }
          } else if (step.kind === 'release') {
            for (const fd of pick(given, step.pick, step.k)) {
              expect(channel.release(fd)).toBe('released');
              given.delete(fd);
              native.disown(fd);
              closeFd(fd);
            }
          } else if (step.kind === 'forget') {
            const fds = pick([...adopted].filter(([, x]) => x.open).map(([fd]) => fd), step.pick, step.k);
            // A number not adopted (the ledger's, or one never given) is not forgotten.
            const other = given.size > 0 ? [[...given][0] as number] : [];
            // The first through the ledger, as CommandHost's closeClientFds tells it (then it is forgotten already).
            ledger.closing(fds.slice(0, 1));
            expect(channel.forgetAdopted([...fds, ...other])).toBe(fds.length - Math.min(fds.length, 1));
            for (const fd of fds) {
              adopted.delete(fd);
              mine.delete(fd);
              closeFd(fd);
            }
          } else if (step.kind === 'closeBehind') {
            // The command closes an fd it adopted without closeClientFds: it stays charged until its number comes back.
            for (const fd of pick([...adopted].filter(([, x]) => x.open).map(([fd]) => fd), step.pick, step.k)) {
              closeFd(fd);
              mine.delete(fd);
              (adopted.get(fd) as { open: boolean }).open = false;
            }
          } else {
            expect(ledger.sweep()).toBe(given.size);
            given.clear();
            adopted.clear();
          }
          expect({ step, held: budget.held, heldCount: channel.heldCount, given: ledger.size }).toEqual({
            step,
            held: given.size + adopted.size,
            heldCount: given.size + adopted.size,
            given: given.size,
          });
        }
        for (const fd of mine) closeFd(fd);
      }),
    ),
    { numRuns: 60 },
  ));

test('without keepAdoptedCharged an adopted fd is refunded at once (a child or pidfd command serves one client)', () =>
  withScope(async (scope) => {
    const { channel, ledger, client } = pair(scope);
    const budget = new native.FdBudget(100);
    channel.chargeTo(budget);
    const a = scope.own(makeMemfd('a')).fd;
    await client.send(dupRequest(1), [a, a]);
    const reply = await client.receive();
    const fd = reply.data.readInt32LE(HEADER_BYTES);
    expect(ledger.adopt(fd)).toBe(true);
    scope.own(fd);
    expect({ held: budget.held, heldCount: channel.heldCount, forgotten: channel.forgetAdopted([fd]) }).toEqual({ held: 1, heldCount: 1, forgotten: 0 });
  }));

test('closing through the ledger (CommandHost\'s closeClientFds) refunds the adopted fds it names, and no other', () =>
  withScope(async (scope) => {
    const { channel, ledger, client } = pair(scope);
    const budget = new native.FdBudget(100);
    channel.chargeTo(budget);
    channel.keepAdoptedCharged(true);
    const a = scope.own(makeMemfd('a')).fd;
    await client.send(dupRequest(1), [a, a, a]);
    const reply = await client.receive();
    const [x, y, z] = [0, 1, 2].map((i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i)) as [number, number, number];
    expect([ledger.adopt(x), ledger.adopt(y)]).toEqual([true, true]);
    scope.own(x);
    scope.own(y);
    expect({ held: budget.held, heldCount: channel.heldCount, given: ledger.size }).toEqual({ held: 3, heldCount: 3, given: 1 });
    // z is still the ledger's (not adopted): closing names it, and it stays charged and given.
    ledger.closing([x, z]);
    expect({ held: budget.held, heldCount: channel.heldCount, given: ledger.size }).toEqual({ held: 2, heldCount: 2, given: 1 });
    expect(channel.forgetAdopted([x, y])).toBe(1);
  }));

/** Turns the event loop until `ok()` holds; no deadline: what never comes runs into the test's timeout. */
async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 5));
}

/** A requesting channel (the client's side) on one end; `peer` is the raw command's side. */
/**
 * A client's side (`socket`, its channel) and a plain peer. `refuseFds`: the
 * socket refuses fds (SO_PASSRIGHTS off, as a transport's client socket), so
 * dupSync waits in a blocking receive instead of poll(2).
 */
function requester(
  scope: Scope,
  refuseFds = false,
): { socket: UnixSocket; channel: FrameChannel; peer: UnixSocket; handled: number[]; replyErrors: Array<[string, number, number]> } {
  const [socket, peer] = UnixSocket.pair('seqpacket');
  scope.add(socket);
  scope.add(peer);
  if (refuseFds) setPassRights(socket.fd, false);
  const handled: number[] = [];
  socket.setMessageHandler((err, data, fds) => {
    if (err) return;
    handled.push((data as Buffer)[0] as number);
    scope.ownAll(fds as number[]);
  });
  const replyErrors: Array<[string, number, number]> = [];
  const channel = openFrameChannel(socket, {
    replyError: (operation, fds, frame) => {
      replyErrors.push([operation, fds, frame[0] as number]);
      return new Error(`${operation}: reply of type ${frame[0]}`);
    },
  });
  return { socket, channel, peer, handled, replyErrors };
}

/** The next request the peer reads: its type, id, and the fds beside it (owned by the scope). */
async function nextRequest(scope: Scope, peer: UnixSocket): Promise<{ type: number; id: number; fds: number[]; data: Buffer }> {
  const m = await peer.receive();
  scope.ownAll(m.fds);
  return { type: m.data[0] as number, id: m.data.readUInt32LE(4), fds: m.fds, data: m.data };
}

const settled = <T>(p: Promise<T>): Promise<{ value?: T; error?: Error }> =>
  p.then(
    (value) => ({ value }),
    (error: Error) => ({ error }),
  );

test('requests are settled from their replies by the channel, whatever the order of the replies; the handler sees none', () =>
  withScope(async (scope) => {
    const { socket, channel, peer, handled } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const b = scope.own(makeMemfd('b')).fd;
    // A GETFD names pins: copies given to the socket's closer owner, each sent beside its file.
    const owner = native.newCloseOwner();
    socket.useBackgroundCloser(false, owner);
    const pins = native.dupAll([a, b], 0, owner);
    scope.defer(() => native.closeInBackground(pins, owner, true));
    const one = channel.dup(0, a, false);
    const many = channel.dup(1, [a, a, a], false);
    const call = channel.call(encodeJson(FrameType.CALL, 0, { method: 'm', args: [] }), 'm()', false);
    const pulled = channel.dup(2, pins, true);
    expect(channel.pending).toBe(4);
    expect(channel.pendingDups).toBe(3);
    const r1 = await nextRequest(scope, peer);
    const r2 = await nextRequest(scope, peer);
    const r3 = await nextRequest(scope, peer);
    const r4 = await nextRequest(scope, peer);
    expect([r1.type, r1.fds.length, r2.type, r2.fds.length, r3.type, r4.type, r4.fds.length]).toEqual([
      FrameType.DUP, 1, FrameType.DUP, 3, FrameType.CALL, FrameType.GETFD, 0,
    ]);
    expect(decodeFrame(r4.data, [])).toEqual({ type: FrameType.GETFD, id: r4.id, fds: pins, files: [fileAt(a), fileAt(b)] });
    expect(new Set([r1.id, r2.id, r3.id, r4.id]).size).toBe(4);
    expect(sameFile(r1.fds[0]!, a)).toBe(true);
    // Answered backwards.
    await peer.send(encodeFdList(FrameType.DUP_OK, r4.id, [40, 41]));
    await peer.send(encodeResult(r3.id, 'v'));
    await peer.send(encodeFdList(FrameType.DUP_OK, r2.id, [20, 21, 22]));
    await peer.send(encodeFdList(FrameType.DUP_OK, r1.id, [10]));
    expect(await one).toBe(10);
    expect(await many).toEqual([20, 21, 22]);
    expect(decodeFrame(await call, [])).toEqual({ type: FrameType.RESULT, id: r3.id, value: 'v' });
    expect(await pulled).toEqual([40, 41]);
    expect(channel.pending).toBe(0);
    expect(handled).toEqual([]);
  }));

test('a GETFD naming a number that is no pin given to the socket\'s closer owner is refused with EBADF, nothing sent', () =>
  withScope(async (scope) => {
    const { socket, channel, peer } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const owner = native.newCloseOwner();
    socket.useBackgroundCloser(false, owner);
    const pins = native.dupAll([a], 0, owner);
    const otherOwner = native.newCloseOwner();
    const others = native.dupAll([a], 0, otherOwner);
    scope.defer(() => native.closeInBackground(others, otherOwner, true));
    // The caller's own fd, a copy given to another owner, a pin that was closed: none is refused as sent.
    await closesSettled([native.closeInBackground(pins, owner, true)]);
    for (const named of [[a], others, pins]) {
      expect(() => channel.dup(2, named, true)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(channel.pending).toBe(0);
    }
    // Nothing reached the peer: a CALL sent after is the first message it reads.
    void channel.call(encodeJson(FrameType.CALL, 0, { method: 'm', args: [] }), 'm()', false).catch(() => undefined);
    expect((await peer.receive()).data[0]).toBe(FrameType.CALL);
  }));

test('an ERROR or a wrong reply settles its request with what replyError makes of it, in C++, without the handler', () =>
  withScope(async (scope) => {
    const { channel, peer, handled, replyErrors } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const refused = settled(channel.dup(0, a, false));
    const miscounted = settled(channel.dup(1, [a, a], false));
    const resultToDup = settled(channel.dup(0, a, false));
    const fdsToCall = settled(channel.call(encodeJson(FrameType.CALL, 0, { method: 'm', args: [] }), 'm()', false));
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await nextRequest(scope, peer)).id);
    await peer.send(encodeJson(FrameType.ERROR, ids[0]!, { name: 'Error', message: 'no' }));
    await peer.send(encodeFdList(FrameType.DUP_OK, ids[1]!, [1]));
    await peer.send(encodeResult(ids[2]!, 1));
    await peer.send(encodeFdList(FrameType.DUP_OK, ids[3]!, [1]));
    expect((await refused).error?.message).toBe('dupFileDescriptor: reply of type 8');
    expect((await miscounted).error?.message).toBe('dupFileDescriptors: reply of type 5');
    expect((await resultToDup).error?.message).toBe('dupFileDescriptor: reply of type 7');
    expect((await fdsToCall).error?.message).toBe('m(): reply of type 5');
    expect(replyErrors).toEqual([
      ['dupFileDescriptor', 1, FrameType.ERROR],
      ['dupFileDescriptors', 2, FrameType.DUP_OK],
      ['dupFileDescriptor', 1, FrameType.RESULT],
      ['m()', 0, FrameType.DUP_OK],
    ]);
    expect(handled).toEqual([]);
    expect(channel.pending).toBe(0);
  }));

test('what answers no pending request reaches the handler, in order: unknown ids, malformed replies, other frames', () =>
  withScope(async (scope) => {
    const { channel, peer, handled } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const one = channel.dup(0, a, false);
    const { id } = await nextRequest(scope, peer);
    const negative = encodeFdList(FrameType.DUP_OK, id, [1]);
    negative.writeInt32LE(-1, HEADER_BYTES);
    await peer.send(encodeFdList(FrameType.DUP_OK, id + 1, [1])); // no such request
    await peer.send(negative); // malformed: the request stays pending
    await peer.send(encodeJson(FrameType.READY, id, { pid: 1, threadId: 0 }));
    await peer.send(encodeFdList(FrameType.DUP_OK, id, [7]));
    expect(await one).toBe(7);
    expect(handled).toEqual([FrameType.DUP_OK, FrameType.DUP_OK, FrameType.READY]);
  }));

test('failAll rejects every pending request at once with the error made for its operation; a late reply goes to the handler', () =>
  withScope(async (scope) => {
    const { channel, peer, handled } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const all = [
      settled(channel.dup(0, a, false)),
      settled(channel.dup(1, [a], false)),
      settled(channel.dup(2, [a, a], false)),
      settled(channel.call(encodeFdList(FrameType.RELEASE, 0, [3]), 'release', true)),
    ];
    const first = await nextRequest(scope, peer);
    const operations: string[] = [];
    channel.failAll((operation) => {
      operations.push(operation);
      return new Error(`failed: ${operation}`);
    });
    expect(operations.sort()).toEqual(['dupFileDescriptor', 'dupFileDescriptor', 'dupFileDescriptors', 'release']);
    expect((await Promise.all(all)).map((r) => r.error?.message)).toEqual([
      'failed: dupFileDescriptor',
      'failed: dupFileDescriptors',
      'failed: dupFileDescriptor',
      'failed: release',
    ]);
    expect(channel.pending).toBe(0);
    await peer.send(encodeFdList(FrameType.DUP_OK, first.id, [1]));
    await until(() => handled.length >= 1);
    expect(handled).toEqual([FrameType.DUP_OK]);
  }));

test('a request that cannot be sent throws with nothing kept; closing the socket rejects what is pending (ECANCELED) and ends the channel', () =>
  withScope(async (scope) => {
    const { socket, channel } = requester(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const closed = makeMemfd('closed');
    native.close(closed);
    expect(() => channel.dup(0, closed, false)).toThrow(SystemError);
    expect(() => channel.dup(1, Array.from({ length: MAX_FDS_PER_FRAME + 1 }, () => a), false)).toThrow(/at most 253 fds/);
    expect(channel.pending).toBe(0);
    const pending = settled(channel.dup(0, a, false));
    socket.close();
    const { error } = await pending;
    expect(error).toBeInstanceOf(SystemError);
    expect((error as SystemError).code).toBe('ECANCELED');
    expect(() => channel.dup(0, a, false)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => openFrameChannel(socket, {})).toThrow(expect.objectContaining({ code: 'EBADF' }));
  }));

test("UnixSocket is a general socket: no part of the frame protocol is on its surface", () => {
  const names = Object.getOwnPropertyNames(UnixSocket.prototype);
  for (const name of ['requestDup', 'rejectDup', 'rejectDups', 'pendingDups', 'serveDuplications', 'given', 'servedDuplications', 'closeGivenInBackground']) {
    expect(names).not.toContain(name);
  }
  const nativeNames = Object.getOwnPropertyNames(native.Socket.prototype);
  expect(nativeNames.filter((n) => /dup|given|serve/i.test(n))).toEqual([]);
});

test('the after-receive hook runs inside the served path: the fds are in the ledger, the reply not yet sent; closing there sweeps them', () =>
  withScope(async (scope) => {
    const seen: Array<{ held: number; replyOut: boolean }> = [];
    let closeInHook = false;
    const [served, client] = UnixSocket.pair('seqpacket');
    scope.add(served);
    scope.add(client);
    served.setMessageHandler(() => undefined);
    const channel = openFrameChannel(served, {
      afterReceive: () => {
        seen.push({ held: channel.givenCount, replyOut: native.recvNow(client.fd, 64, 0) !== null });
        if (closeInHook) served.close();
      },
    });
    channel.serve(true);
    const a = scope.own(makeMemfd('a')).fd;
    await client.send(dupRequest(1), [a, a]);
    const reply = await client.receive();
    expect(reply.data.readUInt32LE(4)).toBe(1);
    expect(seen).toEqual([{ held: 2, replyOut: false }]);
    expect(channel.served).toBe(1);
    closeInHook = true;
    const before = openFdTable();
    await client.send(dupRequest(2), [a]);
    await expect(client.receive()).rejects.toThrow(/EOF|end of file|closed/i);
    expect(seen).toEqual([{ held: 2, replyOut: false }, { held: 3, replyOut: false }]);
    expect(channel.givenCount).toBe(0);
    expect(openFdTable().size).toBeLessThan(before.size);
  }));

describe.each([
  ['a socket that takes fds: the wait polls', false],
  ['a socket that refuses fds: the wait is a blocking receive', true],
])('dupSync on %s', (_, refuseFds) => {
  test('replies and frames that arrive before its own are handed on, in order, before it returns; what comes after is read by the loop', () =>
    withScope(async (scope) => {
      const { channel, peer, handled } = requester(scope, refuseFds);
      const a = scope.own(makeMemfd('a')).fd;
      const one = channel.dup(0, a, false);
      const first = await nextRequest(scope, peer);
      const syncId = first.id + 1; // ids are handed out in order
      // Written synchronously: the event loop reads none of it before dupSync does.
      peer.write(encodeFdList(FrameType.DUP_OK, first.id, [10]));
      peer.write(encodeJson(FrameType.READY, 99, { pid: 1, threadId: 0 }));
      peer.write(encodeFdList(FrameType.DUP_OK, syncId, [11]));
      peer.write(encodeFdList(FrameType.DUP_OK, syncId + 50, [12]));
      expect(channel.dupSync(a, 60000)).toBe(11);
      // Before any await: the held reply settled its request, the READY reached the handler.
      expect(channel.pending).toBe(0);
      expect(handled).toEqual([FrameType.READY]);
      expect(await one).toBe(10);
      const request = await nextRequest(scope, peer);
      expect([request.type, request.id, request.fds.length]).toEqual([FrameType.DUP, syncId, 1]);
      expect(sameFile(request.fds[0]!, a)).toBe(true);
      while (handled.length < 2) await new Promise((r) => setImmediate(r));
      expect(handled).toEqual([FrameType.READY, FrameType.DUP_OK]);
    }));

  test('a timeout leaves the request pending: its late reply settles `late`, failAll fails it', () =>
    withScope(async (scope) => {
      const { channel, peer } = requester(scope, refuseFds);
      const a = scope.own(makeMemfd('a')).fd;
      const r = channel.dupSync(a, 20) as { status: string; late: Promise<number> };
      expect(r.status).toBe('timeout');
      expect(typeof r.late.then).toBe('function');
      expect([channel.pending, channel.pendingDups]).toEqual([1, 1]);
      const request = await nextRequest(scope, peer);
      await peer.send(encodeFdList(FrameType.DUP_OK, request.id, [33]));
      expect(await r.late).toBe(33);
      expect(channel.pending).toBe(0);
      const again = channel.dupSync(a, 0) as { status: string; late: Promise<number> };
      expect(again.status).toBe('timeout');
      const late = settled(again.late);
      channel.failAll((operation) => new Error(`failed: ${operation}`));
      expect((await late).error?.message).toBe('failed: dupFileDescriptorSync');
      await nextRequest(scope, peer);
    }));

  test('after a wait the event loop still never blocks: requests the peer does not read queue up, replies settle them', () =>
    withScope(async (scope) => {
      const { socket, channel, peer } = requester(scope, refuseFds);
      const a = scope.own(makeMemfd('a')).fd;
      const timedOut = channel.dupSync(a, 1) as { status: string; late: Promise<number> };
      expect(timedOut.status).toBe('timeout');
      // The peer reads nothing until the socket is full: the calls past that
      // wait in the send queue (a blocking sendmsg would hang here).
      const payload = 'x'.repeat(60 * 1024);
      const calls: Array<Promise<Buffer>> = [];
      while (socket.queuedSends === 0) {
        calls.push(channel.call(encodeJson(FrameType.CALL, 0, { method: 'm', args: [payload] }), 'm()', false));
      }
      const dup = await nextRequest(scope, peer);
      await peer.send(encodeFdList(FrameType.DUP_OK, dup.id, [7]));
      for (const call of calls) {
        const request = await nextRequest(scope, peer);
        await peer.send(encodeResult(request.id, calls.indexOf(call)));
        expect(decodeFrame(await call, [])).toEqual({ type: FrameType.RESULT, id: request.id, value: calls.indexOf(call) });
      }
      expect(await timedOut.late).toBe(7);
      expect(channel.pending).toBe(0);
    }));

  test('a peer that hangs up first is status gone (errno 0); the end of file reaches the handler before it returns', () =>
    withScope(async (scope) => {
      const { socket, channel, peer } = requester(scope, refuseFds);
      const events: string[] = [];
      socket.setMessageHandler((err) => events.push(err ? err.name : 'message'));
      const a = scope.own(makeMemfd('a')).fd;
      peer.shutdown('write');
      expect(channel.dupSync(a, 60000)).toEqual({ status: 'gone', errno: 0 });
      expect(events).toEqual(['EofError']);
      await nextRequest(scope, peer);
    }));
});

describe('dupSync: a reply with fds beside it', () => {
  test('another frame answering it is status reply (fds beside it closed and counted); a closed fd throws with nothing sent', () =>
    withScope(async (scope) => {
      const { channel, peer, handled } = requester(scope);
      const a = scope.own(makeMemfd('a')).fd;
      const closed = makeMemfd('closed');
      native.close(closed);
      expect(() => channel.dupSync(closed, 1000)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(channel.pending).toBe(0);
      const probe = channel.dup(0, a, false);
      const { id } = await nextRequest(scope, peer);
      peer.write(encodeFdList(FrameType.DUP_OK, id, [1]));
      expect(await probe).toBe(1);
      peer.write(encodeFdList(FrameType.DUP_OK, id + 1, [1, 2]));
      const wrongCount = channel.dupSync(a, 60000) as { status: string; reply: Buffer; fdsClosed: number };
      expect(wrongCount.status).toBe('reply');
      expect(decodeFrame(wrongCount.reply, [])).toEqual({ type: FrameType.DUP_OK, id: id + 1, fds: [1, 2] });
      expect(wrongCount.fdsClosed).toBe(0);
      const before = openFdTable();
      peer.write(encodeJson(FrameType.ERROR, id + 2, { name: 'Error', message: 'no' }), [a, a]);
      const withFds = channel.dupSync(a, 60000) as { status: string; reply: Buffer; fdsClosed: number };
      expect([withFds.status, withFds.fdsClosed, withFds.reply[0]]).toEqual(['reply', 2, FrameType.ERROR]);
      expect(openFdTable()).toEqual(before);
      expect(channel.pending).toBe(0);
      expect(handled).toEqual([]);
      for (let i = 0; i < 2; i++) await nextRequest(scope, peer);
    }));
});
