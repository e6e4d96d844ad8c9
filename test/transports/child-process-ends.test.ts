/**
 * A child connection's command process ending while a call waits for its
 * reply, as the caller sees it: the call rejects with PeerExitedError saying
 * which process it was and how it ended; and where the program closed the
 * connection's socket behind fdbridge's back (the process reads end of file
 * and exits), the waiting call rejects with the ClosedError that names the
 * socket once the process's exit is seen, not only at close(). A process
 * that does not exit once its connection is closed is killed by close(),
 * which resolves once it is reaped. No fd is left behind in this process,
 * no child process.
 */
import { closeSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, PeerExitedError, PROBE_COMMAND } from '../../src';
import { openFdTable } from '../../src/fd';
import type { ChildConnection } from '../../src/transports/child';
import { childrenOf, exitOf, fdTableSettles } from '../util/processes';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-child-process-ends-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('generated: the process exits or is killed while a call waits: PeerExitedError naming the child process, its pid and how it ended', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.integer({ min: 0, max: 255 }).map((code) => ({ code })), fc.constantFrom<NodeJS.Signals>('SIGTERM', 'SIGKILL', 'SIGHUP').map((signal) => ({ signal }))), async (end) => {
      const conn = (await connect('child', { command: PROBE_COMMAND })) as ChildConnection;
      try {
        const waiting = conn.call('hang').catch((e: unknown) => e);
        if ('code' in end) void conn.call('exit', end.code).catch(() => undefined);
        else conn.child.kill(end.signal);
        const err = await waiting;
        expect(err).toBeInstanceOf(PeerExitedError);
        expect(err).toMatchObject({ transport: 'child', pid: conn.location.pid, exitCode: 'code' in end ? end.code : null, signal: 'signal' in end ? end.signal : null });
      } finally {
        await conn.close();
      }
      expect(await exitOf(conn.child)).toEqual({ code: 'code' in end ? end.code : null, signal: 'signal' in end ? end.signal : null });
      expect(childrenOf(process.pid)).toEqual([]);
    }),
    { numRuns: 5 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test("the connection's socket closed behind fdbridge's back: the process exits, and the call waiting for its reply rejects with ClosedError naming the socket", async () => {
  const before = openFdTable();
  const conn = (await connect('child', { command: PROBE_COMMAND })) as ChildConnection;
  const sockets = [...openFdTable()].filter(([fd, target]) => target.startsWith('socket:') && before.get(fd) !== target).map(([fd]) => fd);
  expect(sockets.length).toBe(1);
  const socket = sockets[0] as number;
  const waiting = conn.call('hang').catch((e: unknown) => e);
  closeSync(socket);
  // The process reads end of file and exits (0: its client went away); the call is failed then, close() not called yet.
  expect(await exitOf(conn.child)).toEqual({ code: 0, signal: null });
  const err = await waiting;
  expect(err).toBeInstanceOf(ClosedError);
  expect((err as Error).message).toContain(`fd ${socket}`);
  await conn.close();
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('a process whose command never returns from close(): close() kills it and resolves once it is reaped', async () => {
  const before = openFdTable();
  const module = join(dir, 'stuck-in-close.js');
  writeFileSync(module, 'class Stuck { close() { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); } }\nmodule.exports = { Stuck };\n');
  const conn = (await connect('child', { command: { module, export: 'Stuck' } })) as ChildConnection;
  await conn.close();
  expect({ code: conn.child.exitCode, signal: conn.child.signalCode }).toEqual({ code: null, signal: 'SIGKILL' });
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);

test('a command that leaves a timer running: its process exits with 0 once the connection is closed, not killed', async () => {
  const before = openFdTable();
  const module = join(dir, 'leaves-a-timer.js');
  writeFileSync(module, 'class Lingers { constructor() { setInterval(() => undefined, 1000); } }\nmodule.exports = { Lingers };\n');
  const conn = (await connect('child', { command: { module, export: 'Lingers' } })) as ChildConnection;
  await conn.close();
  expect({ code: conn.child.exitCode, signal: conn.child.signalCode }).toEqual({ code: 0, signal: null });
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);
