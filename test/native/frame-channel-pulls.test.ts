/**
 * The frame channel's pulls (FrameChannel::ServePulls): on a pidfd
 * connection's command side, a GETFD is answered in C++ as a DUP is under
 * serve: the numbers it lists pulled through the client's pidfd (here this
 * very process's, which pidfd_getfd allows), close-on-exec, at or above the
 * floor, registered as fdbridge's, into the ledger, and the DUP_OK sent,
 * without the message handler. A GETFD over the ledger's cap, one whose
 * pulls fail, and every GETFD while pulls are off reach the handler instead,
 * with nothing pulled left open. Generated: sequences of such requests
 * against a model of the ledger, on a plain channel and on one configured
 * as the helper daemon's (closeGivenInBackground: each copy marked given
 * with its file, the sweep on the background closer). On the latter the
 * command also closes copies itself and another fd takes the number
 * (fdbridge's, or the program's): adopting that number fails, and neither
 * the sweep nor the socket's close touches it.
 */
import fc from 'fast-check';

import { closeSync } from 'node:fs';

import { closeOwnFd, fdIdentity, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { ChannelLedger, openFrameChannel } from '../../src/frame-channel';
import { encodeDup, encodeJson, FrameType, HEADER_BYTES } from '../../src/protocol';
import { getfdOf } from '../util/getfd';
import { UnixSocket } from '../../src/socket';
import { native } from './binding';
import { openBackgroundClosesDone, withScope } from './helpers';

/** A number no process has open (past any RLIMIT_NOFILE): its pull fails with EBADF. */
const NEVER_OPEN = 0x7fffffff;

type Step =
  | { kind: 'pull'; picks: number[]; bad: number | undefined }
  | { kind: 'pullsOff' }
  | { kind: 'pullsOn' }
  | { kind: 'adoptOne' }
  | { kind: 'sweep' }
  | { kind: 'closedByCommand'; ours: boolean }
  | { kind: 'adoptTaken' };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('pull' as const), picks: fc.array(fc.nat(5), { minLength: 1, maxLength: 24 }), bad: fc.option(fc.nat(23), { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'pullsOff' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'pullsOn' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'adoptOne' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'sweep' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('closedByCommand' as const), ours: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'adoptTaken' as const }) },
);

/** A number of the ledger's that the command closed and another fd took: fdbridge's (`ours`) or the program's. */
interface Taken {
  fd: number;
  ours: boolean;
  file: string;
  registration: number;
}

const identity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

/** The taken number is as it was made: the same file there, the same registration (0: the program's). */
function expectUntouched(t: Taken): void {
  expect(identity(t.fd)).toBe(t.file);
  expect(native.registration(t.fd)).toBe(t.registration);
}

async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 2));
}

