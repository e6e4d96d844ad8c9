/**
 * Received fds without close-on-exec leak into every program the receiver
 * runs (sendfd#16, golang/go#42765): a receiver that calls recvmsg without
 * MSG_CMSG_CLOEXEC gets fds with FD_CLOEXEC clear, whatever the sender had.
 * fdbridge sends a close-on-exec memfd to a raw-API peer that receives it
 * and execs `ls -l /proc/self/fd`. With MSG_CMSG_CLOEXEC the memfd must not
 * be listed (checked first); without it, the check that it did not cross the
 * exec fails, and that is the declared failure. fdbridge's own receivers on
 * every transport: prove-cloexec-by-exec.
 */
import { strict as assert } from 'node:assert';

import { fdFlags, makeMemfd } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { exchangeWithRawPeer } from './support/raw-peer';

/** Receives one message with the given recvmsg flags, then becomes `ls -l /proc/self/fd`. */
const peer = (flags: string): string => `
# recvmsg itself: socket.recv_fds drops its flags argument on Python < 3.12.
msg, ancdata, msg_flags, addr = sock.recvmsg(64, socket.CMSG_SPACE(16 * 4), ${flags})
fds = scm_rights(ancdata)
os.execv('/bin/ls', ['ls', '-l', '/proc/self/fd'])
`;

const scenario: Scenario = {
  name: 'reproduce-cloexec-grandchild-leak',
  description: 'a receiver without MSG_CMSG_CLOEXEC lets fds fdbridge sent it leak into the programs it execs; the exec check fails',
  transports: ['direct'],
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'received-fd-crossed-exec' } },
  tags: ['known-bug', 'cloexec'],
  async run(ctx) {
    const name = `cloexec-port-${ctx.rng.int(0, 1e6)}`;
    const memfd = makeMemfd(name);
    try {
      // The sender's copy is close-on-exec; that is not what travels.
      assert.equal(fdFlags(memfd).cloexec, true);
      const crossed = async (flags: string): Promise<boolean> => {
        const { stdout } = await exchangeWithRawPeer(ctx, peer(flags), 'seqpacket', Buffer.from('x'), [memfd]);
        assert.match(stdout, /-> socket:\[\d+\]/, 'ls listed the fds of the exec\'d peer (its socket, fd 3, is inheritable)');
        return stdout.includes(`-> /memfd:${name}`);
      };
      assert.equal(await crossed('socket.MSG_CMSG_CLOEXEC'), false, 'with MSG_CMSG_CLOEXEC the received fd does not cross exec');
      if (await crossed('0')) {
        ctx.note(`/memfd:${name} crossed the exec into ls`);
        throw new CheckFailure('received-fd-crossed-exec', `a received fd (/memfd:${name}) crossed exec into the grandchild`);
      }
    } finally {
      closeAll([memfd]);
    }
  },
};

export default scenario;
