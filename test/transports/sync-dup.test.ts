/**
 * dupFileDescriptorSync: the blocking duplication. On child and helper it
 * blocks on the connection's socket; the replies of asynchronous requests
 * that arrive meanwhile must settle those requests as the event loop would
 * have (never lost, never given to the sync call, never to each other).
 * Generated mixes of async duplications, calls and sync duplications check
 * that every result names the file it was asked for; the edges (a timeout,
 * a dead peer, a closed fd, a worker thread) are checked one by one.
 */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';

import {
  ClosedError,
  connect,
  HelperDaemon,
  PeerExitedError,
  PROBE_COMMAND,
  SystemError,
  TimeoutError,
  UnsupportedError,
  type Connection,
  type TransportName,
  type WireIdentity,
} from '../../src';
import { closeFd, closeFds, fdIdentity, makeMemfd, openFdTable, type FdTable } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, helperForSuite } from '../util/processes';
import { daemonOnWorkerThread } from '../util/worker-daemon';

const suite = helperForSuite('fdbridge-sync-dup-');

function sameTable(a: Map<number, string>, b: Map<number, string>): boolean {
  return a.size === b.size && [...a].every(([fd, target]) => b.get(fd) === target);
}

function identityOf(fd: number): WireIdentity {
  const id = fdIdentity(fd);
  return { dev: String(id.dev), ino: String(id.ino), type: id.type };
}

describe.each(['child', 'helper'] as TransportName[])('%s transport', (transport) => {
  let conn: Connection;
  let farBaseline: FdTable | undefined;

  beforeEach(async () => {
    farBaseline = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
    conn = await connect(transport, { command: PROBE_COMMAND, socketPath: suite.socketPath });
  });

  afterEach(async () => {
    await conn.close();
    if (transport === 'child') expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
    if (farBaseline) expect(await fdTableSettles(suite.helper.pid, farBaseline)).toBe('');
  });

  test('returns the number of a duplicate of the same file in the command', async () => {
    const fd = makeMemfd('sync-dup-one');
    try {
      const remote = conn.dupFileDescriptorSync(fd);
      expect(await conn.call('identities', [remote])).toEqual([identityOf(fd)]);
    } finally {
      closeFd(fd);
    }
  });

  test('mixed with pending async duplications and calls, every request gets its own answer', async () => {
    // Several files, so that an answer given to the wrong request shows.
    const files = Array.from({ length: 5 }, (_, i) => makeMemfd(`sync-dup-mix-${i}`));
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.oneof(
              fc.record({ kind: fc.constant('async' as const), file: fc.nat(4) }),
              fc.record({ kind: fc.constant('batch' as const), files: fc.array(fc.nat(4), { minLength: 1, maxLength: 300 }) }),
              fc.record({ kind: fc.constant('call' as const), ms: fc.constantFrom(0, 1, 5) }),
              fc.record({ kind: fc.constant('sync' as const), file: fc.nat(4) }),
            ),
            { minLength: 1, maxLength: 24 },
          ),
          async (steps) => {
            const asked: Array<{ files: number[]; got: Promise<number[]> }> = [];
            const calls: Array<{ ms: number; got: Promise<unknown> }> = [];
            for (const s of steps) {
              if (s.kind === 'async') asked.push({ files: [s.file], got: conn.dupFileDescriptor(files[s.file]!).then((n) => [n]) });
              else if (s.kind === 'batch') asked.push({ files: s.files, got: conn.dupFileDescriptors(s.files.map((i) => files[i]!)) });
              else if (s.kind === 'call') calls.push({ ms: s.ms, got: conn.call('later', s.ms, s.ms) });
              // Blocks right here, with everything above still unanswered.
              else asked.push({ files: [s.file], got: Promise.resolve([conn.dupFileDescriptorSync(files[s.file]!)]) });
            }
            const remote: number[] = [];
            const expected: WireIdentity[] = [];
            for (const a of asked) {
              const got = await a.got;
              expect(got).toHaveLength(a.files.length);
              remote.push(...got);
              expected.push(...a.files.map((i) => identityOf(files[i]!)));
            }
            for (const c of calls) expect(await c.got).toBe(c.ms);
            // All open at once in the command: distinct numbers, each the file asked for.
            expect(new Set(remote).size).toBe(remote.length);
            expect(await conn.call('identities', remote)).toEqual(expected);
            await conn.call('adopt', remote);
            await conn.call('closeAdopted', remote);
          },
        ),
        { numRuns: 25, seed: 14 },
      );
    } finally {
      closeFds(files);
    }
  });

  test('times out with TimeoutError while the command is busy; the late duplicate is released, the connection goes on', async () => {
    const fd = makeMemfd('sync-dup-timeout');
    try {
      const before = new Map(await conn.call<Array<[number, string]>>('openFds'));
      // The command's thread is busy for 2 s: nothing is answered meanwhile.
      const busy = conn.call('block', 2000);
      expect(() => conn.dupFileDescriptorSync(fd, { timeoutMs: 50 })).toThrow(TimeoutError);
      expect(await busy).toBe(2000);
      // The command answers in order: once this call is answered, the late
      // DUP_OK has come, and the RELEASE it sets off has gone out.
      await conn.call('where');
      // The command's side closes released fds on its own time (a helper on
      // its closer thread): wait for the table to come back, within a bound.
      let after = new Map(await conn.call<Array<[number, string]>>('openFds'));
      for (let i = 0; i < 100 && !sameTable(after, before); i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = new Map(await conn.call<Array<[number, string]>>('openFds'));
      }
      expect(after).toEqual(before);
      const remote = conn.dupFileDescriptorSync(fd);
      expect(await conn.call('identities', [remote])).toEqual([identityOf(fd)]);
    } finally {
      closeFd(fd);
    }
  });

  test('a closed fd is EBADF with nothing sent; the connection goes on', async () => {
    const fd = makeMemfd('sync-dup-ebadf');
    closeFd(fd);
    expect(() => conn.dupFileDescriptorSync(fd)).toThrow(SystemError);
    expect(() => conn.dupFileDescriptorSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }) as Error);
    const other = makeMemfd('sync-dup-after-ebadf');
    try {
      expect(await conn.call('identities', [conn.dupFileDescriptorSync(other)])).toEqual([identityOf(other)]);
    } finally {
      closeFd(other);
    }
  });

  test('bad arguments throw at once', () => {
    expect(() => conn.dupFileDescriptorSync(-1)).toThrow(TypeError);
    expect(() => conn.dupFileDescriptorSync(0, { timeoutMs: -5 })).toThrow(RangeError);
    expect(() => conn.dupFileDescriptorSync(0, { timeoutMs: 1.5 })).toThrow(RangeError);
  });

  test('after close() it throws ClosedError', async () => {
    await conn.close();
    expect(() => conn.dupFileDescriptorSync(0)).toThrow(ClosedError);
  });
});

