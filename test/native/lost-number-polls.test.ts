/**
 * Everything of fdbridge's that polls an fd (a socket, an exit watch, a
 * relay pump's input and streams) lets go of a number whose fd the program
 * closed behind its back when a new poll of fdbridge's is made there for
 * another file (native/polled_number.h): libuv's uv_poll_init at a number a
 * started poll holds fails with EEXIST, and an old poll's stop or close
 * would delete the new one's epoll entry, which then never wakes. The new
 * poll is made, gets its events before and after the old one is closed,
 * and the old one's close leaves the new fd open.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { killIfSpawned } from '../../src/child-process';
import { DatagramSocket } from '../../src/datagram';
import { closeFds, closeOwnFds, closesSettled, fdIdentity, openFdTable } from '../../src/fd';
import { fdRegistration } from '../../src/test-hooks';
import { UnixSocket, wrapOwnSocket } from '../../src/socket';
import { openAt } from '../util/open-at';
import { fdTableSettles } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { scaled } from '../util/time-scale';
import { native } from './binding';
import { expectSystemError } from './helpers';

const STREAM = native.constants.SOCK_STREAM;
const HEADER_BYTES = native.RelayPump.constants.HEADER_BYTES;

type Old = 'socket' | 'exit-watch' | 'pump-input' | 'pump-stream';
type New = 'socket' | 'exit-watch' | 'pump-stream';

/** A poll and how to close it; `check` sees it get an event (resolves once it has), when it can again. */
interface Poll {
  fd: number;
  check?: () => Promise<void>;
  /** Once only (an exit watch fires once): its event, after which `check` is gone. */
  once?: () => Promise<void>;
  close: () => void | Promise<void>;
}

/** A few turns of the event loop (each setImmediate runs after a poll phase). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

const identity = (fd: number): string => {
  const id = fdIdentity(fd);
  return `${id.dev}:${id.ino}`;
};

/** A socket of fdbridge's whose first end lands where fdbridge's next fd goes: its peer sends, it receives. */
function socketPoll(): Poll {
  const [a, b] = UnixSocket.pair('seqpacket', { own: true });
  let n = 0;
  return {
    fd: a.fd,
    check: async () => {
      const arriving = a.receive({ timeoutMs: scaled(5000) });
      await b.send(Buffer.from(`m${++n}`));
      const m = await arriving;
      expect(String(m.data)).toBe(`m${n}`);
    },
    close: () => {
      a.close();
      b.close();
    },
  };
}

/** A process that waits until killed, and a pidfd of it (not fdbridge's: below the floor). */
function sleeper(): { pidfd: number; kill: () => void } {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  if (child.pid === undefined) throw new Error('sleep did not start');
  const pidfd = native.pidfdOpen(child.pid);
  return {
    pidfd,
    kill: () => {
      killIfSpawned(child);
      closeFds([pidfd]);
    },
  };
}

/** An exit watch: its copy of the pidfd lands where fdbridge's next fd goes. */
function exitWatchPoll(): Poll {
  const proc = sleeper();
  let fired!: () => void;
  const exited = new Promise<void>((r) => (fired = r));
  let at: number;
  let watch: ReturnType<typeof newWatch>;
  try {
    at = nextOwnFd();
    watch = newWatch(proc.pidfd, () => fired());
    expect(identity(at)).toBe(identity(proc.pidfd)); // its copy is there
  } catch (err) {
    proc.kill();
    throw err;
  }
  return {
    fd: at,
    once: async () => {
      proc.kill();
      await exited;
    },
    close: () => {
      watch.close();
      proc.kill();
    },
  };
}

function newWatch(pidfd: number, onExit: () => void) {
  return new native.ExitWatch(pidfd, onExit);
}

/** A relay pump reading from its input (the fd given) and writing frames to its output. */
function pump(inFd: number): { pump: ReturnType<typeof makePump>; frames: UnixSocket; close: () => Promise<void> } {
  const [out, framesEnd] = native.socketpair(STREAM, true);
  const p = makePump(inFd, out);
  const frames = wrapOwnSocket(framesEnd, 'stream');
  return {
    pump: p,
    frames,
    close: async () => {
      // Its stream sockets close on the background closer: done before the next case counts numbers.
      const tickets = p.close();
      frames.close();
      await closesSettled(tickets);
    },
  };
}

function makePump(inFd: number, outFd: number) {
  return new native.RelayPump(inFd, outFd, () => undefined);
}

/** A pump whose input is the first end of a socket pair of fdbridge's (the peer writes frames into it). */
function pumpInputPoll(): Poll {
  const [input, writer] = native.socketpair(STREAM, true);
  const p = pump(input);
  return {
    fd: input,
    close: async () => {
      await p.close();
      closeOwnFds([writer]);
    },
  };
}

