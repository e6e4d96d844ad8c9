/**
 * Truncation checked, in the client's own receive path: a message whose fds
 * do not fit (the kernel's MSG_CTRUNC with too small a control buffer, or
 * more fds than the receiver accepts) rejects with TruncatedError, the fds
 * that did arrive are closed (fdsClosed), the data is kept, and the next
 * message arrives normally. (Unchecked: reproduce-unchecked-truncation.)
 */
import { strict as assert } from 'node:assert';

import { makeMemfd, TruncatedError, UnixSocket } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';

const scenario: Scenario = {
  name: 'detect-truncated-receive',
  description: 'a message whose fds do not fit the receiver is a TruncatedError with every arrived fd closed; the next message is fine',
  transports: ['direct'],
  tags: ['truncation', 'conformance'],
  async run(ctx) {
    const sources = Array.from({ length: 3 }, (_, i) => makeMemfd(`trunc-${i}`));
    try {
      // maxFds 0: the control buffer has room for no SCM_RIGHTS payload of
      // its own; a big set overflows it in the kernel (MSG_CTRUNC), a small
      // one overflows what the receiver accepts.
      for (const [maxFds, count] of [
        [0, ctx.rng.int(120, 253)],
        [2, ctx.rng.int(3, 20)],
      ] as const) {
        const [a, b] = UnixSocket.pair('seqpacket', { maxFds });
        try {
          const fds = Array.from({ length: count }, () => ctx.rng.pick(sources));
          await a.send(Buffer.from('too many'), fds);
          const err = await b.receive().then(
            () => undefined,
            (e: unknown) => e,
          );
          assert.ok(err instanceof TruncatedError, `TruncatedError, not ${String(err)}`);
          assert.equal(err.code, 'ERR_FDBRIDGE_TRUNCATED');
          assert.equal(err.what, 'control');
          assert.ok(err.fdsClosed > 0 && err.fdsClosed <= count, `fdsClosed ${err.fdsClosed} of ${count}`);
          assert.equal(err.data.toString(), 'too many');
          ctx.note(`maxFds ${maxFds}, ${count} fds sent: ${err.fdsClosed} arrived and were closed`);
          // The socket still works.
          const ok = sources.slice(0, Math.min(maxFds, 1));
          await a.send(Buffer.from('next'), ok);
          const m = await b.receive();
          assert.equal(m.data.toString(), 'next');
          assert.equal(m.fds.length, ok.length);
          closeAll(m.fds);
        } finally {
          a.close();
          b.close();
        }
      }
    } finally {
      closeAll(sources);
    }
  },
};

export default scenario;
