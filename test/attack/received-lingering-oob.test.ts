/**
 * A STREAM peer can send a byte with MSG_OOB and fds with it. Linux keeps
 * such a message apart (af_unix.c, manage_oob): a plain recvmsg skips it
 * and drops its fds inside the call, on the receiving thread. A lingering
 * TCP socket among them (SO_LINGER, unsent data; the peer closed its own
 * copy) then freezes the receiver's event loop for the linger time, in a
 * receive, not even a close. A STREAM UnixSocket reads such a message in
 * line (SO_OOBINLINE), as any other: its fds arrive (here past maxFds: a
 * TruncatedError, the fds on the background closer), and so does close()'s
 * emptying of the queue.
 *
 * The peer is python (socket.send_fds with MSG_OOB), the watcher is
 * linger-attacker's: expected null (no thread of ours in the close).
 */
import { execFileSync } from 'node:child_process';

import { closeFd, TruncatedError, UnixSocket } from '../../src';
import { rawSocketPair } from '../../src/testing';
import { hasPython, lingeringSocket, PYTHON } from '../util/linger-attacker';

/** python on fd 3 (a STREAM socket) sends 'a', then 'o' with MSG_OOB carrying fd 4, then 'b'. */
const SEND_OOB = `
import socket
s = socket.socket(fileno=3)
s.send(b'a')
socket.send_fds(s, [b'o'], [4], socket.MSG_OOB)
s.send(b'b')
`;

const CASES = ['receives it', 'is closed with it unread'] as const;

(hasPython() ? test.each(CASES) : test.skip.each(CASES))(
  'a STREAM UnixSocket whose peer sends a lingering TCP socket with MSG_OOB never drops it on the event loop when it %s',
  async (how) => {
    const linger = await lingeringSocket();
    const [peer, mine] = rawSocketPair('stream');
    const receiver = new UnixSocket(mine, 'stream', { maxFds: 0 });
    try {
      execFileSync(PYTHON, ['-c', SEND_OOB], { stdio: ['ignore', 'ignore', 'inherit', peer, linger.fd] });
      closeFd(linger.fd); // the queued message's reference is now the only one
      if (how === 'receives it') {
        let data = '';
        let truncated = 0;
        while (!data.endsWith('b')) {
          try {
            data += (await receiver.receive()).data.toString();
          } catch (err) {
            expect(err).toBeInstanceOf(TruncatedError);
            data += (err as TruncatedError).data.toString();
            truncated++;
          }
        }
        // 'o' came in line (in the read that took 'a' too, as a STREAM read may), its fd
        // past maxFds: to the background closer.
        expect({ data, truncated }).toEqual({ data: 'aob', truncated: 1 });
      }
      receiver.close();
      // Expected: null. Fails with 'main thread, syscall 47: ... < sk_stream_wait_close < ...' (the
      // recvmsg that read 'b' dropped the OOB message's fd) or in close (syscall 3).
      expect(await linger.verdict()).toBeNull();
    } finally {
      receiver.close();
      closeFd(peer);
      await linger.end();
    }
  },
  60000,
);