/**
 * A pumped stream (a source) on the first end of a socket pair of
 * fdbridge's, made after `before()` (the pump is made first, so that the
 * stream's socket is fdbridge's next fd): bytes written into its peer come
 * out of the pump as DATA.
 */
function pumpStreamPoll(before?: () => void): Poll {
  const [input, writer] = native.socketpair(STREAM, true);
  const p = pump(input);
  before?.();
  const [stream, peer] = native.socketpair(STREAM, true);
  try {
    p.pump.addStream(7, stream, true, false, true);
  } catch (err) {
    // Not polled (a poll at the number that did not let go: EEXIST): nothing left open to keep jest running.
    void p.close();
    closeOwnFds([writer, stream, peer]);
    throw err;
  }
  let n = 0;
  return {
    fd: stream,
    check: async () => {
      const bytes = Buffer.from(`bytes ${++n}`);
      const arriving = p.frames.receive({ timeoutMs: scaled(5000) });
      native.sendNow(peer, bytes);
      const m = await arriving;
      expect(m.data.subarray(HEADER_BYTES).toString()).toBe(bytes.toString());
    },
    close: async () => {
      await p.close();
      closeOwnFds([writer, peer]);
    },
  };
}

function makeOld(kind: Old): Poll {
  switch (kind) {
    case 'socket':
      return socketPoll();
    case 'exit-watch':
      return exitWatchPoll();
    case 'pump-input':
      return pumpInputPoll();
    case 'pump-stream':
      return pumpStreamPoll();
  }
}

/** The number fdbridge's next fd takes (the lowest free at or above the floor). */
function nextOwnFd(): number {
  const probe = native.dupHigh(0);
  native.close(probe);
  return probe;
}

/** The new poll, made after `closeOld()` (the program's close of the old one's fd), so that its fd lands there. */
function makeNew(kind: New, closeOld: () => void): Poll {
  switch (kind) {
    case 'socket':
      closeOld();
      return socketPoll();
    case 'exit-watch':
      closeOld();
      return exitWatchPoll();
    case 'pump-stream':
      return pumpStreamPoll(closeOld);
  }
}

/** `poll` whose close runs once, however often it is called. */
function closedOnce(poll: Poll): Poll {
  let closing: Promise<void> | undefined;
  return { ...poll, close: () => (closing ??= Promise.resolve(poll.close())) };
}

async function runCase(oldKind: Old, newKind: New, closeOldFirst: boolean): Promise<void> {
  const old = closedOnce(makeOld(oldKind));
  const polls: Poll[] = [old];
  try {
    await turns(2); // its poll is in epoll
    const n = old.fd;
    const fresh = closedOnce(makeNew(newKind, () => closeSync(n))); // the program's close, behind fdbridge's back
    polls.push(fresh);
    expect(fresh.fd).toBe(n);
    const file = identity(n);
    await turns(2);
    if (closeOldFirst) await old.close();
    if (fresh.once) await fresh.once();
    else await fresh.check?.();
    if (!closeOldFirst) await old.close();
    await fresh.check?.(); // still polled after the old one's close
    expect(identity(n)).toBe(file); // never closed by the old one
  } finally {
    for (const p of polls.reverse()) await p.close();
  }
}

test('generated: an fd fdbridge polls, closed behind its back, lets go of its number for the poll fdbridge makes there next: a socket, an exit watch, a relay pump\'s input or stream', async () => {
  const before = openFdTable(process.pid);
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<Old>('socket', 'exit-watch', 'pump-input', 'pump-stream'),
      fc.constantFrom<New>('socket', 'exit-watch', 'pump-stream'),
      fc.boolean(),
      runCase,
    ),
    {
      numRuns: 16,
      examples: [
        ['exit-watch', 'socket', false],
        ['pump-stream', 'socket', true],
        ['pump-input', 'socket', false],
        ['socket', 'exit-watch', false],
        ['socket', 'pump-stream', false],
      ],
    },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120_000));

/**
 * The program's own file at the number, where no poll of fdbridge's is made
 * to tell the old one: the old one finds its fd gone when it closes, ends
 * its registration (the number is not fdbridge's any more: a leak check
 * blames the program's close, and the number is the program's to use) and
 * leaves the program's file open.
 */
