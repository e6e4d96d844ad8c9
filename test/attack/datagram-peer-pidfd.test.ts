/**
 * A datagram receive's `peerPidfd` is "a pidfd of the process expected to
 * answer": PeerGoneError as soon as that process exits (README, Datagram
 * sockets). Any other fd was taken as one and polled: a pipe with a byte in
 * it, or a socket whose peer hung up, turned readable and was reported as
 * the peer's exit (PeerGoneError, nobody exited), and one of fdbridge's own
 * numbers (the caller's pidfd closed, the number fdbridge's since) was
 * polled as well. Now an fd of another kind is a TypeError
 * (ERR_INVALID_ARG_VALUE) naming it, at once; fdbridge's own a SystemError
 * EBADF; a real pidfd works as before.
 *
 * Generated: the kind of fd given, and whether it then turns readable.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, PeerGoneError, SystemError, UnixSocket } from '../../src';
import { closeFds, fdLimit, makeEventfd, makeMemfd, makePipe, openFdTable, openPidfd, setFdLimit } from '../../src/fd';
import { rawSocketPair } from '../../src/testing';
import { exitOf } from '../util/processes';

type Kind = 'pipe read end' | 'pipe write end' | 'eventfd' | 'memfd' | 'stream socket' | '/dev/null' | 'directory' | "fdbridge's own socket";
const KINDS: Kind[] = ['pipe read end', 'pipe write end', 'eventfd', 'memfd', 'stream socket', '/dev/null', 'directory', "fdbridge's own socket"];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-peer-pidfd-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An fd of `kind` (the caller's to close, in `close`), and a way to make it readable. */
function fdOf(kind: Kind): { fd: number; stir(): void; close(): void } {
  switch (kind) {
    case 'pipe read end':
    case 'pipe write end': {
      const [r, w] = makePipe();
      return { fd: kind === 'pipe read end' ? r : w, stir: () => writeSync(w, 'x'), close: () => closeFds([r, w]) };
    }
    case 'stream socket': {
      const [a, b] = rawSocketPair('stream');
      let bOpen = true;
      return {
        fd: a,
        stir: () => {
          closeSync(b);
          bOpen = false;
        },
        close: () => closeFds(bOpen ? [a, b] : [a]),
      };
    }
    case "fdbridge's own socket": {
      const [a, b] = UnixSocket.pair('seqpacket', { own: true });
      return { fd: a.fd, stir: () => b.close(), close: () => (a.close(), b.close()) };
    }
    default: {
      const fd = kind === 'eventfd' ? makeEventfd() : kind === 'memfd' ? makeMemfd() : kind === 'directory' ? openSync(dir, 'r') : openSync('/dev/null', 'r');
      return { fd, stir: () => undefined, close: () => closeFds([fd]) };
    }
  }
}

test('generated: a peerPidfd that is no pidfd is refused at once (TypeError naming it; fdbridge\'s own: EBADF), never taken for a process that exited', async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...KINDS), fc.boolean(), async (kind, stirred) => {
      const before = openFdTable();
      const receiver = DatagramSocket.open();
      const given = fdOf(kind);
      try {
        let outcome: unknown;
        try {
          const received = receiver.receive({ peerPidfd: given.fd, timeoutMs: 200 });
          if (stirred) given.stir();
          outcome = await received.then(
            () => 'received',
            (e: unknown) => e,
          );
        } catch (err) {
          outcome = err;
        }
        expect(outcome).not.toBeInstanceOf(PeerGoneError);
        if (kind === "fdbridge's own socket") {
          expect(outcome).toBeInstanceOf(SystemError);
          expect(outcome).toMatchObject({ code: 'EBADF' });
        } else {
          expect(outcome).toBeInstanceOf(TypeError);
          expect(outcome).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(new RegExp(`^receive: peerPidfd ${given.fd} must be a pidfd`)) as unknown });
        }
      } finally {
        given.close();
        receiver.close();
      }
      expect(openFdTable()).toEqual(before);
    }),
    { numRuns: 40 },
  );
});

test('with no number free (RLIMIT_NOFILE reached), a peerPidfd that is no pidfd is still refused at once, never polled as one', () => {
  const before = openFdTable();
  const receiver = DatagramSocket.open();
  const [r, w] = makePipe();
  const probe = openSync('/dev/null', 'r'); // the lowest free number, freed again
  closeSync(probe);
  const [soft, hard] = fdLimit();
  let outcome: unknown;
  setFdLimit(probe, hard); // no number below the limit is free: the next open fails with EMFILE
  try {
    outcome = receiver.receive({ peerPidfd: r, timeoutMs: 200 });
  } catch (err) {
    outcome = err;
  } finally {
    setFdLimit(soft, hard);
  }
  try {
    expect(outcome).toBeInstanceOf(TypeError);
    expect(outcome).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(new RegExp(`^receive: peerPidfd ${r} must be a pidfd .*not pipe:\\[`)) as unknown });
  } finally {
    if (outcome instanceof Promise) void outcome.catch(() => undefined);
    closeFds([r, w]);
    receiver.close();
  }
  expect(openFdTable()).toEqual(before);
});

test("a pidfd still works: its process's exit is PeerGoneError, a datagram before it is received", async () => {
  const receiver = DatagramSocket.bind({ abstract: `fdbridge-attack-peer-pidfd-${process.pid}` });
  const sender = DatagramSocket.open();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const pidfd = openPidfd(child.pid as number);
  try {
    const first = receiver.receive({ peerPidfd: pidfd });
    await sender.sendTo(receiver.address as { abstract: string }, Buffer.from('answer'));
    expect((await first).data.toString()).toBe('answer');
    const second = receiver.receive({ peerPidfd: pidfd });
    child.kill('SIGKILL');
    await expect(second).rejects.toBeInstanceOf(PeerGoneError);
  } finally {
    child.kill('SIGKILL');
    await exitOf(child);
    closeFds([pidfd]);
    sender.close();
    receiver.close();
  }
});
