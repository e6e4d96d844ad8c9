/**
 * What a remote connection takes of a stream's frames from its far side.
 * A duplication's stream runs once the far side's OPENED says its end is
 * made: the caller's file gets the bytes of the DATA that follow the OPENED
 * of a duplication that succeeded, and nothing else. DATA or EOF for a
 * stream before its OPENED (or CREDIT and STOP, but for a copy's bytes,
 * which go before the OPENED), or any stream frame for a stream the client
 * never announced, breaks the protocol: a ProtocolError naming it for the
 * pending duplication and every later request; so does an OPEN answered
 * with anything but OPENED or ERROR. After an ERROR the
 * stream's frames are dropped. A refused duplication takes nothing from the
 * caller's fd either: the bytes a pipe or socket held are still there.
 *
 * Generated: frames before the reply, the reply (OPENED, ERROR or RESULT), frames
 * after it, sent by a far side that answers the frames itself
 * (fixtures/far-side-replies.py 'script'), for each kind of fd a stream can
 * relay: a file open for writing, a pipe's write end (bytes come in), a
 * pipe's read end (bytes go out), a stream socket (both) and a file open for
 * reading (a copy). And a stream whose end here cannot be pumped once its
 * OPENED has come fails its duplication with that error, the command's end
 * over there released.
 */
import { constants as fsConstants, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, EofError, ProtocolError, RemoteError, SystemError } from '../../src';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { closeFds, closeOwnFd, makePipe, openFdTable } from '../../src/fd';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { Channel } from '../../src/transports/remote-channel';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const FAR_SIDE = join(__dirname, 'fixtures', 'far-side-replies.py');
/** The number the far side's OPENED gives. */
const GIVEN_AS = 100;
/**
 * Added to the OPEN's stream id (1: one duplication a connection) for a
 * stream the client never announced: 0, the next id, one further on.
 */
const UNANNOUNCED = [-1, 1, 5];

type StreamStep = { t: 'DATA'; hex: string; to: number } | { t: 'EOF' | 'STOP'; to: number } | { t: 'CREDIT'; n: 0; to: number };
/** An ERROR's payload holds an `fd` too, as a far side may put there. */
type Reply = { t: 'OPENED' | 'RESULT' | 'ERROR'; fd: number };
type Kind = 'file (write)' | 'pipe write end' | 'pipe read end' | 'stream socket' | 'file (read)';
const KINDS: Kind[] = ['file (write)', 'pipe write end', 'pipe read end', 'stream socket', 'file (read)'];

/** Kinds whose bytes come in (DATA written into the caller's fd), and go out (read from it). */
const INCOMING: ReadonlySet<Kind> = new Set(['file (write)', 'pipe write end', 'stream socket']);
const OUTGOING: ReadonlySet<Kind> = new Set(['pipe read end', 'stream socket']);

const streamStep: fc.Arbitrary<StreamStep> = fc
  .tuple(
    fc.oneof(
      { weight: 5, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 48 }).map((b) => ({ t: 'DATA' as const, hex: Buffer.from(b).toString('hex') })) },
      { weight: 1, arbitrary: fc.constantFrom({ t: 'EOF' as const }, { t: 'STOP' as const }, { t: 'CREDIT' as const, n: 0 as const }) },
    ),
    fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(...UNANNOUNCED) }),
  )
  .map(([step, to]) => ({ ...step, to }) as StreamStep);

interface Script {
  kind: Kind;
  before: StreamStep[];
  reply: Reply;
  after: StreamStep[];
}

const script: fc.Arbitrary<Script> = fc.record({
  kind: fc.constantFrom(...KINDS),
  // Mostly nothing before the reply, as a far side that keeps the protocol
  // sends; or what it may send for a copy (and for nothing else).
  before: fc.oneof(
    { weight: 3, arbitrary: fc.constant<StreamStep[]>([]) },
    { weight: 2, arbitrary: fc.array(streamStep, { minLength: 1, maxLength: 3 }) },
    { weight: 2, arbitrary: fc.array(fc.constantFrom<StreamStep>({ t: 'CREDIT', n: 0, to: 0 }, { t: 'STOP', to: 0 }), { minLength: 1, maxLength: 2 }) },
  ),
  // A RESULT answering the OPEN breaks the protocol, whatever it holds; an
  // OPENED whose fd is not an fd number fails the duplication only.
  reply: fc.oneof(
    { weight: 4, arbitrary: fc.constant<Reply>({ t: 'OPENED', fd: GIVEN_AS }) },
    { weight: 1, arbitrary: fc.constant<Reply>({ t: 'OPENED', fd: -1 }) },
    { weight: 3, arbitrary: fc.constant<Reply>({ t: 'ERROR', fd: GIVEN_AS }) },
    { weight: 1, arbitrary: fc.constant<Reply>({ t: 'RESULT', fd: GIVEN_AS }) },
  ),
  after: fc.array(streamStep, { maxLength: 5 }),
});

