/**
 * Hostile or broken clients against a command's side: random bytes, short
 * headers, wrong lengths, oversized frames (beyond MAX_FRAME_BYTES: MSG_TRUNC
 * there), frames before HELLO, a second HELLO, GETFD without pidfd, replies
 * only a command sends, and up to 253 fds nobody asked for. Each must end
 * THAT connection (or be refused by the kernel, SO_PASSRIGHTS: on a pidfd
 * connection, and fds sent to a helper daemon before its READY) with every
 * fd closed over there, proved from here: the fds
 * are copies of a pipe's write end whose read end then reports end-of-file.
 *
 * - helper: raw clients of the run's daemon, while a well-behaved client on
 *   the same daemon keeps duplicating and calling, before, during and after
 *   each bad request; the leak oracle checks the daemon's fd table.
 * - child / pidfd: the child transport's entry, spawned on a socketpair as
 *   the transport does, fed one bad request per process (it exits 1).
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, PROBE_COMMAND, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, wireIdentity } from './support/common';
import { badRequests, connectRaw, refusedBeforeHello, sendBadRequest, spawnCommandSide, type BadRequest } from './support/hostile';

/** One duplication (checked and closed over there) and one call on the good connection. */
async function roundTrip(conn: Connection, source: number, i: number): Promise<void> {
  const [fd] = await conn.dupFileDescriptors([source]);
  assert.deepEqual(await remoteIdentities(conn, [fd as number]), [wireIdentity(source)]);
  await closeRemote(conn, [fd as number]);
  assert.equal(await conn.call('echo', i), i);
}

const scenario: Scenario = {
  name: 'reject-hostile-client',
  description: 'bad requests (garbage, wrong lengths, oversized frames, unrequested fds up to 253, out-of-order frames) end that connection with every fd closed; other clients keep being served',
  transports: ['helper', 'child', 'pidfd'],
  tags: ['fault', 'hostile', 'security'],
  async run(ctx) {
    const pidfd = ctx.transport === 'pidfd';
    const inputs: BadRequest[] = badRequests(ctx.rng, { pidfd });
    const source = makeMemfd('good-client');
    const good = await ctx.connect(PROBE_COMMAND);
    let byKernel = 0;
    try {
      await roundTrip(good, source, -1);
      for (const [i, input] of inputs.entries()) {
        ctx.count('badInputsTried');
        if (ctx.transport === 'helper') {
          const socketPath = ctx.helper?.socketPath;
          if (socketPath === undefined) return ctx.skip('the harness offers no helper socket (ctx.helper)');
          const raw = await connectRaw(socketPath);
          try {
            // The good client is served while the hostile one is mid-way.
            const meanwhile = roundTrip(good, source, i);
            const r = await sendBadRequest(raw, input, { refusesFdsBeforeHello: true });
            if (refusedBeforeHello(input)) {
              assert.equal(r.how, 'kernel', `${input.name}: the kernel refused fds sent before READY`);
              byKernel++;
            } else assert.equal(r.how, 'end', `${input.name}: the daemon ended the connection`);
            await meanwhile;
          } finally {
            raw.close();
          }
        } else {
          const side = spawnCommandSide();
          try {
            const r = await sendBadRequest(side.socket, input, { pidfd });
            if (r.how === 'kernel') {
              byKernel++;
              // Refused before it arrived: the connection is unharmed and ends cleanly.
              side.socket.close();
              assert.equal(await side.exited, 0, `${input.name}: the command side exits cleanly`);
            } else {
              assert.equal(await side.exited, 1, `${input.name}: the command side ended on an error`);
            }
          } catch (err) {
            if (pidfd && /UnsupportedError|pidfd_getfd|ptrace/.test(String(err))) ctx.skip(`pidfd pulls are not allowed here: ${String(err)}`);
            throw err;
          } finally {
            side.socket.close();
            if (side.child.exitCode === null) side.child.kill('SIGKILL');
            await side.exited;
          }
        }
        ctx.count('badInputsRejected');
        await roundTrip(good, source, i);
      }
      ctx.note(
        `${inputs.length} bad requests rejected; of the ${inputs.reduce((n, x) => n + x.fds, 0)} unrequested fds attached none stayed open; ` +
          `${byKernel} refused by the kernel (SO_PASSRIGHTS, EPERM in the sender); the good client served throughout`,
      );
    } finally {
      await good.close();
      closeAll([source]);
    }
  },
};

export default scenario;
