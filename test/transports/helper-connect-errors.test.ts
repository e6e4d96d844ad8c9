/**
 * What connect('helper') says when it reaches no daemon: where nothing
 * listens (no file, a socket file left by a dead daemon, a file that is not
 * a socket, an abstract name nobody holds) the error names the path and how
 * to start a daemon there, keeping the kernel's error as its cause; any
 * other failure (a daemon is there but this user may not reach it) is
 * reported as it is, never as a daemon to start.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, PROBE_COMMAND, SystemError } from '../../src';
import { rawConnect, rawListen } from '../../src/testing';
import { DIST_SRC, isRoot, runAsNobody } from '../util/nobody';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-connect-errors-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const NOTHING_LISTENS: Array<[string, () => string, string]> = [
  ['no file at the path', () => join(dir, 'missing.sock'), 'ENOENT'],
  [
    'a socket file left by a dead daemon (bound, no longer listening)',
    () => {
      const path = join(dir, 'stale.sock');
      closeFd(rawListen('seqpacket', path, { mode: 0o600, backlog: 1 }));
      return path;
    },
    'ECONNREFUSED',
  ],
  [
    'a regular file, not a socket',
    () => {
      const path = join(dir, 'plain-file');
      writeFileSync(path, 'not a socket');
      return path;
    },
    'ECONNREFUSED',
  ],
  ['an abstract name nobody holds', () => `@fdbridge-nobody-holds-${process.pid}`, 'ECONNREFUSED'],
];

describe("connect('helper') that reaches no daemon", () => {
  test.each(NOTHING_LISTENS)('%s: a SystemError of connect that names the path and the way out, the kernel error its cause', async (_what, at, code) => {
    const socketPath = at();
    const err = await connect('helper', { command: PROBE_COMMAND, socketPath }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code, syscall: 'connect' });
    expect((err as Error).message).toBe(`connect failed: no helper daemon is listening at ${socketPath} (${code}); start one with \`npx fdbridge helper --socket ${socketPath}\``);
    const { cause } = err as Error;
    expect(cause).toBeInstanceOf(SystemError);
    expect(cause).toMatchObject({ code, syscall: 'connect', errno: (err as SystemError).errno });
  });

  test('a path through a regular file (ENOTDIR) is reported as it is, not as a daemon to start', async () => {
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'not a directory');
    const err = await connect('helper', { command: PROBE_COMMAND, socketPath: join(file, 'helper.sock') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code: 'ENOTDIR', syscall: 'connect' });
    expect((err as Error).message).not.toMatch(/no helper daemon|npx fdbridge helper/);
  });

  (isRoot ? test : test.skip)("a client of another uid (nobody) at a root daemon's 0600 socket: EACCES as it is, not told to start a daemon there", async () => {
    chmodSync(dir, 0o755); // nobody may reach the socket file, not connect to it
    const daemon = HelperDaemon.start({ diagnostics: true, socketPath: join(dir, 'root.sock') });
    try {
      const p = runAsNobody(`
        const { connect, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
        connect('helper', { command: PROBE_COMMAND, socketPath: ${JSON.stringify(daemon.socketPath)} }).then(
          (c) => c.close().then(() => ({ connected: true })),
          (e) => ({ code: e.code, syscall: e.syscall, message: e.message }),
        ).then((r) => console.log(JSON.stringify({ result: r })));`);
      const { result } = await p.line<{ result: Record<string, unknown> }>('result');
      await p.exited();
      expect(result).toMatchObject({ code: 'EACCES', syscall: 'connect' });
      expect(result['message']).not.toMatch(/no helper daemon|npx fdbridge helper/);
      expect(daemon.stats.connections + daemon.stats.refused).toBe(0);
    } finally {
      await daemon.close();
    }
  });
});

describe("connect('helper') to a listener whose backlog stays full", () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  test('generated: connecting is tried again until options.timeoutMs has passed, then fails with EAGAIN, not later (fake clock)', async () => {
    const name = `fdbridge-full-backlog-${process.pid}`;
    const listening = rawListen('seqpacket', name, { abstract: true, backlog: 0 });
    const queued: number[] = [];
    try {
      // Connections nobody accepts until the kernel refuses more (EAGAIN).
      for (;;) {
        try {
          queued.push(rawConnect('seqpacket', name, true));
        } catch (err) {
          expect(err).toMatchObject({ code: 'EAGAIN' });
          break;
        }
      }
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 2000 }), async (timeoutMs) => {
          // Date and setTimeout fake (the retries' clock and their waits); the deadline's monotonic clock real.
          jest.useFakeTimers({ doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate'] });
          try {
            let settled: unknown;
            const attempt = connect('helper', { command: PROBE_COMMAND, socketPath: `@${name}`, timeoutMs }).then(
              () => (settled = 'connected'),
              (e: unknown) => (settled = e),
            );
            await jest.advanceTimersByTimeAsync(timeoutMs + 100);
            expect(settled).toBeInstanceOf(SystemError);
            expect(settled).toMatchObject({ code: 'EAGAIN', syscall: 'connect' });
            // A connect still trying (this check failed) is let run out.
            await jest.advanceTimersByTimeAsync(60_000);
            await attempt;
          } finally {
            jest.useRealTimers();
          }
        }),
        { numRuns: 10, examples: [[1], [2000]] },
      );
    } finally {
      for (const fd of queued) closeFd(fd);
      closeFd(listening);
    }
  });
});