describe('child transport: a peer that dies', () => {
  test('while a sync duplication waits: PeerExitedError, and the pending async requests fail too', async () => {
    const conn = await connect('child', { command: PROBE_COMMAND });
    const fd = makeMemfd('sync-dup-death');
    try {
      const pending = conn.call('hang').catch((e: unknown) => e);
      // The command exits before it reads the duplication.
      const dying = conn.call('exit', 3).catch((e: unknown) => e);
      expect(() => conn.dupFileDescriptorSync(fd, { timeoutMs: 30_000 })).toThrow(PeerExitedError);
      expect(await pending).toBeInstanceOf(PeerExitedError);
      expect(await dying).toBeInstanceOf(PeerExitedError);
      expect(() => conn.dupFileDescriptorSync(fd)).toThrow(PeerExitedError);
    } finally {
      closeFd(fd);
      await conn.close();
    }
    expect((await exitOf((conn as ChildConnection).child)).code).toBe(3);
  });
});

describe('other transports', () => {
  test.each(['direct', 'worker'] as TransportName[])('%s duplicates in this process, as dupFileDescriptor does', async (transport) => {
    const conn = await connect(transport, { command: PROBE_COMMAND });
    const fd = makeMemfd('sync-dup-in-process');
    try {
      const remote = conn.dupFileDescriptorSync(fd);
      expect(await conn.call('identities', [remote])).toEqual([identityOf(fd)]);
    } finally {
      closeFd(fd);
      await conn.close();
    }
  });

  test('pidfd throws UnsupportedError', async () => {
    let conn: Connection;
    try {
      conn = await connect('pidfd', { command: PROBE_COMMAND });
    } catch (err) {
      // No ptrace rights here: the transport itself is unsupported.
      expect(err).toBeInstanceOf(UnsupportedError);
      return;
    }
    try {
      expect(() => conn.dupFileDescriptorSync(0)).toThrow(UnsupportedError);
    } finally {
      await conn.close();
    }
    expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
  });

  // A daemon on the caller's own thread answers from the loop the call would block.
  test.each(['abstract', 'path', 'path through a symlinked directory'])(
    'a helper daemon started on this thread (%s): UnsupportedError at once, nothing sent; dupFileDescriptor works',
    async (how) => {
      const dir = mkdtempSync(join(tmpdir(), 'fdb-sync-here-'));
      const socketPath = how === 'abstract' ? `@fdbridge-sync-here-${process.pid}` : join(dir, 'daemon.sock');
      const daemon = HelperDaemon.start({ diagnostics: true, socketPath });
      let conn: Connection | undefined;
      const fd = makeMemfd('sync-dup-daemon-here');
      try {
        if (how.includes('symlink')) symlinkSync(dir, join(dir, 'link'));
        conn = await connect('helper', { command: PROBE_COMMAND, socketPath: how.includes('symlink') ? join(dir, 'link', 'daemon.sock') : socketPath });
        // A timeout that would be reached if the call waited: it must not wait.
        const err = (() => {
          try {
            (conn as Connection).dupFileDescriptorSync(fd, { timeoutMs: 60_000 });
          } catch (e) {
            return e;
          }
          return undefined;
        })();
        expect(err).toBeInstanceOf(UnsupportedError);
        expect((err as Error).message).toMatch(/started on this thread/);
        // Nothing was sent: once a later request is answered, the command holds no duplicate.
        expect(await conn.call('identities', [])).toEqual([]);
        expect(daemon.status().fdsHeld).toBe(0);
        const remote = await conn.dupFileDescriptor(fd);
        expect(await conn.call('identities', [remote])).toEqual([identityOf(fd)]);
        expect(daemon.status().fdsHeld).toBe(1);
      } finally {
        closeFd(fd);
        await conn?.close();
        await daemon.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  test('a helper daemon started on this thread by another copy of the library: UnsupportedError at once', async () => {
    let other: typeof import('../../src') | undefined;
    jest.isolateModules(() => {
      other = require('../../src') as typeof import('../../src');
    });
    const socketPath = `@fdbridge-sync-here-other-copy-${process.pid}`;
    const daemon = (other as typeof import('../../src')).HelperDaemon.start({ diagnostics: true, socketPath });
    const conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
    const fd = makeMemfd('sync-dup-daemon-other-copy');
    try {
      expect(() => conn.dupFileDescriptorSync(fd, { timeoutMs: 60_000 })).toThrow(UnsupportedError);
    } finally {
      closeFd(fd);
      await conn.close();
      await daemon.close();
    }
  });

  test('a helper daemon on a worker thread of this process answers this thread\'s dupFileDescriptorSync', async () => {
    const socketPath = `@fdbridge-sync-worker-daemon-${process.pid}`;
    const daemonThread = await daemonOnWorkerThread(socketPath);
    const conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
    const fd = makeMemfd('sync-dup-worker-daemon');
    try {
      const remote = conn.dupFileDescriptorSync(fd, { timeoutMs: 60_000 });
      expect(await conn.call('identities', [remote])).toEqual([identityOf(fd)]);
    } finally {
      closeFd(fd);
      await conn.close();
      await daemonThread.stop();
    }
  });

  test('a worker thread duplicates without awaiting, through the helper', async () => {
    const worker = new Worker(join(packageRoot, 'test', 'fixtures', 'sync-dup-worker.js'), { workerData: { socketPath: suite.socketPath, count: 20 } });
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    const result = await new Promise<{ remote?: number[]; seen?: WireIdentity[]; mine?: WireIdentity; error?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await exited;
    expect(result.error).toBeUndefined();
    expect(result.remote).toHaveLength(20);
    expect(new Set(result.remote).size).toBe(20);
    expect(result.seen).toEqual(Array.from({ length: 20 }, () => result.mine));
  });
});