test('GETFDs are pulled into the ledger natively, all or none; the rest reach the handler, nothing pulled left open; plain and as the helper daemon configures it', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), fc.integer({ min: 8, max: 60 }), fc.boolean(), (steps, maxGiven, helper) =>
      withScope(async (scope) => {
        const [served, client] = UnixSocket.pair('seqpacket', { reuseBuffer: true });
        scope.add(served);
        scope.add(client);
        const handled: Array<{ type: number; id: number }> = [];
        served.setMessageHandler((err, data) => {
          if (err) throw err;
          handled.push({ type: (data as Buffer)[0] as number, id: (data as Buffer).readUInt32LE(4) });
        });
        const channel = openFrameChannel(served, {});
        if (helper) {
          // As the helper daemon's connections (serve.ts, closeInBackground).
          served.useBackgroundCloser(true, native.newCloseOwner());
          channel.closeGivenInBackground(true);
        }
        const ledger = new ChannelLedger(channel);
        const pidfd = native.pidfdOpen(process.pid, true);
        scope.defer(() => closeOwnFd(pidfd));
        const files = Array.from({ length: 6 }, (_, i) => scope.own(makeMemfd(`pull-${i}`)).fd);
        const other = scope.own(makeMemfd('taker')).fd;
        channel.servePulls(pidfd, maxGiven);
        let on = true;
        let inLedger: number[] = [];
        let taken: Taken[] = []; // still in the ledger
        const untouched: Taken[] = []; // out of it, left alone
        scope.defer(() => {
          for (const t of [...taken, ...untouched]) {
            if (t.ours) native.close(t.fd);
            else closeSync(t.fd);
          }
        });
        let answered = 0;
        let id = 0;
        for (const s of steps) {
          if (s.kind === 'pullsOff' || s.kind === 'pullsOn') {
            on = s.kind === 'pullsOn';
            channel.servePulls(on ? pidfd : -1, maxGiven);
            continue;
          }
          if (s.kind === 'adoptOne') {
            const fd = inLedger.shift();
            if (fd !== undefined) {
              expect(ledger.adopt(fd)).toBe(true);
              expect(native.registration(fd)).toBe(0); // the command's, fdbridge's no more
              scope.own(fd);
            }
            continue;
          }
          if (s.kind === 'sweep') {
            expect(ledger.sweep()).toBe(inLedger.length + taken.length);
            if (helper) await openBackgroundClosesDone();
            for (const fd of inLedger) expect(openFdTable().has(fd)).toBe(false);
            inLedger = [];
            untouched.push(...taken);
            taken = [];
            for (const t of untouched) expectUntouched(t);
            continue;
          }
          if (s.kind === 'closedByCommand') {
            // The command's close of its copy, not through fdbridge; the number taken at once.
            const fd = helper ? inLedger.shift() : undefined;
            if (fd === undefined) continue;
            closeSync(fd);
            const [at] = native.dupAll([other], fd);
            expect(at).toBe(fd);
            if (!s.ours) native.disown(fd);
            taken.push({ fd, ours: s.ours, file: identity(fd), registration: native.registration(fd) });
            expect(ledger.size).toBe(inLedger.length + taken.length);
            continue;
          }
          if (s.kind === 'adoptTaken') {
            const t = taken.shift();
            if (t === undefined) continue;
            expect(ledger.adopt(t.fd)).toBe(false); // not the command's copy any more
            untouched.push(t);
            expectUntouched(t);
            expect(ledger.size).toBe(inLedger.length + taken.length);
            continue;
          }
          const numbers = s.picks.map((p) => files[p] as number);
          const bad = s.bad !== undefined && s.bad < numbers.length ? s.bad : undefined;
          if (bad !== undefined) numbers[bad] = NEVER_OPEN;
          const expectAnswer = on && bad === undefined && inLedger.length + taken.length + numbers.length <= maxGiven;
          const tableBefore = openFdTable();
          const handledBefore = handled.length;
          id++;
          await client.send(getfdOf(id, numbers));
          if (!expectAnswer) {
            await until(() => handled.length > handledBefore);
            expect(handled.slice(handledBefore)).toEqual([{ type: FrameType.GETFD, id }]);
            // A failed pull closed every fd the others made.
            expect(openFdTable()).toEqual(tableBefore);
            expect(ledger.size).toBe(inLedger.length + taken.length);
            continue;
          }
          const reply = await client.receive();
          expect(handled.length).toBe(handledBefore);
          expect(reply.fds).toEqual([]);
          expect(reply.data[0]).toBe(FrameType.DUP_OK);
          expect(reply.data.readUInt32LE(4)).toBe(id);
          expect(reply.data.length).toBe(HEADER_BYTES + 4 * numbers.length);
          const pulled = numbers.map((_, i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i));
          expect(new Set(pulled).size).toBe(pulled.length);
          pulled.forEach((fd, i) => {
            expect(sameFile(fd, numbers[i] as number)).toBe(true);
            expect(fd).toBeGreaterThanOrEqual(native.fdFloor());
            expect(native.getFlags(fd) & 1).toBe(1); // close-on-exec
            expect(native.registration(fd)).toBeGreaterThan(0); // fdbridge's own until adopted
            expect(tableBefore.has(fd)).toBe(false);
          });
          inLedger.push(...pulled);
          answered++;
          expect(ledger.size).toBe(inLedger.length + taken.length);
        }
        expect(channel.served).toBe(answered);
        // Closing the socket closes what nobody adopted, and only that.
        served.close();
        if (helper) await openBackgroundClosesDone();
        for (const fd of inLedger) expect(openFdTable().has(fd)).toBe(false);
        for (const t of [...taken, ...untouched]) expectUntouched(t);
      }),
    ),
    { numRuns: 60 },
  );
  expect(openFdTable()).toEqual(before);
});

test('servePulls refuses a pidfd that is not an fd number, serve(false) turns pulls off, and turning them off keeps the cap', async () => {
  const before = openFdTable();
  await withScope(async (scope) => {
    const [served, client] = UnixSocket.pair('seqpacket', { reuseBuffer: true });
    scope.add(served);
    scope.add(client);
    const handled: number[] = [];
    served.setMessageHandler((err, data, fds) => {
      if (err) throw err;
      handled.push((data as Buffer)[0] as number);
      scope.ownAll(fds as number[]);
    });
    const channel = openFrameChannel(served, {});
    // The addon's errors come from its own realm's constructors: matched by message.
    expect(() => channel.servePulls(-2)).toThrow('fd must be >= 0');
    expect(() => channel.servePulls(1.5)).toThrow('fd must be a 32-bit integer');
    expect(() => channel.servePulls('3' as unknown as number)).toThrow('fd must be a number');
    expect(() => channel.servePulls(3, -1)).toThrow('servePulls: maxGiven must be >= 0');
    const pidfd = native.pidfdOpen(process.pid, true);
    scope.defer(() => closeOwnFd(pidfd));
    const file = scope.own(makeMemfd('off')).fd;
    channel.servePulls(pidfd);
    channel.serve(false);
    await client.send(getfdOf(1, [file]));
    await until(() => handled.length > 0);
    expect(handled).toEqual([FrameType.GETFD]);
    expect(channel.served).toBe(0);
    // Turning pulls off leaves the ledger's cap as serve set it: a DUP of 2 over a cap of 1 reaches the handler.
    channel.serve(true, 1);
    channel.servePulls(-1);
    const dup = encodeDup(0);
    dup.writeUInt32LE(2, 4);
    await client.send(dup, [file, file]);
    // A CALL always reaches the handler: once it has, the DUP before it has been dealt with.
    await client.send(encodeJson(FrameType.CALL, 3, { method: 'x', args: [] }));
    await until(() => handled.includes(FrameType.CALL));
    expect(handled).toEqual([FrameType.GETFD, FrameType.DUP, FrameType.CALL]);
    expect(channel.served).toBe(0);
  });
  expect(openFdTable()).toEqual(before);
});