/** Whether the far side may send `step` (before or after the reply) for a stream of `kind`. */
function allowed(step: StreamStep, kind: Kind, replied: boolean): boolean {
  if (step.to !== 0) return false; // a stream never announced
  if (replied) return true;
  // Before the OPENED only a copy runs (its bytes go before the reply): the far side may give credit back or stop it.
  return kind === 'file (read)' && (step.t === 'CREDIT' || step.t === 'STOP');
}

interface Expected {
  /**
   * What the ProtocolError says of the frame that breaks the protocol, if
   * one does, and whether that fails the duplication (a frame up to the
   * reply) or only what comes after it.
   */
  violation: { says: string; failsDuplication: boolean } | undefined;
  /** The bytes the caller's fd gets: exactly (nothing broke the protocol) or a prefix of them. */
  incoming: Buffer;
}

const says = (step: StreamStep): string => `a ${step.t} frame for stream `;

function expected(s: Script): Expected {
  const early = s.before.find((step) => !allowed(step, s.kind, false));
  if (early) return { violation: { says: says(early), failsDuplication: true }, incoming: Buffer.alloc(0) };
  if (s.reply.t === 'RESULT') return { violation: { says: 'a RESULT frame answers its OPEN', failsDuplication: true }, incoming: Buffer.alloc(0) };
  const late = s.after.find((step) => !allowed(step, s.kind, true));
  const violation = late ? { says: says(late), failsDuplication: false } : undefined;
  if (s.reply.t !== 'OPENED' || s.reply.fd !== GIVEN_AS || !INCOMING.has(s.kind)) return { violation, incoming: Buffer.alloc(0) };
  const pieces: Buffer[] = [];
  for (const step of s.after) {
    if (step === late || step.t === 'EOF') break;
    if (step.t === 'DATA') pieces.push(Buffer.from(step.hex, 'hex'));
  }
  return { violation, incoming: Buffer.concat(pieces) };
}

/** What `fd` (non-blocking) holds now, up to its end of file. */
function readNow(fd: number): Buffer {
  const pieces: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
    if (n === 0) break;
    pieces.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(pieces);
}

/** What socket `fd` holds now, up to its end of file (recvmsg(2) with MSG_DONTWAIT: receiveNow, which reads the end of file as an EofError). */
function socketHolds(fd: number): Buffer {
  const pieces: Buffer[] = [];
  try {
    for (let m = receiveNow(fd, 65536, 0); m !== null; m = receiveNow(fd, 65536, 0)) pieces.push(m.data);
  } catch (err) {
    if (!(err instanceof EofError)) throw err;
  }
  return Buffer.concat(pieces);
}

/** What pipe end `r` holds now, read through a non-blocking open file of its own. */
function pipeHolds(r: number): Buffer {
  const reader = openSync(`/proc/self/fd/${r}`, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    return readNow(reader);
  } finally {
    closeFds([reader]);
  }
}

/** The caller's fd for `kind`, what it holds to go out, and how to read what came in and what is left. */
interface Given {
  fd: number;
  incoming(): Buffer;
  /** What is still there to be read of the bytes it held to go out. */
  unsent(): Buffer;
  fds: number[];
}

const HELD = Buffer.from('held by the caller before the duplication');

function given(kind: Kind, dir: string, run: number): Given {
  const path = join(dir, `file-${run}`);
  switch (kind) {
    case 'file (write)': {
      const fd = openSync(path, 'w');
      return { fd, incoming: () => readFileSync(path), unsent: () => Buffer.alloc(0), fds: [fd] };
    }
    case 'file (read)': {
      writeFileSync(path, 'a copy of this');
      const fd = openSync(path, 'r');
      return { fd, incoming: () => Buffer.alloc(0), unsent: () => Buffer.alloc(0), fds: [fd] };
    }
    case 'pipe write end': {
      const [r, w] = makePipe();
      return { fd: w, incoming: () => pipeHolds(r), unsent: () => Buffer.alloc(0), fds: [r, w] };
    }
    case 'pipe read end': {
      const [r, w] = makePipe();
      writeSync(w, HELD);
      return { fd: r, incoming: () => Buffer.alloc(0), unsent: () => pipeHolds(r), fds: [r, w] };
    }
    case 'stream socket': {
      const [s1, s2] = rawSocketPair('stream');
      writeSync(s2, HELD);
      return { fd: s1, incoming: () => socketHolds(s2), unsent: () => socketHolds(s1), fds: [s1, s2] };
    }
  }
}

