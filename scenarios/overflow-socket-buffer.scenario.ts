/**
 * Requests made far faster than the command's side reads them, past the
 * socket buffer: each settles exactly once with its own result, in the order
 * made, and the connection stays usable. Where requests travel over a socket
 * (child, helper, pidfd) a caller that outruns the command beyond the send
 * queue's bound gets QueueFullError for the excess, and nothing of it is
 * sent.
 */
import { strict as assert } from 'node:assert';

import { closeFd, makeEventfd, makeMemfd, makePipe, PROBE_COMMAND, QueueFullError, type Connection } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll, closeRemote, remoteIdentities, settleInOrder, wireIdentity } from './support/common';

function assertInOrder(order: readonly number[], what: string): void {
  order.forEach((index, i) => assert.equal(index, i, `${what}: request ${index} settled in place ${i}`));
}

function values<T>(results: Array<PromiseSettledResult<T>>, what: string): T[] {
  return results.map((r, i) => {
    if (r.status === 'rejected') throw new Error(`${what}: request ${i} failed: ${String(r.reason)}`, { cause: r.reason });
    return r.value;
  });
}

const scenario: Scenario = {
  name: 'overflow-socket-buffer',
  description:
    'bursts of 5,000 calls, 1,000 batch duplications and large calls to a busy command each settle once, in order, with their own result; past the send queue bound the excess gets QueueFullError and the connection lives on',
  tags: ['concurrency', 'backpressure'],
  needs: ['every-kind'],
  async run(ctx) {
    const [r, w] = makePipe();
    const sources = [r, w, makeEventfd(), ...Array.from({ length: 5 }, (_, i) => makeMemfd(`overflow-${i}`))];
    const conn = await ctx.connect(PROBE_COMMAND);
    try {
      // 5,000 calls at once, with seeded payloads of 0..2,000 bytes.
      const sent = Array.from({ length: 5000 }, (_, i) => `${i}:${'.'.repeat(ctx.rng.int(0, 2000))}`);
      const calls = await settleInOrder(sent.map((v) => conn.call<string>('echo', v)));
      assert.deepEqual(values(calls.results, 'echo burst'), sent);
      assertInOrder(calls.order, 'echo burst');

      // 1,000 batch duplications of one fd each, all in flight at once.
      const picks = Array.from({ length: 1000 }, () => ctx.rng.pick(sources));
      const dups = await settleInOrder(picks.map((fd) => conn.dupFileDescriptors([fd])));
      const remote = values(dups.results, 'dupFileDescriptors burst').flat();
      assertInOrder(dups.order, 'dupFileDescriptors burst');
      assert.equal(new Set(remote).size, 1000, 'every duplicate is distinct');
      assert.deepEqual(await remoteIdentities(conn, remote), picks.map(wireIdentity));
      await closeRemote(conn, remote);

      // A dozen large calls while the command is busy and reads nothing.
      const large = Array.from({ length: 12 }, (_, i) => String.fromCharCode(65 + i).repeat(ctx.rng.int(100_000, 180_000)));
      const busy = await settleInOrder<unknown>([conn.call('block', 200), ...large.map((v) => conn.call<string>('echo', v))]);
      assert.deepEqual(values(busy.results, 'large calls'), [200, ...large]);
      assertInOrder(busy.order, 'large calls');
      assert.equal(await conn.call('echo', 'still usable'), 'still usable');
      ctx.note(`5,000 calls, 1,000 duplications and 12 large calls in flight at once on one ${ctx.transport} connection`);

      if (ctx.transport === 'child' || ctx.transport === 'helper' || ctx.transport === 'pidfd') {
        await pastTheBound(await ctx.connect(PROBE_COMMAND, { sendQueueLimit: 32 * 1024 }), sources, (m) => ctx.note(m));
      }
    } finally {
      closeAll(sources);
      await conn.close();
    }
  },
};

/** A burst to a blocked command beyond a small bound: a prefix is served, the rest refused, nothing lost. */
async function pastTheBound(conn: Connection, sources: readonly number[], note: (m: string) => void): Promise<void> {
  const fd = makeMemfd('bound');
  try {
    const blocked = conn.call('block', 300);
    const burst = await settleInOrder<unknown>(
      Array.from({ length: 2000 }, (_, i) => (i % 2 ? conn.call('echo', i) : conn.dupFileDescriptors([fd]).then(() => i))),
    );
    await blocked;
    const firstRefused = burst.results.findIndex((r) => r.status === 'rejected');
    assert.ok(firstRefused > 0, 'the queue took a prefix of the burst before it was full');
    burst.results.slice(0, firstRefused).forEach((r, i) => assert.deepEqual(r, { status: 'fulfilled', value: i }));
    for (const r of burst.results.slice(firstRefused)) {
      assert.equal(r.status, 'rejected');
      const err = (r as PromiseRejectedResult).reason as unknown;
      assert.ok(err instanceof QueueFullError, `the excess fails with QueueFullError, not ${String(err)}`);
      assert.equal(err.code, 'ERR_FDBRIDGE_QUEUE_FULL');
    }
    // Nothing refused reached the command: the next replies are their own.
    const after = await conn.dupFileDescriptors([sources[0] as number]);
    assert.deepEqual(await remoteIdentities(conn, after), [wireIdentity(sources[0] as number)]);
    note(`past a 32 KiB bound: ${firstRefused} of 2,000 requests served, ${2000 - firstRefused} refused with QueueFullError`);
  } finally {
    closeFd(fd);
    await conn.close();
  }
}

export default scenario;
