/**
 * A helper daemon takes fds only as its clients send them (SCM_RIGHTS: the
 * kernel checks that the sender has them). A HELLO asking for pidfd pulls
 * would have the daemon take them itself with pidfd_getfd(2), with its own
 * privileges, from the process that connected, whatever that process runs
 * by then: a client that forks, keeps the socket in the child and has the
 * connecting parent exec a set-user-ID program would have the daemon pull
 * that program's fds (a host key ssh-keysign opened as root) into the
 * client's command. The daemon refuses such a HELLO and never pulls.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { EofError, HelperDaemon } from '../../src';
import { closeFd, makeMemfd, openFdTable } from '../../src/fd';
import { decodeFrame, encodeJson, FrameType, PROTOCOL_VERSION, type Frame } from '../../src/protocol';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';
import { getfdOf } from '../util/getfd';
import { settleFdTable } from '../util/settle';

/** The next frame from the daemon, or 'eof'; waits on the event loop (the daemon runs in this process). */
async function next(fd: number): Promise<Frame | 'eof'> {
  for (;;) {
    let m;
    try {
      m = receiveNow(fd, 256 * 1024, 253);
    } catch (err) {
      if (err instanceof EofError || (err as { code?: string }).code === 'ECONNRESET') return 'eof';
      throw err;
    }
    if (m) {
      for (const f of m.fds) closeFd(f);
      return m.data.length === 0 ? 'eof' : decodeFrame(m.data, []);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a HELLO asking the helper daemon for pidfd pulls is refused, and a GETFD after it pulls nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-pull-'));
  const daemon = HelperDaemon.start({ socketPath: join(dir, 'helper.sock') });
  const memfd = makeMemfd('pull-me');
  const client = rawConnect('seqpacket', daemon.socketPath);
  try {
    const before = openFdTable();
    sendNow(client, encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'log' }, pull: 'pidfd', probeFd: memfd }));
    const answer = await next(client);
    expect(answer).toMatchObject({ type: FrameType.ERROR, id: 0 });
    // Whatever it answered, a pull request must not be served.
    try {
      sendNow(client, getfdOf(1, [memfd, memfd, memfd]));
    } catch {
      // EPIPE: the daemon hung up, as it should
    }
    let frame = answer;
    while (frame !== 'eof' && !(typeof frame === 'object' && frame.id === 1)) frame = await next(client);
    expect(frame).toBe('eof');
    // Nothing of this process's memfd went into the daemon (it shares this fd table).
    expect(daemon.status()).toMatchObject({ fdsHeld: 0 });
    // The daemon closes its end of a refused connection on its closer thread, after the hang-up
    // the client saw: the table comes back once that thread ran.
    expect(await settleFdTable(process.pid, before, 2000)).toEqual({ opened: [], closed: [] });
  } finally {
    closeFd(client);
    closeFd(memfd);
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
