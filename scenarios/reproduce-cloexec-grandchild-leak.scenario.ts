/**
 * Received fds without close-on-exec leak into every program the receiver
 * runs (sendfd#16, golang/go#42765): a receiver that calls recvmsg without
 * MSG_CMSG_CLOEXEC gets fds with FD_CLOEXEC clear, whatever the sender had.
 * A faithful port: receive, then leave the fd as such a receiver would have
 * it (FD_CLOEXEC cleared), then exec a program that lists its fds: the
 * check that the fd did not cross the exec must fail. The port runs in the
 * client; fdbridge's receivers on every transport: prove-cloexec-by-exec.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';

import { fdFlags, makeMemfd } from '../src';
import { constants, native } from '../src/native';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';

/** A receiver that does not ask for MSG_CMSG_CLOEXEC. */
function receiveWithoutCloexec(sock: number): number[] {
  const m = native.recvNow(sock, 16, 4);
  if (m === null) throw new Error('nothing to receive');
  // recvmsg(sock, &msg, 0): the installed fds have FD_CLOEXEC clear.
  for (const fd of m.fds) native.setCloexec(fd, false);
  return m.fds;
}

/** The fd numbers a freshly exec'd program sees open. */
function fdsSeenByExec(): number[] {
  const r = spawnSync('/bin/ls', ['/proc/self/fd'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ls /proc/self/fd failed: ${r.stderr}`);
  return r.stdout.split(/\s+/).filter((s) => s !== '').map(Number);
}

const scenario: Scenario = {
  name: 'reproduce-cloexec-grandchild-leak',
  description: 'a receiver without MSG_CMSG_CLOEXEC lets received fds leak into the programs it execs; the check must fail',
  transports: ['direct'],
  expect: 'fail',
  tags: ['known-bug', 'cloexec'],
  async run(ctx) {
    const [a, b] = native.socketpair(constants.SOCK_SEQPACKET);
    const memfd = makeMemfd('cloexec-port');
    const received: number[] = [];
    try {
      // The sender's copy is close-on-exec; that is not what travels.
      assert.equal(fdFlags(memfd).cloexec, true);
      native.sendNow(a, Buffer.from('x'), [memfd]);
      received.push(...receiveWithoutCloexec(b));
      const seen = fdsSeenByExec();
      const leaked = received.filter((fd) => seen.includes(fd));
      if (leaked.length > 0) ctx.note(`fd ${leaked.join(', ')} crossed the exec into /bin/ls`);
      assert.deepEqual(leaked, [], 'a received fd crossed exec into the grandchild');
    } finally {
      closeAll([a, b, memfd, ...received]);
    }
  },
};

export default scenario;
