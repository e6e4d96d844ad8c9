/**
 * A remote connection whose via stops taking the channel's output and lives
 * on (README, Remote commands: "PeerExitedError when the via process exits
 * or the channel breaks"; "a dead peer never hangs a caller"). The via
 * (fixtures/via-stops-taking-output.py) passes on the client's HELLO and a
 * generated number of bytes after it, then closes its stdin while the server
 * behind it lives on, its replies still relayed: every frame the client
 * writes from then on fails with EPIPE, and nothing it sent is answered.
 * Every request, made before or after that, must settle: answered, or a
 * PeerExitedError saying the channel broke; close() then ends the via and
 * the server, and the fd table is the same as before. The same holds when
 * the channel's output is closed behind fdbridge's back (the program closes
 * our end of the via's stdin, a copy kept elsewhere so that the via sees no
 * end): as for the input (remote.test.ts), a ClosedError naming that close,
 * found by the next write when the number stays free, and with no write at
 * all when a socket of fdbridge's is made at the number (the pump lets go
 * of it then: nothing is ever written there again).
 */
import { closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, PeerExitedError, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { UnixSocket } from '../../src/socket';
import { closeFds, dupFd, formatFdTableDiff, makePipe, openFdTable } from '../../src/fd';
import type { RemoteConnection } from '../../src/transports/remote';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { hasPython } from '../util/linger-attacker';
import { pidExit } from '../util/processes';
import { registeredFds, registeredSince } from '../util/registered-fds';
import { settleFdTable } from '../util/settle';
import { scaled } from '../util/time-scale';
import { assertGuarded, HangGuard } from '../util/wait-for';

const VIA = join(__dirname, 'fixtures', 'via-stops-taking-output.py');

type Request = { kind: 'call'; bytes: number } | { kind: 'dup' } | { kind: 'dups'; count: number };

const request: fc.Arbitrary<Request> = fc.oneof(
  fc.record({ kind: fc.constant('call' as const), bytes: fc.integer({ min: 0, max: 100_000 }) }),
  fc.record({ kind: fc.constant('dup' as const) }),
  fc.record({ kind: fc.constant('dups' as const), count: fc.integer({ min: 1, max: 300 }) }),
);

/**
 * Makes `r` on `conn`, giving it `fd` (borrowed); settles with 'ok' (answered:
 * for a call, fail()'s own error from the command) or what it rejected with.
 */
function make(conn: Connection, r: Request, fd: number): Promise<unknown> {
  if (r.kind === 'call') {
    const message = 'x'.repeat(r.bytes);
    return conn.call('fail', message).then(
      () => new Error('fail() resolved'),
      (err: unknown) => (err instanceof RemoteError && err.method === 'fail' && err.remote.message === message ? 'ok' : err),
    );
  }
  const made = r.kind === 'dup' ? conn.dupFileDescriptor(fd) : conn.dupFileDescriptors(Array.from({ length: r.count }, () => fd));
  return made.then(
    () => 'ok',
    (err: unknown) => err,
  );
}

/** Resolves once process `pid` has exited (at once if it is gone already). */
function exited(pid: number): Promise<void> {
  try {
    return pidExit(pid);
  } catch (err) {
    if ((err as { code?: string }).code === 'ESRCH') return Promise.resolve();
    throw err;
  }
}

(hasPython() ? test : test.skip)(
  'generated: a via that stops taking the channel and lives on: every request settles, answered or PeerExitedError; close() ends it all',
  async () => {
    await assertGuarded(
      fc.asyncProperty(fc.integer({ min: 0, max: 4096 }), fc.array(request, { minLength: 0, maxLength: 8 }), async (cut, requests) => {
        const before = openFdTable();
        const guard = new HangGuard(scaled(20_000));
        const [r, w] = makePipe();
        const conn = (await connect('remote', {
          command: PROBE_COMMAND,
          via: ['python3', VIA, String(cut)],
          serve: LOCAL_REMOTE.serve,
          timeoutMs: scaled(10_000),
        })) as RemoteConnection;
        const viaPid = conn.via.pid as number;
        const serverPid = conn.location.pid;
        const outcomes: Array<Promise<unknown>> = [];
        try {
          for (const req of requests) outcomes.push(make(conn, req, w));
          // Small requests until the via has stopped taking (its stdin closed), then one more: its write fails.
          while (existsSync(`/proc/${viaPid}/fd/0`) && guard.leftMs > 0) {
            outcomes.push(make(conn, { kind: 'call', bytes: 64 }, w));
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          outcomes.push(make(conn, { kind: 'dup' }, w));
          const settled = await guard.within(Promise.all(outcomes), `the ${outcomes.length} requests settle (cut ${cut})`);
          for (const s of settled) if (s !== 'ok') expect(s).toBeInstanceOf(PeerExitedError);
          expect(settled[settled.length - 1]).toBeInstanceOf(PeerExitedError);
        } finally {
          await conn.close();
          closeFds([r, w]);
        }
        await guard.within(Promise.all([exited(viaPid), exited(serverPid)]), 'the via and the server exit once the connection is closed');
        expect(formatFdTableDiff(await settleFdTable(process.pid, before, 2000))).toBe('');
      }),
      { numRuns: 12 },
    );
  },
  scaled(300_000),
);

/** Settles with undefined (answered) or what `p` rejected with. */
const rejection = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e);

test.each([
  ['left free: the next write fails (EBADF)', false],
  ["then taken by a socket of fdbridge's: the pump lets go of it, and that ends the channel with no write", true],
])(
  "the channel's output closed behind fdbridge's back (a copy of it kept: the via sees no end), its number %s; pending and later requests fail with a ClosedError naming that close; the via and the server exit, fd table the same",
  async (_how, taken) => {
    const before = openFdTable();
    const had = registeredFds();
    const conn = (await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) })) as RemoteConnection;
    const viaPid = conn.via.pid as number;
    const serverPid = conn.location.pid;
    // The via's stdin, stdout and stderr ends, made in that order: the output writes its stdin.
    const ends = [...registeredSince(had)].filter(([, t]) => t.startsWith('socket:')).map(([fd]) => fd).sort((a, b) => a - b);
    expect(ends).toHaveLength(3);
    const output = ends[0] as number;
    const copy = dupFd(output);
    const [r, w] = makePipe();
    const sockets: Array<[UnixSocket, UnixSocket]> = [];
    const guard = new HangGuard(scaled(20_000));
    try {
      // Sockets of fdbridge's on the free numbers below the output's, so that the one made after the close lands there.
      if (taken) {
        do sockets.push(UnixSocket.pair('seqpacket', { own: true }));
        while ((sockets[sockets.length - 1] as [UnixSocket, UnixSocket])[0].fd < output);
      }
      // The command's thread is in hang(): the echo behind it waits too.
      const pending = [conn.call('hang'), conn.call('echo', 1)].map(rejection);
      closeSync(output); // the program's close, behind fdbridge's back
      let errors: unknown[];
      if (taken) {
        const socket = UnixSocket.pair('seqpacket', { own: true });
        sockets.push(socket);
        expect(socket[0].fd).toBe(output);
        // Nothing is written after the close: the pump's letting go of the number alone must end the channel.
        errors = await guard.within(Promise.all(pending), 'the pending requests settle');
        errors.push(...(await guard.within(Promise.all([conn.call('echo', 2), conn.dupFileDescriptor(r), conn.dupFileDescriptors([r, w])].map(rejection)), 'the later requests settle')));
      } else {
        // Nothing tells fdbridge of this close: the later requests' write finds it.
        const later = [conn.call('echo', 2), conn.dupFileDescriptor(r), conn.dupFileDescriptors([r, w])].map(rejection);
        errors = await guard.within(Promise.all([...pending, ...later]), 'the requests settle');
      }
      const named = `the remote connection ended: its channel's output (fd ${output}) was closed by someone other than fdbridge`;
      expect(errors.map((e) => [e instanceof ClosedError && !(e instanceof PeerExitedError), (e as ClosedError).code, (e as Error).message.includes(named)])).toEqual(
        errors.map(() => [true, 'ERR_FDBRIDGE_CLOSED', true]),
      );
    } finally {
      for (const end of sockets.flat()) end.close();
      closeFds([copy, r, w]);
      await conn.close();
    }
    await guard.within(Promise.all([exited(viaPid), exited(serverPid)]), 'the via and the server exit once the connection is closed');
    expect(formatFdTableDiff(await settleFdTable(process.pid, before, 2000))).toBe('');
  },
  scaled(60_000),
);
