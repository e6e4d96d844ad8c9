/**
 * A receive path that gives recvmsg a control buffer of
 * CMSG_SPACE(sizeof(int)), which on 64-bit Linux holds two ints, and copies
 * out only the first fd, as the seed's receiveBytesMax:andFileDescriptor:
 * does (the seed: the backup tool's helper code fdbridge's design comes
 * from). A message carrying two fds arrives whole, and the second stays open
 * in the receiver, owned by nobody. Here that receiver is a command
 * (FirstFdOnlyCommand) into which fdbridge duplicates two memfds: it adopts
 * both, uses and closes the first. The oracle must see exactly the second one
 * leaked, in whichever process the command runs on this transport.
 * (fdbridge's own receive: receive-whole-message.)
 */
import { strict as assert } from 'node:assert';

import { fdIdentity, makeMemfd } from '../src';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { FIRST_FD_ONLY_COMMAND } from './support/seed-commands';

const scenario: Scenario = {
  name: 'reproduce-seed-second-fd-leak',
  description: "a command that, like the seed's receive path, uses the first of two fds fdbridge gave it and never closes the second; the oracle must see that fd",
  // The helper daemon is a shared service: a command leaking into it is not a
  // scenario to run there.
  transports: ['direct', 'worker', 'child', 'pidfd'],
  expect: 'leak',
  failure: { leaks: [{ target: /^\/memfd:seed-second-leaked( \(deleted\))?$/ }] },
  tags: ['seed-bug'],
  async run(ctx) {
    const first = makeMemfd('seed-first');
    const second = makeMemfd('seed-second-leaked');
    try {
      const conn = await ctx.connect(FIRST_FD_ONLY_COMMAND);
      try {
        const given = await conn.dupFileDescriptors([first, second]);
        assert.equal(await conn.call('useFirst', given), String(fdIdentity(first).ino), 'the command used the first fd');
      } finally {
        await conn.close();
      }
    } finally {
      closeAll([first, second]);
    }
  },
};

export default scenario;