let dir: string;
/** Numbers the caller's files. */
let run = 0;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-remote-opened-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(
  'generated: the caller\'s fd gets only the DATA after the OPENED of a duplication that succeeded; a stream frame before its OPENED is a ProtocolError; a refused duplication takes nothing',
  async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(script, async (s) => {
        const want = expected(s);
        const conn = await connect('remote', {
          via: ['/usr/bin/python3', FAR_SIDE, 'script', JSON.stringify([...s.before, s.reply, ...s.after])],
          command: PROBE_COMMAND,
          timeoutMs: scaled(20_000),
        });
        const g = given(s.kind, dir, run++);
        try {
          const got = await conn.dupFileDescriptor(g.fd).then(
            (fd) => ({ fd }),
            (err: unknown) => ({ err }),
          );
          if (want.violation?.failsDuplication) {
            const err = (got as { err?: unknown }).err;
            expect(err).toBeInstanceOf(ProtocolError);
            expect((err as Error).message).toMatch(new RegExp(`^dupFileDescriptor\\(${g.fd}\\) failed: the remote command's channel \\(via process pid \\d+\\) broke the protocol: `));
            expect((err as Error).message).toContain(want.violation.says);
          } else if (s.reply.t === 'ERROR') {
            expect((got as { err?: unknown }).err).toBeInstanceOf(RemoteError);
          } else if (s.reply.fd !== GIVEN_AS) {
            expect((got as { err?: unknown }).err).toBeInstanceOf(ProtocolError);
            expect(((got as { err: Error }).err).message).toBe(`dupFileDescriptor(${g.fd}): an OPENED whose fd is not an fd number (${s.reply.fd})`);
          } else {
            expect(got).toEqual({ fd: GIVEN_AS });
          }
          // A call answered after the stream's frames: what came before it is written (files before the reply, pipes and sockets as the frames came).
          const later = await conn.call('anything').then(
            (value) => ({ value }),
            (err: unknown) => ({ err }),
          );
          if (want.violation) {
            expect((later as { err?: unknown }).err).toBeInstanceOf(ProtocolError);
            expect(((later as { err: Error }).err).message).toMatch(/^anything\(\) failed: the remote command's channel \(via process pid \d+\) broke the protocol: /);
            expect(((later as { err: Error }).err).message).toContain(want.violation.says);
          } else {
            expect(later).toEqual({ value: undefined });
          }
          const incoming = g.incoming();
          if (want.violation) expect(want.incoming.subarray(0, incoming.length).equals(incoming) && incoming.length <= want.incoming.length).toBe(true);
          else expect(incoming.toString('hex')).toBe(want.incoming.toString('hex'));
          // Nothing of a refused duplication's fd was read: what it held is there still.
          if (OUTGOING.has(s.kind) && !('fd' in got)) expect(g.unsent().toString()).toBe(HELD.toString());
        } finally {
          await conn.close();
          closeFds(g.fds);
        }
      }),
      { numRuns: 150 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(300_000),
);

test(
  'generated: what follows a refused duplication\'s reply is dropped also while that reply waits for another stream\'s file writes',
  async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Kind>('file (write)', 'pipe write end', 'stream socket'),
        fc.constantFrom<Reply>({ t: 'ERROR', fd: GIVEN_AS }, { t: 'OPENED', fd: -1 }),
        fc.uint8Array({ minLength: 1, maxLength: 48 }),
        async (kind, reply, bytes) => {
          // A batch: the first stream's file is written on the thread pool, and
          // the second OPEN's reply, which comes while that write runs, settles
          // only once it is done; the frames after that reply come before.
          const scripts = [
            [{ t: 'OPENED', fd: GIVEN_AS }, { t: 'DATA', hex: 'ab'.repeat(48 * 1024), to: 0 }],
            [reply, { t: 'DATA', hex: Buffer.from(bytes).toString('hex'), to: 0 }],
          ];
          const conn = await connect('remote', { via: ['/usr/bin/python3', FAR_SIDE, 'script', JSON.stringify(scripts)], command: PROBE_COMMAND, timeoutMs: scaled(20_000) });
          const log = given('file (write)', dir, run++);
          const g = given(kind, dir, run++);
          try {
            const err = await conn.dupFileDescriptors([log.fd, g.fd]).catch((e: unknown) => e);
            expect(err).toBeInstanceOf(reply.t === 'ERROR' ? RemoteError : ProtocolError);
            expect(await conn.call('anything')).toBeUndefined();
            expect(g.incoming().toString('hex')).toBe('');
          } finally {
            await conn.close();
            closeFds([...log.fds, ...g.fds]);
          }
        },
      ),
      { numRuns: 20 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(120_000),
);

test('a stream whose end here cannot be pumped at its OPENED fails its duplication with that error; the command\'s end over there is released', async () => {
  const before = openFdTable();
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  const [r, w] = makePipe();
  try {
    // The server's table once its runtime has settled (the first call opens what it opens lazily).
    await conn.call('where');
    const serverBaseline = openFdTable(conn.location.pid);
    const refusal = new SystemError(28 /* ENOSPC: epoll's watches used up */, 'epoll_ctl');
    // As the channel does when its pump cannot take an end: the end is closed, the call throws.
    const pump = jest.spyOn(Channel.prototype, 'pump').mockImplementationOnce((_stream, end) => {
      closeOwnFd(end.fd);
      throw refusal;
    });
    try {
      await expect(conn.dupFileDescriptor(w)).rejects.toBe(refusal);
      expect(pump).toHaveBeenCalledTimes(1);
    } finally {
      pump.mockRestore();
    }
    expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
    // The connection goes on: the command's bytes reach the pipe.
    const far = await conn.dupFileDescriptor(w);
    await conn.call('write', far, 'after');
    expect(pipeHolds(r).toString()).toBe('after');
  } finally {
    await conn.close();
    closeFds([r, w]);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(60_000));
