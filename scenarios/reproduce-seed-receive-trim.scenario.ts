/**
 * The seed's bug (b): receiveBytesMax:andFileDescriptor: ends with
 * `data.length = iov.iov_len`, the buffer size, where it meant the bytes
 * received (recvmsg's return value; receiveBytesMax: gets it right). A
 * message shorter than the buffer comes back padded with zeros. A faithful
 * port over a datagram socketpair: the check that the data is what was sent
 * must fail. (fdbridge: receive-whole-message.) The port runs in the
 * client; the transport does not matter, so it runs once.
 */
import { strict as assert } from 'node:assert';

import { makeMemfd } from '../src';
import { constants, native } from '../src/native';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';

/** The seed's receive path: returns the data (trimmed to the BUFFER size) and the fd. */
function receiveBytesMaxAndFileDescriptor(sock: number, maxLength: number): { data: Buffer; fd: number } {
  const data = Buffer.alloc(maxLength);
  const m = native.recvNow(sock, maxLength, 1);
  if (m === null) throw new Error('error receiving data and file descriptor: EAGAIN');
  m.data.copy(data);
  const fd = m.fds[0];
  if (fd === undefined) throw new Error('message did not include file descriptor');
  // data.length = iov.iov_len;  // trim data object to actual bytes received (it is not)
  return { data: data.subarray(0, maxLength), fd };
}

const scenario: Scenario = {
  name: 'reproduce-seed-receive-trim',
  description: "a faithful port of the seed's receive path returns the whole buffer, not the bytes received; the check on the data must fail",
  transports: ['direct'],
  expect: 'fail',
  tags: ['seed-bug'],
  async run(ctx) {
    const [a, b] = native.socketpair(constants.SOCK_DGRAM);
    const memfd = makeMemfd('seed-trim');
    let received: number | undefined;
    try {
      const message = `msg-${ctx.rng.int(0, 1e6)}`;
      native.sendNow(a, Buffer.from(message), [memfd]);
      const { data, fd } = receiveBytesMaxAndFileDescriptor(b, 64);
      received = fd;
      assert.equal(data.toString('latin1'), message, `received ${data.length} bytes for a ${message.length}-byte message`);
    } finally {
      closeAll([a, b, memfd, ...(received === undefined ? [] : [received])]);
    }
  },
};

export default scenario;
