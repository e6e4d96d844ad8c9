/**
 * CPython interop for connectionless datagrams: Python's socket.recv_fds /
 * send_fds (3.9+) and DatagramSocket exchange fds both ways with datagrams
 * sent to a bound name, each side checking the other's sender address and
 * the file behind every fd. Skipped (with the reason) where python3 lacks
 * send_fds.
 *
 * CPython's socket.send_fds(sock, buffers, fds, flags, address) drops its
 * `flags` and `address` (3.11: it calls sendmsg without them), so on an
 * unconnected socket it fails with ENOTCONN. Python therefore sends to a
 * name either with send_fds on a socket connect()ed to it, or with the
 * sendmsg call send_fds should have made (SCM_RIGHTS and the address): both
 * are tested.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { DatagramSocket } from '../../src/datagram';
import { makeMemfd } from '../../src/fd';
import { collect, lastJson, withScope } from './helpers';

const probe = spawnSync('python3', ['-c', 'import socket, sys; sys.exit(0 if hasattr(socket, "send_fds") else 3)']);
const pythonReady = probe.status === 0;
const describeIfPython = pythonReady ? describe : describe.skip;
if (!pythonReady) console.warn(`CPython datagram interop skipped: ${probe.error ? 'no python3' : 'python3 has no socket.send_fds (3.9+)'}`);

/**
 * The Python side: binds argv[1], says "bound", receives one datagram with
 * its fds (recv_fds), reads what each fd holds, answers the sender with
 * send_fds (a memfd holding "from python") when the sender is bound, and
 * prints what it saw as JSON.
 */
const PYTHON_RECEIVER = String.raw`
import array, json, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print("bound", flush=True)
msg, fds, flags, addr = socket.recv_fds(s, 1024, 8)
contents = [os.pread(fd, 100, 0).decode() for fd in fds]
for fd in fds: os.close(fd)
if addr:
    m = os.memfd_create("py")
    os.write(m, b"from python")
    s.sendmsg([b"reply"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [m]))], 0, addr)
    os.close(m)
s.close(); os.unlink(path)
print(json.dumps({"msg": msg.decode(), "contents": contents, "addr": addr or None, "truncated": bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))}))
`;

/**
 * The Python side as a sender: an unbound socket (or one bound at argv[3])
 * sends one datagram with two fds to argv[1], with send_fds on a connected
 * socket (argv[2] 'connect') or sendmsg to the address ('sendto'); a bound
 * one then reads the answer with recv_fds.
 */
const PYTHON_SENDER = String.raw`
import array, json, os, socket, sys
target, how = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
if len(sys.argv) > 3: s.bind(sys.argv[3])
a = os.memfd_create("one"); os.write(a, b"first file")
b = os.memfd_create("two"); os.write(b, b"second file")
if how == "connect":
    s.connect(target)
    socket.send_fds(s, [b"from python"], [a, b])
else:
    s.sendmsg([b"from python"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [a, b]))], 0, target)
os.close(a); os.close(b)
if len(sys.argv) > 3:
    msg, fds, flags, addr = socket.recv_fds(s, 1024, 8)
    print(json.dumps({"reply": msg.decode(), "fds": len(fds), "addr": addr}))
    for fd in fds: os.close(fd)
    os.unlink(sys.argv[3])
else:
    print(json.dumps({"sent": True}))
s.close()
`;

describeIfPython('CPython socket.send_fds / recv_fds over datagrams sent to a bound name', () => {
  test('Node sends to a Python receiver: Python gets the data, the files and the sender; its answer comes back with an fd', () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'p');
      const node = s.add(DatagramSocket.bind(join(dir, 'node.sock')));
      const pyPath = join(dir, 'py.sock');
      const py = s.child(spawn('python3', ['-c', PYTHON_RECEIVER, pyPath], { stdio: ['ignore', 'pipe', 'pipe'] }));
      const done = collect(py);
      await new Promise<void>((resolve) => py.stdout!.on('data', (d: Buffer) => d.toString().includes('bound') && resolve()));
      const a = s.own(makeMemfd('a'));
      const b = s.own(makeMemfd('b'));
      writeSync(a.fd, 'node file a');
      writeSync(b.fd, 'node file b');
      await node.sendTo(pyPath, Buffer.from('from node'), [a.fd, b.fd]);
      const reply = await node.receive({ timeoutMs: 20_000 });
      const [theirs] = s.ownAll(reply.fds);
      expect(reply.data.toString()).toBe('reply');
      expect(reply.from).toBe(pyPath);
      expect(reply.fds).toHaveLength(1);
      expect(readFileSync(`/proc/self/fd/${theirs!.fd}`, 'utf8')).toBe('from python');
      const r = await done;
      expect(r.code).toBe(0);
      expect(lastJson(r)).toEqual({ msg: 'from node', contents: ['node file a', 'node file b'], addr: node.address, truncated: false });
    }));

  test.each(['sendto', 'connect'])('Python sends to a Node receiver from an unbound socket (%s): from is null, both files arrive', (how) =>
    withScope(async (s) => {
      const node = s.add(DatagramSocket.bind(join(s.dir(), 'p', 'node.sock'), { credentials: true }));
      const py = s.child(spawn('python3', ['-c', PYTHON_SENDER, node.address as string, how], { stdio: ['ignore', 'pipe', 'pipe'] }));
      const done = collect(py);
      const d = await node.receive({ timeoutMs: 20_000 });
      const fds = s.ownAll(d.fds);
      expect(d.data.toString()).toBe('from python');
      expect(d.from).toBeNull();
      expect(d.credentials.pid).toBe(py.pid);
      expect(fds.map((f) => readFileSync(`/proc/self/fd/${f.fd}`, 'utf8'))).toEqual(['first file', 'second file']);
      expect((await done).code).toBe(0);
    }));

  test("Python sends from a bound socket and reads Node's answer, fd included", () =>
    withScope(async (s) => {
      const dir = join(s.dir(), 'p');
      const node = s.add(DatagramSocket.bind(join(dir, 'node.sock')));
      const pyPath = join(dir, 'py.sock');
      const py = s.child(spawn('python3', ['-c', PYTHON_SENDER, node.address as string, 'sendto', pyPath], { stdio: ['ignore', 'pipe', 'pipe'] }));
      const done = collect(py);
      const d = await node.receive({ timeoutMs: 20_000 });
      s.ownAll(d.fds);
      expect(d.from).toBe(pyPath);
      await node.sendTo(d.from as string, Buffer.from('answer'), [d.fds[0]!]);
      const r = await done;
      expect(r.code).toBe(0);
      expect(lastJson(r)).toEqual({ reply: 'answer', fds: 1, addr: node.address });
    }));
});
