/**
 * A refused DUP's fds are closed on the background closer, as their uid's,
 * and its refusal is sent once they are. One allowed user blocks its 8
 * closer threads (lingering TCP sockets given in a DUP and left), then
 * pipelines DUP frames of 253 fds each, past its quota, on one connection,
 * never reading a reply: every frame the daemon reads is refused, and its
 * fds wait behind the blocked closes. Were the daemon to read on, its fd
 * table would grow by 253 a frame until it met its RLIMIT_NOFILE (recvmsg
 * and accept4 failing for everyone). Those fds count against the uid's
 * quota while they wait, and past it the daemon reads none of that uid's
 * connections: the frames wait in the kernel, charged to the sender. The
 * uid holds its quota plus one refused frame at most, and every other uid
 * is served. Run as root, the attacker as nobody; the daemon at
 * RLIMIT_NOFILE 1024, as a service may be.
 */
import { openFdTable } from '../../src';
import { diffFdTables } from '../../src/fd';
import { rootServed, statusOf, statusWhen } from '../util/helper-status';
import { hasPython, withAttackedDaemon } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const describeRoot = isRoot ? describe : describe.skip;

/** DUP frames the attacker pipelines (the kernel queues 10 or so unread on one connection: net.unix.max_dgram_qlen). */
const FRAMES = 8;
const MAX_FDS = 253;

/**
 * As nobody: a probe connection to @NAME (HELLO, READY), then up to FRAMES
 * DUP frames of 253 copies of /dev/null each, sent without waiting, until
 * the socket would block; prints {sent}. Reads nothing more, and hangs up
 * once told a line on stdin.
 */
const PIPELINER = (name: string): string => `
  const { UnixSocket } = require(${JSON.stringify(`${DIST_SRC}/socket`)});
  const { sendNow } = require(${JSON.stringify(`${DIST_SRC}/testing`)});
  const { encodeJson, FrameType, PROTOCOL_VERSION } = require(${JSON.stringify(`${DIST_SRC}/protocol`)});
  const fs = require('node:fs');
  (async () => {
    const s = await UnixSocket.connect({ abstract: ${JSON.stringify(name)} }, { kind: 'seqpacket', bufferSize: 256 * 1024 });
    await s.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: { name: 'probe' } }));
    const ready = await s.receive();
    const devnull = fs.openSync('/dev/null', 'r');
    const fds = new Array(${MAX_FDS}).fill(devnull);
    let sent = 0;
    for (let i = 1; i <= ${FRAMES}; i++) {
      const frame = Buffer.alloc(8);
      frame[0] = FrameType.DUP;
      frame.writeUInt32LE(i, 4);
      try {
        sendNow(s.fd, frame, fds);
        sent++;
      } catch (e) {
        if (e.code === 'EAGAIN') break;
        throw e;
      }
    }
    console.log(JSON.stringify({ ready: ready.data[0], sent }));
    process.stdin.once('data', () => { s.close(); process.exit(0); });
  })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack) })); process.exit(1); });`;

describeRoot("one user's refused DUPs, pipelined behind its blocked closes, never take the daemon to its fd limit (attacker: nobody)", () => {
  (hasPython() ? test : test.skip)('past its quota the uid is not read, on a new connection either: it holds its quota and one refused frame at most; root is served; the fd table returns', async () => {
    await withAttackedDaemon('refused-pipeline', ['--allow-uid', String(NOBODY), '--verbose'], { nofile: 1024 }, async (d) => {
      const { daemon, name, socketPath, baseline, memfd } = d;
      const { limits } = await statusOf(socketPath);
      // 253 fds are past nobody's quota whatever it holds: every frame is refused.
      expect(limits.maxFdsPerUid).toBeLessThan(MAX_FDS);

      // nobody blocks its 8 closer threads.
      const lingering = await d.blockClosers(8);

      const pipeliner = d.runAsNobody(PIPELINER(name));
      const sent = await pipeliner.line<{ ready: number; sent: number; error?: string }>('sent');
      expect(sent).toMatchObject({ ready: 2 });
      expect(sent.sent).toBeGreaterThan(2);

      // The first frame is read and refused; its 253 fds wait behind the blocked closes.
      await statusWhen(socketPath, (s) => s.stats.quotaHits.uidFds >= 1 && s.fdsClosing >= 8 + MAX_FDS);
      // nobody hangs up (its unread frames go with its socket, which waits
      // behind its closes) and connects again: the new connection is held
      // back from its READY on, although nobody had no connection left in
      // between, and brings no frame more.
      pipeliner.child.stdin?.end('done\n');
      await pipeliner.exited();
      await statusWhen(socketPath, (s) => !s.uids.some((u) => u.uid === NOBODY));
      const second = d.runAsNobody(PIPELINER(name));
      const sentAgain = await second.line<{ sent: number }>('sent');
      expect(sentAgain.sent).toBeGreaterThan(0);
      // Root is served meanwhile (each round trip gives the daemon's loop
      // turns in which it would read nobody's next frames, were it reading them).
      for (let i = 0; i < 3; i++) await rootServed(socketPath, memfd);
      const during = await statusOf(socketPath);
      expect({ uidFds: during.stats.quotaHits.uidFds, fdsClosing: during.fdsClosing, readingHeld: during.stats.readingHeld, totalFds: during.stats.quotaHits.totalFds }).toEqual({
        uidFds: 1,
        fdsClosing: 8 + MAX_FDS,
        // held once with its first connection, and again from its new one's start
        readingHeld: 2,
        // nobody's fds past its own limit count against it alone: root's DUPs were not refused with them.
        totalFds: 0,
      });
      const opened = diffFdTables(baseline, openFdTable(daemon.pid)).opened.length;
      // 261 waiting to be closed, nobody's connection (its socket and the
      // pidfd that watches its client), the ended sockets of the lingering
      // attacker and of the first pipeliner.
      expect(opened).toBeLessThanOrEqual(8 + MAX_FDS + 4);
      expect(daemon.stderr().split('\n').filter((l) => /EMFILE/.test(l))).toEqual([]);

      // Once the lingering closes end, the uid is read again: each of its
      // frames is refused in turn, and every fd closed.
      await d.release(lingering);
      await statusWhen(socketPath, (s) => s.stats.quotaHits.uidFds === 1 + sentAgain.sent && s.fdsClosing === 0);
      second.child.stdin?.end('done\n');
      await second.exited();
      await statusWhen(socketPath, (s) => s.socketsClosing === 0 && !s.uids.some((u) => u.uid === NOBODY));
      await rootServed(socketPath, memfd);
      expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
    });
  }, scaled(180000));
});
