/**
 * close() called from within options.onCommandClosed, the hook close()
 * itself waits for (a tidy-up hook that closes its connection): on every
 * transport, at once or after an await, that close() resolves, and so does
 * the close() that ran the hook; the command's process ends cleanly (child,
 * pidfd), the far side ends (remote), and this process's fd table (and the
 * helper daemon's) is as before. Two connections whose hooks close each
 * other close the same way. Such a hook leaves promise hooks off in the
 * process.
 */
import { spawn } from 'node:child_process';
import { setImmediate as nextTurn } from 'node:timers/promises';

import { connect, PROBE_COMMAND, type Connection, type TransportName } from '../../src';
import { openFdTable } from '../../src/fd';
import { distPath } from '../../src/paths';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, helperForSuite, pidExit } from '../util/processes';
import { scaled } from '../util/time-scale';
import { SPAWNED, TRANSPORTS } from '../util/transport-suite';
import { HangGuard } from '../util/wait-for';

const suite = helperForSuite('fdbridge-close-from-hook-');

/**
 * Run by a fresh node (argv: the transport, connect's options as JSON): the
 * async id a promise continuation runs under (0 unless promise hooks are
 * on), before a connection whose onCommandClosed hook awaits and then
 * closes it is opened and closed, and after.
 */
const HOOKED_CLOSE_SCRIPT = `
const { executionAsyncId } = require('node:async_hooks');
const { connect, PROBE_COMMAND } = require(${JSON.stringify(distPath('src/index.js'))});
const [transport, options] = [process.argv[1], JSON.parse(process.argv[2])];
const continuationId = () => new Promise((r) => setImmediate(() => Promise.resolve().then(() => r(executionAsyncId()))));
(async () => {
  const before = await continuationId();
  const conn = await connect(transport, {
    ...options,
    command: PROBE_COMMAND,
    onCommandClosed: async () => {
      await new Promise((r) => setImmediate(r));
      await conn.close();
    },
  });
  await conn.close();
  process.stdout.write(JSON.stringify({ before, after: await continuationId() }));
})();
`;

/** How the hook closes its connection: returning close()'s promise at once, or awaiting it after a turn of the event loop. */
const HOOKS = {
  'returns conn.close()': (conn: () => Connection) => () => conn().close(),
  'awaits conn.close() after an await': (conn: () => Connection) => async () => {
    await nextTurn();
    await conn().close();
  },
};

describe.each([...TRANSPORTS, 'remote' as const])('%s transport', (transport: TransportName) => {
  test.each(Object.keys(HOOKS) as Array<keyof typeof HOOKS>)(
    'onCommandClosed that %s: both close() calls resolve, the command side ends, the fd tables as before',
    async (hookKind) => {
      const guard = new HangGuard(scaled(30_000));
      const here = openFdTable();
      const helperBefore = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
      let inner: Promise<void> | undefined;
      let calls = 0;
      const hook = HOOKS[hookKind](() => conn);
      const conn: Connection = await connect(transport, {
        command: PROBE_COMMAND,
        socketPath: suite.socketPath,
        ...(transport === 'remote' ? { via: LOCAL_REMOTE.via, serve: LOCAL_REMOTE.serve } : {}),
        onCommandClosed: () => {
          calls++;
          inner = hook();
          return inner;
        },
      });
      // The remote server's exit, watched from before close() (its pidfd): close() reaps it.
      const farExit = transport === 'remote' ? pidExit(conn.location.pid) : undefined;
      await guard.within(conn.close(), 'close() whose onCommandClosed hook closes the connection');
      expect(calls).toBe(1);
      await guard.within(inner as Promise<void>, "the hook's own close()");
      expect(conn.closed).toBe(true);
      // Once more after it resolved: the same, and no second hook.
      await guard.within(conn.close(), 'close() again');
      expect(calls).toBe(1);
      if (SPAWNED.has(transport)) {
        expect(await guard.within(exitOf((conn as ChildConnection).child), "the command process's exit")).toEqual({ code: 0, signal: null });
      } else if (farExit) {
        await guard.within(farExit, "the remote server's exit");
      }
      expect(await fdTableSettles(process.pid, here)).toBe('');
      if (helperBefore) expect(await fdTableSettles(suite.helper.pid, helperBefore)).toBe('');
    },
    scaled(60_000),
  );

  test(
    "a hook that awaits and closes its connection leaves promise hooks off in the user's process (every promise would pay for them)",
    async () => {
      const guard = new HangGuard(scaled(30_000));
      const here = openFdTable();
      const helperBefore = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
      const options = transport === 'remote' ? { via: LOCAL_REMOTE.via, serve: LOCAL_REMOTE.serve } : { socketPath: suite.socketPath };
      const child = spawn(process.execPath, ['-e', HOOKED_CLOSE_SCRIPT, transport, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      expect(await guard.within(exitOf(child), 'the node process that closes a connection from its hook')).toEqual({ code: 0, signal: null });
      expect(JSON.parse(out)).toEqual({ before: 0, after: 0 });
      expect(await fdTableSettles(process.pid, here)).toBe('');
      if (helperBefore) expect(await fdTableSettles(suite.helper.pid, helperBefore)).toBe('');
    },
    scaled(60_000),
  );

  test(
    "two connections whose onCommandClosed hooks close each other: close() of one resolves, both close, the fd tables as before",
    async () => {
      const guard = new HangGuard(scaled(30_000));
      const here = openFdTable();
      const helperBefore = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
      const calls = { a: 0, b: 0 };
      const options = {
        command: PROBE_COMMAND,
        socketPath: suite.socketPath,
        ...(transport === 'remote' ? { via: LOCAL_REMOTE.via, serve: LOCAL_REMOTE.serve } : {}),
      };
      const a: Connection = await connect(transport, { ...options, onCommandClosed: () => (calls.a++, b.close()) });
      const b: Connection = await connect(transport, { ...options, onCommandClosed: () => (calls.b++, a.close()) });
      await guard.within(a.close(), "close() of a connection whose hook closes another whose hook closes it");
      expect([a.closed, b.closed, calls]).toEqual([true, true, { a: 1, b: 1 }]);
      for (const conn of SPAWNED.has(transport) ? [a, b] : []) {
        expect(await guard.within(exitOf((conn as ChildConnection).child), "the command process's exit")).toEqual({ code: 0, signal: null });
      }
      expect(await fdTableSettles(process.pid, here)).toBe('');
      if (helperBefore) expect(await fdTableSettles(suite.helper.pid, helperBefore)).toBe('');
    },
    scaled(60_000),
  );
});
