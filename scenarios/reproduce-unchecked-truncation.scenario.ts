/**
 * Unchecked truncation loses fds (nix#2413, freeunit#264, pytorch#34768): a
 * receiver that never looks at MSG_CTRUNC takes a message whose fds did not
 * fit for a complete one. A faithful port with the kernel alone: the
 * receiver reads each message with read(2), which has no control buffer,
 * so the kernel discards every fd and no flag is ever seen; the message
 * says how many fds it carried, and the check that they arrived must fail.
 * (Nothing leaks: the kernel released them.) fdbridge's receivers report
 * truncation with a typed error: detect-truncated-receive,
 * truncate-batch-at-fd-limit.
 */
import { strict as assert } from 'node:assert';
import { readSync } from 'node:fs';

import { makeMemfd } from '../src';
import { constants, native } from '../src/native';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';

/** The unchecked receiver: the data of one message, and whatever fds it thinks came with it (none). */
function receiveUnchecked(sock: number): { data: Buffer; fds: number[] } {
  const buf = Buffer.alloc(64);
  const n = readSync(sock, buf, 0, buf.length, null);
  return { data: buf.subarray(0, n), fds: [] };
}

const scenario: Scenario = {
  name: 'reproduce-unchecked-truncation',
  description: 'a receiver that ignores MSG_CTRUNC (here: reads with read(2)) silently loses the fds of a message; the check must fail',
  transports: ['direct'],
  expect: 'fail',
  tags: ['known-bug', 'truncation'],
  async run(ctx) {
    const [a, b] = native.socketpair(constants.SOCK_SEQPACKET);
    const sources = Array.from({ length: 3 }, (_, i) => makeMemfd(`unchecked-${i}`));
    try {
      const count = ctx.rng.int(1, 40);
      const fds = Array.from({ length: count }, () => ctx.rng.pick(sources));
      native.sendNow(a, Buffer.from(`fds=${count}`), fds);
      const m = receiveUnchecked(b);
      assert.equal(m.data.toString(), `fds=${count}`, 'the data arrived whole');
      assert.equal(m.fds.length, count, `the message carried ${count} fd(s); the receiver got ${m.fds.length} and was not told`);
    } finally {
      closeAll([a, b, ...sources]);
    }
  },
};

export default scenario;
