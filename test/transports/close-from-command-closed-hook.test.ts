/**
 * close() called from within options.onCommandClosed, the hook close()
 * itself waits for (a tidy-up hook that closes its connection): on every
 * transport, at once or after an await, that close() resolves, and so does
 * the close() that ran the hook; the command's process ends cleanly (child,
 * pidfd), the far side ends (remote), and this process's fd table (and the
 * helper daemon's) is as before. Two connections whose hooks close each
 * other close the same way.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';

import { connect, PROBE_COMMAND, type Connection, type TransportName } from '../../src';
import { openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, helperForSuite, pidExit } from '../util/processes';
import { scaled } from '../util/time-scale';
import { SPAWNED, TRANSPORTS } from '../util/transport-suite';
import { HangGuard } from '../util/wait-for';

const suite = helperForSuite('fdbridge-close-from-hook-');

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