test.each<[Exclude<Old, 'socket'>]>([['exit-watch'], ['pump-input'], ['pump-stream']])(
  "a %s whose fd the program closed and opened its own file at ends the number's registration at its close, leaving the file open",
  async (kind) => {
    const before = openFdTable(process.pid);
    const old = closedOnce(makeOld(kind));
    let own: number | undefined;
    try {
      await turns(2); // its poll is in epoll
      const n = old.fd;
      expect(fdRegistration(n)).not.toBe(0);
      closeSync(n); // the program's close, behind fdbridge's back
      own = openAt(__filename, n);
      const file = identity(n);
      await turns(2);
      await old.close();
      expect(fdRegistration(n)).toBe(0);
      expect(identity(n)).toBe(file); // never closed by the old one
    } finally {
      await old.close();
      if (own !== undefined) closeSync(own);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(30_000),
);

/**
 * A pump's input closed behind its back, its number taken by a poll of
 * fdbridge's: nothing more is read there, and the pump ends its input
 * (EBADF) on the loop's next turn, so that whoever waits on the channel gets
 * a typed error instead of waiting for its close, as a write to a let-go
 * output or stream fails. The new poll still gets its events.
 */
test("generated: a relay pump whose input the program closed ends its input with EBADF once a poll of fdbridge's is made at the number", async () => {
  const before = openFdTable(process.pid);
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<New>('socket', 'exit-watch', 'pump-stream'), fc.nat({ max: HEADER_BYTES - 1 }), async (newKind, partial) => {
      const [input, writer] = native.socketpair(STREAM, true);
      const [out, framesEnd] = native.socketpair(STREAM, true);
      let ended!: (err: number) => void;
      const end = new Promise<number>((r) => (ended = r));
      const p = new native.RelayPump(input, out, (kind, a) => {
        if (kind === 3) ended(a as number);
      });
      const polls: Poll[] = [];
      try {
        if (partial > 0) native.sendNow(writer, Buffer.alloc(partial)); // a frame's header begun
        await turns(2); // read, and its poll in epoll
        const fresh = closedOnce(makeNew(newKind, () => closeSync(input))); // the program's close, behind fdbridge's back
        polls.push(fresh);
        expect(fresh.fd).toBe(input);
        expect(await end).toBe(-osConstants.errno.EBADF);
        if (fresh.once) await fresh.once();
        else await fresh.check?.();
      } finally {
        for (const q of polls.reverse()) await q.close();
        await closesSettled(p.close());
        closeOwnFds([writer, framesEnd]);
      }
    }),
    { numRuns: 8, examples: [['socket', 0], ['pump-stream', 3], ['exit-watch', 0]] },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120_000));

/**
 * A datagram socket's pin (the socket of fdbridge's connected to a full
 * receiver, which a waiting send goes through and is polled for its room)
 * closed behind its back is let go of as every poll of fdbridge's is: a
 * poll made at its number is made (not EEXIST) and gets its events, and the
 * send waiting on the pin, which can go nowhere now, fails with EBADF; with
 * the program's own file there (no poll made to tell it), the socket's
 * close ends the pin's registration and leaves the file open (it closed the
 * number).
 */
test.each<[New | 'own-file']>([['socket'], ['exit-watch'], ['pump-stream'], ['own-file']])(
  "a datagram socket's pin closed behind its back, then a %s at its number: the waiting send fails with EBADF, the number is left alone",
  async (kind) => {
    const before = openFdTable(process.pid);
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-pin-'));
    const rx = DatagramSocket.bind(join(dir, 'p', 'rx.sock'));
    const tx = new native.Socket(native.dgramSocket(), native.constants.SOCK_DGRAM, { maxFds: 0 });
    const polls: Poll[] = [];
    let own: number | undefined;
    try {
      const to = rx.address as string;
      const capacity = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim()) + 1;
      for (let i = 0; i < capacity; i++) expect(tx.sendTo(to, false, Buffer.from(`m${i}`), [], true)).toBe(0);
      const had = registeredFds();
      let settle!: (err: Error | null) => void;
      const settled = new Promise<Error | null>((r) => (settle = r));
      expect(tx.sendTo(to, false, Buffer.from('waits'), [], true, (err) => settle(err))).toBe(1);
      await turns(2); // tried, then waiting on its pin
      const made = [...registeredSince(had).keys()];
      expect(made).toHaveLength(1); // the pin, polled while the send waits
      const n = made[0] as number;
      if (kind === 'own-file') {
        closeSync(n); // the program's close, behind fdbridge's back
        own = openAt(__filename, n);
      } else {
        const fresh = closedOnce(makeNew(kind, () => closeSync(n)));
        polls.push(fresh);
        expect(fresh.fd).toBe(n);
        expectSystemError(await settled, 'EBADF', 'sendmsg'); // a queued send's completion names sendmsg
        if (fresh.once) await fresh.once();
        else await fresh.check?.();
      }
      const file = identity(n);
      const registration = kind === 'own-file' ? 0 : fdRegistration(n); // the new fd's
      await closesSettled(tx.close());
      expect(identity(n)).toBe(file); // never closed by the socket's close
      expect(fdRegistration(n)).toBe(registration); // the pin's ended; the new fd's kept
      for (const p of polls) await p.check?.(); // still polled after the socket's close
    } finally {
      await closesSettled(tx.close());
      for (const p of polls.reverse()) await p.close();
      if (own !== undefined) closeSync(own);
      rx.close();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(30_000),
);
