/**
 * How the child transport starts its command's process, seen from outside
 * it: the uid, gid and environment the process runs with (its /proc
 * entries), the typed error of a spawn the system refuses (an environment
 * past execve's limit, this process at its fd limit), a process that dies
 * or hangs before READY, and its exit once the connection closes. Nothing
 * is left behind: no fd in this process, no child process.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, PeerExitedError, PROBE_COMMAND, SystemError, TimeoutError } from '../../src';
import { fdLimit, openFdTable, setFdLimit } from '../../src/fd';
import { MAX_FRAME_BYTES } from '../../src/protocol';
import type { ChildConnection } from '../../src/transports/child';
import { childrenOf, exitOf, fdTableSettles } from '../util/processes';

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0 ? test : test.skip;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-child-spawn-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The environment `pid` was started with. */
function environOf(pid: number): Map<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter((e) => e !== '');
  return new Map(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

/** The real uid and gid of `pid`. */
function idsOf(pid: number): { uid: number; gid: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(/^(\w+):\t(\d+)/m.exec(status.split('\n').find((l) => l.startsWith(`${name}:`)) ?? '')?.[2]);
  return { uid: field('Uid'), gid: field('Gid') };
}

/** What a connect came to: its error, or the connection closed again. */
async function outcome(options: Parameters<typeof connect>[1]): Promise<unknown> {
  try {
    const conn = await connect('child', options);
    await conn.close();
    return 'connected';
  } catch (e) {
    return e;
  }
}

test("without options.child the process runs as this process's user with its environment, and exits with 0 once closed", async () => {
  const before = openFdTable();
  const conn = (await connect('child', { command: PROBE_COMMAND })) as ChildConnection;
  const pid = conn.location.pid;
  expect(await conn.call('echo', 'up')).toBe('up');
  expect(idsOf(pid)).toEqual({ uid: process.getuid?.(), gid: process.getgid?.() });
  const env = environOf(pid);
  for (const [name, value] of Object.entries(process.env)) expect([name, env.get(name)]).toEqual([name, value]);
  await conn.close();
  expect(await exitOf(conn.child)).toEqual({ code: 0, signal: null });
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("a program the command's process runs sees only its own stdio (the connection, fd 3 in the process, is close-on-exec), and the connection and the command name the child transport", async () => {
  const before = openFdTable();
  const conn = await connect('child', { command: PROBE_COMMAND });
  try {
    // What ls lists run from here: 0, 1 and 2, what this process inherited without close-on-exec (passed on to the
    // child process too), and the directory it reads at the lowest number free then; an inherited connection moves it.
    const own = spawnSync('/bin/ls', ['/proc/self/fd'], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number);
    expect(await conn.call<number[]>('fdsSeenByExec')).toEqual(own);
    expect(conn.transport).toBe('child');
    expect(await conn.call('where')).toMatchObject({ transport: 'child', pid: conn.location.pid });
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('generated: a call and its reply past 64 KiB, up to the largest frame, reach the command and come back whole', async () => {
  const before = openFdTable();
  const conn = await connect('child', { command: PROBE_COMMAND });
  try {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 64 * 1024, max: MAX_FRAME_BYTES - 1024 }), fc.constantFrom('a', 'x', '0'), async (length, c) => {
        const text = c.repeat(length);
        expect(await conn.call('echo', text)).toBe(text);
      }),
      { numRuns: 5 },
    );
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('generated: options.child.env sets and removes variables on top of this environment', async () => {
  const before = openFdTable();
  process.env['FDBRIDGE_SPAWN_KEPT'] = 'kept';
  process.env['FDBRIDGE_SPAWN_GONE'] = 'gone';
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(
          fc
            .stringMatching(/^[A-Z][A-Z0-9_]{0,8}$/)
            .map((s) => `FDBRIDGE_SPAWN_${s}`)
            .filter((name) => name !== 'FDBRIDGE_SPAWN_KEPT' && name !== 'FDBRIDGE_SPAWN_GONE'),
          fc.option(fc.string({ maxLength: 20 }).filter((s) => !s.includes('\0')), { nil: undefined }),
          { maxKeys: 4 },
        ),
        async (extra) => {
          const env = { ...extra, FDBRIDGE_SPAWN_GONE: undefined };
          const conn = (await connect('child', { command: PROBE_COMMAND, child: { env } })) as ChildConnection;
          try {
            const seen = environOf(conn.location.pid);
            for (const [name, value] of Object.entries(env)) expect([name, seen.get(name)]).toEqual([name, value]);
            // The rest is this process's environment.
            expect(seen.get('FDBRIDGE_SPAWN_KEPT')).toBe('kept');
            expect(seen.get('PATH')).toBe(process.env['PATH']);
          } finally {
            await conn.close();
          }
        },
      ),
      { numRuns: 6 },
    );
  } finally {
    delete process.env['FDBRIDGE_SPAWN_KEPT'];
    delete process.env['FDBRIDGE_SPAWN_GONE'];
  }
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

asRoot('options.child.uid and gid: the process runs with those given, each alone or both', async () => {
  const before = openFdTable();
  for (const child of [{ uid: NOBODY, gid: NOBODY }, { gid: NOBODY }, { uid: 0, gid: NOBODY }, { uid: 0 }]) {
    const conn = await connect('child', { command: PROBE_COMMAND, child });
    try {
      expect(await conn.call('echo', 1)).toBe(1);
      expect(idsOf(conn.location.pid)).toEqual({ uid: child.uid ?? 0, gid: child.gid ?? 0 });
    } finally {
      await conn.close();
    }
  }
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test('an environment past what execve takes is a SystemError E2BIG naming spawn, nothing left behind', async () => {
  const before = openFdTable();
  // One string past MAX_ARG_STRLEN (32 pages).
  const err = await outcome({ command: PROBE_COMMAND, child: { env: { FDBRIDGE_SPAWN_BIG: 'x'.repeat(33 * 4096) } } });
  expect(err).toBeInstanceOf(SystemError);
  expect(err).toMatchObject({ code: 'E2BIG', syscall: 'spawn' });
  expect((err as Error).message).toMatch(/^connect: the child process could not be started: spawn failed: E2BIG/);
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('a send queue limit that is no byte count: the RangeError naming the option, nothing made', async () => {
  const before = openFdTable();
  for (const sendQueueLimit of [-1, 1.5, Number.NaN]) {
    const err = await outcome({ command: PROBE_COMMAND, sendQueueLimit });
    expect(err).toBeInstanceOf(RangeError);
    expect((err as Error).message).toBe(`connect: options.sendQueueLimit must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, not ${sendQueueLimit}`);
    expect(openFdTable()).toEqual(before);
  }
  expect(childrenOf(process.pid)).toEqual([]);
});

test('at its fd limit, this process gets a SystemError EMFILE from the socketpair or, one fd higher, from spawn; nothing left behind', async () => {
  const before = openFdTable();
  const [soft, hard] = fdLimit();
  const seen: string[] = [];
  try {
    for (let limit = before.size; seen.at(-1) !== 'connected'; limit++) {
      setFdLimit(limit, hard);
      let err: unknown;
      try {
        err = await outcome({ command: PROBE_COMMAND });
      } finally {
        setFdLimit(soft, hard);
      }
      if (err === 'connected') {
        seen.push('connected');
        break;
      }
      expect(err).toBeInstanceOf(SystemError);
      expect(err).toMatchObject({ code: 'EMFILE' });
      const syscall = (err as SystemError).syscall as string;
      if (syscall === 'spawn') expect((err as Error).message).toMatch(/^connect: the child process could not be started: spawn failed: EMFILE/);
      if (seen.at(-1) !== syscall) seen.push(syscall);
      expect(childrenOf(process.pid)).toEqual([]);
      expect(await fdTableSettles(process.pid, before)).toBe('');
    }
  } finally {
    setFdLimit(soft, hard);
  }
  expect(seen).toEqual(['socketpair', 'spawn', 'connected']);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test('generated: a process that exits or is killed before READY fails connect with PeerExitedError saying how it ended', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.integer({ min: 1, max: 255 }).map((code) => ({ code })), fc.constantFrom<NodeJS.Signals>('SIGTERM', 'SIGKILL', 'SIGHUP').map((signal) => ({ signal }))), async (end) => {
      const module = join(dir, `ends-${'code' in end ? end.code : end.signal}.js`);
      writeFileSync(module, 'code' in end ? `process.exit(${end.code});\n` : `process.kill(process.pid, '${end.signal}');\nAtomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);\n`);
      const err = await outcome({ command: { module, export: 'Nothing' } });
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport: 'child', exitCode: 'code' in end ? end.code : null, signal: 'signal' in end ? end.signal : null });
      expect((err as PeerExitedError).pid).toBeGreaterThan(0);
      expect(childrenOf(process.pid)).toEqual([]);
    }),
    { numRuns: 6 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test('a process that never answers HELLO: TimeoutError naming it once options.timeoutMs has passed, and the process is killed', async () => {
  const before = openFdTable();
  const module = join(dir, 'hangs-on-load.js');
  writeFileSync(module, 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);\n');
  const err = await outcome({ command: { module, export: 'Nothing' }, timeoutMs: 300 });
  expect(err).toBeInstanceOf(TimeoutError);
  expect((err as Error).message).toMatch(/^connect: the child process \(pid [1-9]\d*\) did not answer within 300 ms \(options\.timeoutMs\)$/);
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
