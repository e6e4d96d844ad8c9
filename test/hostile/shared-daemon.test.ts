/**
 * A helper daemon shared between users, attacked by one of them (nobody,
 * 65534; these tests run as root, so they are skipped when not): what one
 * allowed user learns about the others through the daemon, and what it can
 * make the daemon write where the daemon's own lines go.
 */
import { execFile } from 'node:child_process';

import fc from 'fast-check';

import { closeFd, connect, HelperDaemon, LOG_COMMAND, makeMemfd, type Connection } from '../../src';
import type { HelperStatus } from '../../src/transports/helper-daemon';
import { DIST_SRC, isRoot, NOBODY, runAsNobody } from '../util/nobody';
import { CLI } from '../util/processes';

const describeRoot = isRoot ? describe : describe.skip;
const ME = process.getuid?.() ?? 0;

/** Runs `body` as nobody with `src`, `connect` and `socketPath` in scope (the daemon is root's: trusted by default); resolves with what it returned, or { error, message }. */
function asNobody(socketPath: string, body: string): Promise<Record<string, unknown>> {
  const p = runAsNobody(`
    const src = require(${JSON.stringify(DIST_SRC)});
    const { connect } = src;
    const socketPath = ${JSON.stringify(socketPath)};
    (async () => { ${body} })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
  return p.line<{ result: Record<string, unknown> }>('result').then(async (r) => (await p.exited(), r.result));
}

describeRoot('status on a shared daemon: another uid sees its own clients and the totals only', () => {
  test('for any number of the owner\'s clients and fds, nobody\'s status lists none of them but counts them all; the owner sees everyone', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 3 }), async (rootClients, fdsEach) => {
        const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-privacy-${process.pid}`, allowUids: [NOBODY] });
        const conns: Connection[] = [];
        const memfd = makeMemfd('held');
        try {
          for (let i = 0; i < rootClients; i++) {
            const c = await connect('helper', { command: LOG_COMMAND, socketPath: daemon.socketPath });
            conns.push(c);
            for (let j = 0; j < fdsEach; j++) await c.dupFileDescriptor(memfd);
          }
          // nobody: one log connection holding one fd, and the status connection.
          const seen = (await asNobody(daemon.socketPath, `
            const fd = src.makeMemfd('mine');
            const mine = await connect('helper', { command: { name: 'log' }, socketPath });
            await mine.dupFileDescriptor(fd);
            const st = await connect('helper', { command: { name: 'status' }, socketPath });
            const s = await st.call('status');
            await st.close(); await mine.close(); src.closeFd(fd);
            return { status: s, pid: process.pid };`)) as { status: HelperStatus; pid: number };
          const s = seen.status;
          expect(s).toMatchObject({ onlyUid: NOBODY, fdsHeld: rootClients * fdsEach + 1 });
          expect(s.stats.active).toBe(rootClients + 2);
          // Its own two connections, and nothing of root's: no pid, no uid.
          expect(s.clients).toHaveLength(2);
          for (const c of s.clients) expect(c).toMatchObject({ uid: NOBODY, pid: seen.pid });
          expect(s.uids).toEqual([{ uid: NOBODY, connections: 2, fdsHeld: 1, fdsClosing: 0 }]);
          expect(JSON.stringify(s.clients)).not.toContain(`"pid":${process.pid}`);

          // The owner, through the same command, sees every client and no filter.
          const st = await connect('helper', { command: { name: 'status' }, socketPath: daemon.socketPath });
          try {
            const mine = await st.call<HelperStatus>('status');
            expect(mine.onlyUid).toBeUndefined();
            expect(mine.clients).toHaveLength(rootClients + 1);
            expect(mine.clients.every((c) => c.uid === ME && c.pid === process.pid)).toBe(true);
            expect(mine.uids).toEqual([{ uid: ME, connections: rootClients + 1, fdsHeld: rootClients * fdsEach, fdsClosing: 0 }]);
          } finally {
            await st.close();
          }
        } finally {
          for (const c of conns) await c.close();
          closeFd(memfd);
          await daemon.close();
        }
      }),
      { numRuns: 4 },
    );
  });

  test('`fdbridge helper --status` run by nobody prints the totals and its own connection, never the owner\'s pid or uid', async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-status-cli-${process.pid}`, allowUids: [NOBODY] });
    const owner = await connect('helper', { command: LOG_COMMAND, socketPath: daemon.socketPath });
    try {
      // Asynchronously: the daemon answering it runs on this process's loop.
      const run = await new Promise<{ status: number | string | null | undefined; stdout: string; stderr: string }>((resolve) => {
        execFile('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, CLI, 'helper', '--status', '--socket', daemon.socketPath], (err, stdout, stderr) =>
          resolve({ status: err ? err.code : 0, stdout, stderr }),
        );
      });
      expect(run).toMatchObject({ status: 0 });
      expect(run.stdout).toMatch(/clients: 2 now/);
      expect(run.stdout).toMatch(/the clients of uid 65534 only/);
      expect(run.stdout).toMatch(new RegExp(`uid ${NOBODY}: 1 client`));
      expect(run.stdout).not.toMatch(new RegExp(`pid ${process.pid} uid`));
      expect(run.stdout).not.toMatch(new RegExp(`uid ${ME}\\b`));
    } finally {
      await owner.close();
      await daemon.close();
    }
  });
});
