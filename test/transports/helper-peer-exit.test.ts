/**
 * How a helper client reports a daemon that went away with a call pending.
 * The daemon is not the client's child, so there is no exit status to read:
 * the client tells "exited" from "closed the connection" by whether the
 * listener's pid is still there shortly after the connection ended. A
 * daemon of another uid is still there when the kernel says the client may
 * not signal it (EPERM), so a client run as nobody must not take a root
 * daemon that hung up for one that exited.
 *
 * The daemon here is a fake in this process that answers HELLO with READY
 * and closes the connection on the first call; where the pid's liveness is
 * the case under test, process.kill(pid, 0) is answered by a spy.
 */
import fc from 'fast-check';

import { connect, PeerExitedError, PROBE_COMMAND } from '../../src';
import { fakeHelperDaemon, type FakeHelperDaemon } from '../util/fake-helper-daemon';
import { DIST_SRC, isRoot, runAsNobody } from '../util/nobody';

/** A fake daemon: READY to HELLO, then the first call makes it close that connection (the process lives on). */
function hangingUpDaemon(tag: string): FakeHelperDaemon {
  return fakeHelperDaemon(`hangs-up-${tag}`, { hello: 'ready', other: 'hang up' });
}

/** What a call pending when the daemon hung up rejects with. */
async function callWhenItHangsUp(socketPath: string): Promise<unknown> {
  const conn = await connect('helper', { command: PROBE_COMMAND, socketPath });
  expect(conn.transport).toBe('helper');
  try {
    return await conn.call('echo', 'x').then(
      () => 'answered',
      (e: unknown) => e,
    );
  } finally {
    await conn.close();
  }
}

let daemon: ReturnType<typeof hangingUpDaemon>;
beforeAll(() => {
  daemon = hangingUpDaemon('suite');
});
afterAll(() => {
  daemon.close();
});

describe('a helper daemon gone with a call pending', () => {
  test('a daemon that closes the connection and lives on: PeerExitedError says it closed the connection, naming its pid', async () => {
    const err = await callWhenItHangsUp(daemon.socketPath);
    expect(err).toBeInstanceOf(PeerExitedError);
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_PEER_EXITED', transport: 'helper', pid: process.pid, exitCode: null, signal: null });
    expect((err as Error).message).toBe(`echo() failed: the helper daemon (pid ${process.pid}) closed the connection before replying`);
  });

  test('generated: a daemon whose pid is gone by one of the checks after the hang-up (its pid checked by signal 0) exited; one still there closed the connection', async () => {
    const realKill = process.kill.bind(process);
    await fc.assert(
      fc.asyncProperty(fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }), async (aliveChecks) => {
        // The daemon's pid (ours) answers signal 0 `aliveChecks` times, then ESRCH as a process that has exited and been reaped.
        let checks = 0;
        const spy = jest.spyOn(process, 'kill').mockImplementation((pid: number, signal?: string | number) => {
          if (pid !== process.pid || signal !== 0) return realKill(pid, signal);
          if (aliveChecks !== undefined && checks++ >= aliveChecks) throw Object.assign(new Error('kill ESRCH'), { code: 'ESRCH', errno: -3, syscall: 'kill' });
          return true;
        });
        let err: unknown;
        try {
          err = await callWhenItHangsUp(daemon.socketPath);
        } finally {
          spy.mockRestore();
        }
        expect(err).toBeInstanceOf(PeerExitedError);
        const how = aliveChecks === undefined ? 'closed the connection' : 'exited';
        expect((err as Error).message).toBe(`echo() failed: the helper daemon (pid ${process.pid}) ${how} before replying`);
      }),
      { numRuns: 12, examples: [[undefined], [0], [1]] },
    );
  });

  (isRoot ? test : test.skip)('a client of another uid (nobody) whose root daemon hung up: the daemon is still there (EPERM to its signal 0), so it closed the connection, not exited', async () => {
    const p = runAsNobody(`
      const { connect, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
      (async () => {
        const c = await connect('helper', { command: PROBE_COMMAND, socketPath: ${JSON.stringify(daemon.socketPath)} });
        try {
          return await c.call('echo', 'x').then(() => ({ answered: true }), (e) => ({ name: e.name, message: e.message }));
        } finally {
          await c.close();
        }
      })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
    const { result } = await p.line<{ result: Record<string, unknown> }>('result');
    await p.exited();
    expect(result).toEqual({ name: 'PeerExitedError', message: `echo() failed: the helper daemon (pid ${process.pid}) closed the connection before replying` });
  });
});
