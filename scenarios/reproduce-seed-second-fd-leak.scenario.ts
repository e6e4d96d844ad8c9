/**
 * The seed's bug (c): receiveBytesMax:andFileDescriptor: gives recvmsg a
 * control buffer of CMSG_SPACE(sizeof(int)), which on 64-bit Linux holds
 * two ints (CMSG_SPACE(4) = CMSG_LEN(8) = 24 bytes), so a message carrying
 * two fds arrives whole, without MSG_CTRUNC, and the seed copies out only
 * the first. The second stays open in the receiver, owned by nobody. A
 * faithful port in this process: the leak oracle must see that fd.
 * (fdbridge: receive-whole-message.)
 */
import { strict as assert } from 'node:assert';

import { makeMemfd } from '../src';
import { constants, native } from '../src/native';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';

/** The seed's receive path: one fd out of the control message, whatever else it held. */
function receiveBytesMaxAndFileDescriptor(sock: number, maxLength: number): { data: Buffer; fd: number } {
  // Room for CMSG_SPACE(sizeof(int)) = 24 bytes: two fds on 64-bit.
  const m = native.recvNow(sock, maxLength, 2);
  if (m === null) throw new Error('error receiving data and file descriptor: EAGAIN');
  const fd = m.fds[0];
  if (fd === undefined) throw new Error('message did not include file descriptor');
  // memmove(returnedFD, CMSG_DATA(controlMsg), sizeof(int)): m.fds[1] is dropped on the floor.
  return { data: m.data, fd };
}

const scenario: Scenario = {
  name: 'reproduce-seed-second-fd-leak',
  description: "a faithful port of the seed's receive path keeps the first of two fds in a message and leaks the second; the oracle must see it",
  transports: ['direct'],
  expect: 'leak',
  tags: ['seed-bug'],
  async run(ctx) {
    const [a, b] = native.socketpair(constants.SOCK_DGRAM);
    const first = makeMemfd('seed-first');
    const second = makeMemfd('seed-second-leaked');
    try {
      native.sendNow(a, Buffer.alloc(1), [first, second]);
      const { fd } = receiveBytesMaxAndFileDescriptor(b, 1);
      // The caller uses and closes the fd it was given, as the seed's caller does.
      assert.ok(native.identity(fd).ino === native.identity(first).ino);
      closeAll([fd]);
      ctx.note('the second fd of the message (/memfd:seed-second-leaked) is left open in the client');
    } finally {
      closeAll([a, b, first, second]);
    }
  },
};

export default scenario;
