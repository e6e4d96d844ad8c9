/**
 * A receive path that ends with `data.length = iov.iov_len`, the buffer size,
 * where it means the bytes received (recvmsg's return value), as the seed's
 * receiveBytesMax:andFileDescriptor: does (the seed: the backup tool's helper
 * code fdbridge's design comes from). A message shorter than the buffer comes
 * back padded with zeros. fdbridge sends a message and an fd over a datagram
 * socketpair to a raw-API port of that receive path: the data it returns is
 * the message followed by zeros up to the buffer size, and that is the
 * declared failure; any other difference is a real one. (fdbridge's receive:
 * receive-whole-message.)
 */
import { strict as assert } from 'node:assert';

import { makeMemfd } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { exchangeWithRawPeer } from './support/raw-peer';

const BUFFER = 64;

/** The seed's receive path, ported: one fd out of the control message, data trimmed to the BUFFER size. */
const PEER = `
max_length = ${BUFFER}
data = bytearray(max_length)
msg, ancdata, flags, addr = sock.recvmsg(max_length, socket.CMSG_SPACE(4))
data[:len(msg)] = msg
fds = scm_rights(ancdata)
for fd in fds:
    os.close(fd)
# data.length = iov.iov_len;  // trim data object to actual bytes received (it is not)
print(json.dumps({'data': bytes(data[:max_length]).hex(), 'fds': len(fds)}))
`;

const scenario: Scenario = {
  name: 'reproduce-seed-receive-trim',
  description: "a port of the seed's receive path returns the whole buffer, not the bytes fdbridge sent; the data check fails",
  transports: ['direct'],
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'data-padded-to-buffer' } },
  tags: ['seed-bug'],
  async run(ctx) {
    const memfd = makeMemfd('seed-trim');
    try {
      const message = Buffer.from(`msg-${ctx.rng.int(0, 1e6)}`);
      const { report } = await exchangeWithRawPeer(ctx, PEER, 'dgram', message, [memfd]);
      const got = report as { data: string; fds: number };
      const data = Buffer.from(got.data, 'hex');
      assert.equal(got.fds, 1, 'the fd arrived with the message');
      if (!data.equals(message)) {
        const padded = Buffer.concat([message, Buffer.alloc(BUFFER - message.length)]);
        assert.deepEqual(data, padded, 'the data is the message, padded with zeros to the buffer size');
        throw new CheckFailure('data-padded-to-buffer', `received ${data.length} bytes for a ${message.length}-byte message`);
      }
    } finally {
      closeAll([memfd]);
    }
  },
};

export default scenario;
