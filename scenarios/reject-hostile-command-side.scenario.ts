/**
 * A hostile or broken command's side against the client (the real helper
 * transport, connected to a fake daemon this scenario plays): replies to
 * requests never made, DUP_OK with the wrong count or negative fd numbers,
 * DUP_OK to a call, random bytes, short headers, oversized replies, and fds
 * attached to replies. The client's socket refuses fds (SO_PASSRIGHTS: the
 * fake's send fails with EPERM, the connection lives on); anything else
 * fails THAT connection: the pending request and every later one reject
 * with ProtocolError, and no fd is left anywhere.
 */
import { strict as assert } from 'node:assert';
import { join } from 'node:path';

import { makeMemfd, ProtocolError, PROBE_COMMAND, UnixServer, type Connection } from '../src';
import { encodeFdList, encodeJson, FRAME_SOCKET_OPTIONS, FrameType } from '../src/protocol';
import type { Scenario } from '../harness/types';
import { closeAll } from './support/common';
import { answerHello, badReplies, readRequest, sendBadReply } from './support/hostile';

const scenario: Scenario = {
  name: 'reject-hostile-command-side',
  description: 'bad replies from a fake command side (unasked, wrong counts, negative fds, garbage, oversized, with fds) fail that connection with ProtocolError or are refused by the kernel; nothing leaks',
  transports: ['helper'],
  tags: ['fault', 'hostile', 'security'],
  async run(ctx) {
    const socketPath = join(ctx.tmpdir, 'fake.sock');
    const server = UnixServer.listen(socketPath, { kind: 'seqpacket', ...FRAME_SOCKET_OPTIONS });
    const source = makeMemfd('hostile-replies');
    let byKernel = 0;
    const replies = badReplies(ctx.rng);
    try {
      for (const bad of replies) {
        ctx.count('badInputsTried');
        const accepted = server.accept();
        const connecting = ctx.connect(PROBE_COMMAND, { socketPath });
        const fake = await accepted;
        let conn: Connection | undefined;
        try {
          await answerHello(fake);
          conn = await connecting;
          const count = ctx.rng.int(1, 4);
          const pending = (bad.request === 'dup' ? conn.dupFileDescriptors(new Array<number>(count).fill(source)) : conn.call('echo', 'x')).then(
            () => 'resolved' as const,
            (err: unknown) => err,
          );
          const req = await readRequest(fake);
          const sent = await sendBadReply(fake, bad.reply(req));
          if (sent.outcome === 'kernel') {
            byKernel++;
            assert.equal(bad.rejectedBy, 'kernel', `${bad.name}: refused by the kernel`);
            // Nothing arrived: the request is still waiting, and a proper reply settles it.
            await fake.send(
              req.type === FrameType.DUP ? encodeFdList(FrameType.DUP_OK, req.id, new Array<number>(req.fdCount).fill(99)) : encodeJson(FrameType.RESULT, req.id, { value: 'x' }),
            );
            assert.equal(await pending, 'resolved', `${bad.name}: the connection lives on`);
          } else {
            const err = await pending;
            assert.ok(err instanceof ProtocolError, `${bad.name}: ProtocolError, not ${String(err)}`);
            await assert.rejects(conn.call('echo', 1), ProtocolError, `${bad.name}: later requests fail too`);
            // The client hung up on the fake.
            await assert.rejects(fake.receive(), { code: 'ERR_FDBRIDGE_EOF' });
          }
          // Every fd attached to the reply is closed (no deadline: see pipeDrained).
          await sent.drained;
          ctx.count('badInputsRejected');
        } finally {
          // The fake first: a live connection's close() waits for its CLOSED.
          fake.close();
          await (conn ?? (await connecting.catch(() => undefined)))?.close();
        }
      }
      ctx.note(`${replies.length} bad replies; ${byKernel} refused by the kernel (SO_PASSRIGHTS), the rest failed their connection with ProtocolError`);
    } finally {
      server.close();
      closeAll([source]);
    }
  },
};

export default scenario;
