/**
 * Unchecked truncation loses fds (nix#2413, freeunit#264, pytorch#34768): a
 * receiver that never looks at MSG_CTRUNC takes a message whose fds did not
 * fit for a complete one. fdbridge sends a message with 3..40 fds to a
 * raw-API peer whose control buffer holds two (CMSG_SPACE(sizeof(int)) is 24
 * bytes on 64-bit) and which ignores msg_flags: the kernel closes the rest,
 * the peer believes what it got, and the check that every fd arrived fails.
 * fdbridge's receivers report truncation with a typed error:
 * detect-truncated-receive, truncate-batch-at-fd-limit.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { exchangeWithRawPeer } from './support/raw-peer';

/** The unchecked receiver: recvmsg with room for one int's CMSG_SPACE, msg_flags never looked at (only reported). */
const PEER = `
msg, ancdata, flags, addr = sock.recvmsg(64, socket.CMSG_SPACE(4))
fds = scm_rights(ancdata)
for fd in fds:
    os.close(fd)
print(json.dumps({'data': msg.decode(), 'fds': len(fds), 'ctrunc': bool(flags & socket.MSG_CTRUNC)}))
`;

const scenario: Scenario = {
  name: 'reproduce-unchecked-truncation',
  description: 'a receiver that ignores MSG_CTRUNC silently loses fds that fdbridge sent; the check that they all arrived fails',
  transports: ['direct'],
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'fds-lost-silently' } },
  tags: ['known-bug', 'truncation'],
  async run(ctx) {
    const sources = Array.from({ length: 3 }, (_, i) => makeMemfd(`unchecked-${i}`));
    try {
      const count = ctx.rng.int(3, 40);
      const fds = Array.from({ length: count }, () => ctx.rng.pick(sources));
      const { report } = await exchangeWithRawPeer(ctx, PEER, 'seqpacket', Buffer.from(`fds=${count}`), fds);
      const got = report as { data: string; fds: number; ctrunc: boolean };
      assert.equal(got.data, `fds=${count}`, 'the data arrived whole');
      if (got.fds !== count) {
        // Lost to the peer's short control buffer (the kernel said so, the
        // peer did not look), not on fdbridge's side of the exchange.
        assert.equal(got.ctrunc, true, `${got.fds} of ${count} fds arrived without MSG_CTRUNC`);
        ctx.note(`${count} fds sent; the peer got ${got.fds} and was not told`);
        throw new CheckFailure('fds-lost-silently', `the message carried ${count} fd(s); the receiver got ${got.fds}`);
      }
    } finally {
      closeAll(sources);
    }
  },
};

export default scenario;
