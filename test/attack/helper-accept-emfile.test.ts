/**
 * A helper daemon that reaches its fd limit stops accepting (accept4 fails
 * with EMFILE) and starts again shortly. Meanwhile it must stay up: with no
 * client connected, nothing else keeps its event loop alive, and a daemon
 * that ends there ends with exit status 0 (a service manager's
 * Restart=on-failure does not even restart it). A uid it refuses takes it
 * there: lingering TCP sockets sent before the daemon accepted (their
 * closes block the background closer's threads for that uid), then
 * connections it refuses, each of whose closes waits behind them holding
 * an fd. Run as root, the attacker as nobody; the daemon at RLIMIT_NOFILE
 * 1024, as a service may be.
 */
import { spawn } from 'node:child_process';

import { connect, LOG_COMMAND } from '../../src';
import { hasPython, PYTHON } from '../util/linger-attacker';
import { isRoot, spawnAsNobody } from '../util/nobody';
import { CLI, exitOf } from '../util/processes';

const describeRoot = isRoot ? describe : describe.skip;

/**
 * `python3 -c ATTACKER NAME LINGERING ROUNDS`: sends LINGERING lingering TCP
 * sockets (SO_LINGER 3600 s, unsent data, a peer that never reads), each on
 * a connection of its own before the daemon accepts it (again while the
 * daemon was quicker and the send failed with EPERM); then makes ROUNDS
 * connections and closes each at once; prints {sent}. Told a line on stdin,
 * it resets the TCP connections at the peers (the blocked closes end) and
 * prints {drained}.
 */
const ATTACKER = `
import json, socket, struct, sys
name, ling, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(ling)
tcps, peers = [], []
for _ in range(ling):
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    tcp.connect(lst.getsockname()); peer, _ = lst.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tcp.setblocking(False)
    try:
        while True: tcp.send(b'x' * 65536)
    except BlockingIOError: pass
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 3600))
    tcps.append(tcp); peers.append(peer)
def conn():
    u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); u.connect('\\0' + name); return u
for t in tcps:
    for attempt in range(10000):
        u = conn()
        try:
            socket.send_fds(u, [b'x'], [t.fileno()]); u.close(); break
        except PermissionError:
            u.close()
    t.close()
sent = failed = 0
for r in range(rounds):
    try:
        conn().close(); sent += 1
    except OSError:
        failed += 1
print(json.dumps({'sent': sent, 'failed': failed}), flush=True)
sys.stdin.readline()
for peer in peers:
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); peer.close()
print(json.dumps({'drained': len(peers)}), flush=True)
`;

describeRoot('a helper daemon at its fd limit (attacker: nobody, a uid it refuses)', () => {
  test('stays up through EMFILE on accept with no client connected, and serves once fds are free again', async () => {
    if (!hasPython()) return;
    const name = `fdbridge-attack-emfile-${process.pid}`;
    const daemon = spawn('prlimit', ['--nofile=1024:1024', process.execPath, CLI, 'helper', '--socket', `@${name}`, '--verbose', '--exit-with-parent', String(process.pid)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    daemon.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = exitOf(daemon);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      daemon.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('listening on')) resolve();
      });
      void exited.then(({ code }) => reject(new Error(`helper exited with ${code} before listening: ${log}`)));
    });
    const attacker = spawnAsNobody(PYTHON, ['-c', ATTACKER, name, '8', '650']);
    try {
      await attacker.line('sent');
      attacker.child.stdin?.end('go\n');
      await attacker.line('drained');
      // It did reach its limit (else this test shows nothing).
      expect(log).toMatch(/accept4 failed: EMFILE/);
      const conn = await connect('helper', { command: LOG_COMMAND, socketPath: `@${name}`, timeoutMs: 20000 });
      try {
        expect(await conn.call('where')).toMatchObject({ transport: 'helper' });
      } finally {
        await conn.close();
      }
      expect({ exitCode: daemon.exitCode, signal: daemon.signalCode }).toEqual({ exitCode: null, signal: null });
    } finally {
      attacker.kill();
      await attacker.exited();
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
      await exited;
    }
  }, 120000);
});
