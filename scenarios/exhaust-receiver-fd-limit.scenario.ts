/**
 * Fault: the command's process is at its fd limit with not one slot free
 * (RLIMIT_NOFILE lowered to its lowest free fd number), and duplications
 * arrive: one alone, a burst folded into one frame, a 600-fd batch of three
 * frames. Each fails with SystemError EMFILE, as dup(2) does where the
 * command shares this process: whether the fds travel over the socket
 * (child, helper: the kernel's MSG_CTRUNC, every fd that did arrive closed
 * there) or the far side pulls them (pidfd_getfd). Nothing is left on
 * either side, and once the limit is back the same connection works.
 *
 * helper: a daemon of the scenario's own (the run's shared daemon is never
 * put at its limit), and while it is there a second client connects: the
 * daemon cannot accept it (EMFILE), retries, and serves it once the first
 * client has restored the limit. (truncate-batch-at-fd-limit, in the
 * default profile, covers a batch over a limit with a few slots left.)
 */
import { strict as assert } from 'node:assert';

import { PROBE_COMMAND, ProcessFdSnapshot, SystemError, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteFdTable, remoteIdentities, sleep, wireIdentity } from './support/common';
import { ScenarioDaemon } from './support/daemon';
import { assertFdTableBack, faultSources } from './support/faults';

/** The lowest fd number not in `open`: as RLIMIT_NOFILE, it leaves no slot free (open fds above it stay valid). */
function lowestFree(open: Iterable<number>): number {
  const used = new Set(open);
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

const scenario: Scenario = {
  name: 'exhaust-receiver-fd-limit',
  description:
    'duplications to a command process with no fd slot free fail with SystemError EMFILE on every transport, leave nothing behind, and the connection works once the limit is back',
  transports: ['child', 'pidfd', 'helper'],
  tags: ['fault', 'truncation'],
  async run(ctx) {
    const sources = faultSources();
    let daemon: ScenarioDaemon | undefined;
    const opened: Connection[] = [];
    try {
      if (ctx.transport === 'helper') daemon = await ScenarioDaemon.start(ctx);
      // The daemon's table while it serves nobody: where it must come back to.
      const daemonBaseline = daemon ? new ProcessFdSnapshot(daemon.pid, 'scenario-helper') : undefined;
      const connect = async (): Promise<Connection> => {
        const c = await ctx.connect(PROBE_COMMAND, daemon ? { socketPath: daemon.socketPath } : {});
        opened.push(c);
        return c;
      };
      const clientBaseline = new ProcessFdSnapshot(process.pid, 'client');
      const conn = await connect();
      const expected = 'EMFILE';
      const isTyped = (err: unknown): boolean => err instanceof SystemError && err.code === expected;
      const before = await remoteFdTable(conn);
      const [soft] = await conn.call<[number, number]>('fdLimit');
      const limit = lowestFree(before.keys());
      let second: Promise<Connection> | undefined;
      let phases = 0;
      await conn.call('setFdLimit', limit);
      try {
        // One duplication alone.
        const one = await conn.dupFileDescriptor(ctx.rng.pick(sources)).then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(isTyped(one), `a single duplication: SystemError ${expected}, not ${String(one)}`);
        phases++;
        // A burst made in one tick (folded into one frame behind the first).
        const burst = await Promise.allSettled(Array.from({ length: ctx.rng.int(2, 60) }, () => conn.dupFileDescriptor(ctx.rng.pick(sources))));
        for (const s of burst) assert.ok(s.status === 'rejected' && isTyped(s.reason), `a folded duplication: SystemError ${expected}`);
        phases++;
        // A batch of three frames: all or nothing.
        const batch = await conn.dupFileDescriptors(Array.from({ length: 600 }, () => ctx.rng.pick(sources))).then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(isTyped(batch), `a 600-fd batch: SystemError ${expected}, not ${String(batch)}`);
        phases++;
        if (daemon) {
          // A new client while the daemon cannot accept: it waits, unserved.
          second = connect();
          second.catch(() => undefined);
          await sleep(300);
          let served = false;
          void second.then(() => (served = true));
          await Promise.resolve();
          assert.equal(served, false, 'a daemon with no fd free has not accepted the new client');
        }
      } finally {
        await conn.call('setFdLimit', soft);
      }
      ctx.count('faultsInjected', phases + (second ? 1 : 0));
      assert.equal((await conn.call<[number, number]>('fdLimit'))[0], soft, 'the limit is back');
      if (second) {
        // Accepted on the daemon's next try, now that an fd is free.
        const late = await second;
        assert.equal(await late.call('echo', 'served'), 'served');
        await late.close();
      }
      // A helper daemon closes a finished connection's socket on its closer
      // thread (its close drops whatever the client left unread, which may
      // block): wait for it (the row's time limit bounds the wait).
      let after = await remoteFdTable(conn);
      while (after.size !== before.size) {
        await sleep(20);
        after = await remoteFdTable(conn);
      }
      assert.deepEqual([...after].sort(), [...before].sort(), 'the far side holds nothing more than before');
      // The same connection still works.
      const again = await conn.dupFileDescriptors([sources[0] as number, sources[1] as number]);
      assert.deepEqual(await remoteIdentities(conn, again), [wireIdentity(sources[0] as number), wireIdentity(sources[1] as number)]);
      await closeRemote(conn, again);
      await conn.close();
      await assertFdTableBack(clientBaseline, 'client');
      if (daemonBaseline) await assertFdTableBack(daemonBaseline, 'scenario helper');
      ctx.count('faultsSurvived', phases + (second ? 1 : 0));
      ctx.note(`RLIMIT_NOFILE ${limit} (no slot free), then back to ${soft}: ${phases} typed ${expected} failures${second ? ', a client accepted once the limit was back' : ''}`);
    } finally {
      for (const c of opened) await c.close();
      closeAll(sources);
      await daemon?.stop();
    }
  },
};

export default scenario;
