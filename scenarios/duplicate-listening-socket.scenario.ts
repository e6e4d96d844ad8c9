/**
 * A listening socket crosses over and keeps listening there: after the
 * client closes its own copy, a connect() from the client still succeeds
 * because the far side's duplicate holds the listener; once the far side
 * closes it, connect() is refused.
 */
import { strict as assert } from 'node:assert';
import { join } from 'node:path';

import { closeFd, PROBE_COMMAND, SystemError } from '../src';
import { MAX_SOCKET_PATH_BYTES, rawConnect, rawListen } from '../src/testing';
import type { Scenario, ScenarioContext } from '../harness/types';
import { closeAll, closeRemote, dupOneBenchCase, remoteIdentities, wireIdentity } from './support/common';

/** A socket name in the scenario's directory when it fits sun_path, else an abstract one. */
function socketName(ctx: ScenarioContext, label: string): [string, boolean] {
  const path = join(ctx.tmpdir, `${label}.sock`);
  if (Buffer.byteLength(path) <= MAX_SOCKET_PATH_BYTES) return [path, false];
  return [`fdbridge-scenario-${process.pid}-${label}-${ctx.rng.int(0, 1e9)}`, true];
}

const scenario: Scenario = {
  name: 'duplicate-listening-socket',
  description: "a listening socket arrives as the same socket and keeps accepting the client's connections after the client closed its copy",
  tags: ['fd-kind', 'conformance'],
  needs: ['identity', 'every-kind'],
  async run(ctx) {
    const [name, abstract] = socketName(ctx, 'listener');
    const listener = rawListen('stream', name, { abstract, mode: 0o600, backlog: 16 });
    const opened: number[] = [listener];
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      const want = wireIdentity(listener);
      const remote = await conn.dupFileDescriptor(listener);
      closeFd(listener);
      // Closed: its number is free, and the connects below may take it.
      opened.splice(opened.indexOf(listener), 1);
      assert.deepEqual(await remoteIdentities(conn, [remote]), [want]);
      assert.equal(want.type, 'socket');
      // The far side's duplicate is now the only listener: the kernel queues
      // our connections on it.
      const n = ctx.rng.int(1, 4);
      for (let i = 0; i < n; i++) opened.push(rawConnect('stream', name, abstract));
      // The far side closes it: nobody listens any more.
      await closeRemote(conn, [remote]);
      assert.throws(
        () => opened.push(rawConnect('stream', name, abstract)),
        (err: unknown) => err instanceof SystemError && err.code === 'ECONNREFUSED',
      );
    } finally {
      closeAll(opened);
      await conn.close();
    }
  },
  async bench(ctx) {
    const [name, abstract] = socketName(ctx, 'bench');
    const listener = rawListen('stream', name, { abstract, mode: 0o600, backlog: 16 });
    return dupOneBenchCase(ctx, listener, () => closeFd(listener));
  },
};

export default scenario;
