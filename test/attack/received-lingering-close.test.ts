/**
 * A peer must not be able to hang the receiver's event loop. The library
 * closes copies that may be a lingering TCP socket's last reference off the
 * event loop (README: the background closer; CONFORMANCE: close can block
 * for the linger time), and the helper daemon closes an ended connection's
 * socket there "since its receive queue may still hold such a TCP socket".
 * The fds a UnixSocket or DatagramSocket receives and drops are not: a
 * sender that hands a lingering TCP socket (SO_LINGER, unsent data; it
 * closes its own copy once sent, as a sender may) in a datagram larger than
 * the receiver's `bufferSize` makes the receiver's receive() close it
 * ("the fds that came already closed", TruncatedError) on the event loop,
 * which then stands still for the linger time, as long as the sender chose
 * (measured: 15 s with SO_LINGER 15; two sockets 30 s). The same when the
 * receiver closes a socket whose queue holds such an unread message:
 * close() itself blocks for the linger time. For a DatagramSocket bound at
 * a name, that is anyone allowed to write to it (anyone in the network
 * namespace for an abstract name): the "many short-lived senders, one
 * receiver" service the README offers it for can be frozen by any of them.
 *
 * The scene: python3 makes a lingering TCP socket (SO_LINGER 3600 s, its
 * peer never reads) whose only reference is ours; we send it in a
 * datagram or message, close our copy, and the receiving side drops it
 * (truncated receive, or close() with it unread). A watcher thread looks
 * at the main thread's kernel state (test/util/linger-attacker.ts): if it
 * finds the main thread in that close, it records it and has python reset
 * the peer, which ends the close at once. Expected: null (the main thread
 * never waited there). Deterministic: a close on the main thread blocks
 * until that reset, so the watcher finds it however loaded the machine is.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { closeFd, DatagramSocket, ProtocolError, PROBE_COMMAND, TruncatedError, UnixServer, UnixSocket } from '../../src';
import { encodeJson, FRAME_SOCKET_OPTIONS, FrameType } from '../../src/protocol';
import { simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawConnect, rawSocketPair, receiveNow, sendNow } from '../../src/testing';
import { handshake } from '../../src/transports/socket-connection';
import { openFdTable } from '../../src/fd';
import { hasPython, lingeringSocket } from '../util/linger-attacker';
import { fdTableSettles } from '../util/processes';
import { DIST_SRC } from '../util/nobody';

const CASES = [
  ['a DatagramSocket', 'receives it in a datagram larger than its bufferSize'],
  ['a DatagramSocket', 'is closed with it unread'],
  ['a SEQPACKET UnixSocket', 'receives it in a message larger than its bufferSize'],
  ['a SEQPACKET UnixSocket', 'is closed with it unread'],
] as const;

(hasPython() ? test.each(CASES) : test.skip.each(CASES))(
  "the event loop does not block in the close of a lingering TCP socket's last reference when %s %s",
  async (receiver, how) => {
    const linger = await lingeringSocket();
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-received-linger-'));
    try {
      const truncated = how.startsWith('receives');
      const payload = Buffer.alloc(truncated ? 5000 : 1);
      if (receiver === 'a DatagramSocket') {
        const service = DatagramSocket.bind(join(dir, 'service.sock'), { bufferSize: 1024 });
        const sender = DatagramSocket.open();
        try {
          await sender.sendTo(join(dir, 'service.sock'), payload, [linger.fd]);
          closeFd(linger.fd); // the datagram carries its own reference: now the only one
          if (truncated) await expect(service.receive({ timeoutMs: 600000 })).rejects.toBeInstanceOf(TruncatedError);
        } finally {
          sender.close();
          service.close();
        }
      } else {
        const [a, b] = UnixSocket.pair('seqpacket', { bufferSize: 1024 });
        try {
          await a.send(payload, [linger.fd]);
          closeFd(linger.fd);
          if (truncated) await expect(b.receive()).rejects.toBeInstanceOf(TruncatedError);
        } finally {
          a.close();
          b.close();
        }
      }
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close
      // < __tcp_close < tcp_close' (or the recvmsg/close path): the receiver dropped the
      // socket on the event loop, which stood still until the watcher had the peer reset
      // (the linger time, an hour, without it).
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  60000,
);

/**
 * A worker thread of the caller's, terminated: "its open UnixSockets ...
 * close with it" (README). One whose queue holds such an unread message
 * closes it in the worker's teardown, in the thread that terminate()
 * waits for: terminate() then takes the linger time (15 s measured with
 * SO_LINGER 15). The watcher looks at the worker's thread as well.
 */
(hasPython() ? test : test.skip)(
  "worker.terminate() does not wait out the close of a lingering TCP socket's last reference unread in the worker's UnixSocket",
  async () => {
    const linger = await lingeringSocket();
    const worker = new Worker(
      `
      const { readlinkSync } = require('node:fs');
      const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
      const { parentPort, workerData } = require('node:worker_threads');
      (async () => {
        const [a, b] = L.UnixSocket.pair('seqpacket');
        globalThis.keep = [a, b];
        await a.send(Buffer.from('x'), [workerData.fd]);
        L.closeFd(workerData.fd); // the unread message's reference is now the only one
        parentPort.postMessage(Number(readlinkSync('/proc/thread-self').split('/').pop()));
        setInterval(() => {}, 1000);
      })();
      `,
      { eval: true, workerData: { fd: linger.fd } },
    );
    try {
      const tid = await new Promise<number>((resolve) => worker.once('message', resolve));
      linger.watch(tid);
      await worker.terminate();
      // Expected: null. Fails with 'thread <tid>, syscall ...: wait_woken < sk_stream_wait_close < ...':
      // the worker's teardown closed the socket (and the TCP socket in its queue) in its thread,
      // and terminate() waited until the watcher had the peer reset.
      expect(await linger.verdict()).toBeNull();
    } finally {
      await worker.terminate();
      await linger.end();
    }
  },
  60000,
);

/**
 * A UnixServer closed while a connection it has not accepted yet holds
 * such a message: the listening socket's close drops the connection, its
 * queue and the TCP socket in it, on the event loop (10.2 s with SO_LINGER
 * 10). Anyone who can connect to the server can queue one.
 */
(hasPython() ? test : test.skip)(
  "UnixServer.close() does not block the event loop on a lingering TCP socket queued by a connection it never accepted",
  async () => {
    const linger = await lingeringSocket();
    const name = `fdbridge-attack-received-linger-${process.pid}`;
    const server = UnixServer.listen({ abstract: name }, { kind: 'seqpacket' });
    try {
      const client = rawConnect('seqpacket', name, true);
      try {
        sendNow(client, Buffer.from('x'), [linger.fd]);
        closeFd(linger.fd); // the queued message's reference is now the only one
      } finally {
        closeFd(client);
      }
    } finally {
      server.close();
    }
    try {
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close < ...'.
      expect(await linger.verdict()).toBeNull();
    } finally {
      await linger.end();
    }
  },
  60000,
);

/**
 * A client's connect: the far side (a daemon at a name someone else took)
 * answers HELLO with a lingering TCP socket attached, on a kernel without
 * SO_PASSRIGHTS to refuse it. The handshake fails with a ProtocolError; the
 * socket it dropped is closed off the event loop.
 */
(hasPython() ? test : test.skip)(
  "a handshake answered with a lingering TCP socket attached fails without the event loop waiting in that socket's close",
  async () => {
    const linger = await lingeringSocket();
    const restore = simulateKernelWithoutPassRights();
    const [c, f] = rawSocketPair('seqpacket');
    const client = new UnixSocket(c, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
    try {
      const shaking = handshake(client, PROBE_COMMAND, 600000, () => 'the fake').then(
        () => 'connected',
        (e: unknown) => e,
      );
      let hello = receiveNow(f, 65536, 0);
      while (hello === null) {
        await new Promise((r) => setImmediate(r));
        hello = receiveNow(f, 65536, 0);
      }
      expect(hello.data[0]).toBe(FrameType.HELLO);
      sendNow(f, encodeJson(FrameType.READY, 0, { pid: 1, threadId: 0 }), [linger.fd]);
      closeFd(linger.fd); // the answer's reference is now the only one
      expect(await shaking).toBeInstanceOf(ProtocolError);
      client.close();
      // Expected: null. Fails with 'main thread, syscall 3: wait_woken < sk_stream_wait_close < ...'.
      expect(await linger.verdict()).toBeNull();
    } finally {
      restore();
      client.close();
      closeFd(f);
      await linger.end();
    }
  },
  60000,
);

/**
 * fdbridge/testing's receiveNow (native recvNow): a message refused for
 * its size, or for carrying more fds than maxFds, is a TruncatedError; the
 * fds that came with it must not be closed on the calling thread. With room
 * for fewer fds than were sent, the kernel itself dropped the rest inside
 * recvmsg, on that thread.
 */
const RECEIVE_NOW_CASES = [
  ['seqpacket', 'larger than bufferSize'],
  ['seqpacket', 'with more fds than maxFds'],
  ['dgram', 'larger than bufferSize'],
  ['dgram', 'with more fds than maxFds'],
  ['stream', 'with more fds than maxFds'],
] as const;

(hasPython() ? test.each(RECEIVE_NOW_CASES) : test.skip.each(RECEIVE_NOW_CASES))(
  "receiveNow of a %s message %s carrying a lingering TCP socket's last reference fails with TruncatedError without the calling thread waiting in its close",
  async (kind, how) => {
    const before = openFdTable(process.pid);
    const linger = await lingeringSocket();
    const [a, b] = rawSocketPair(kind);
    try {
      const bySize = how.startsWith('larger');
      sendNow(a, Buffer.alloc(bySize ? 5000 : 1), [linger.fd]);
      closeFd(linger.fd); // the message's reference is now the only one
      expect(() => receiveNow(b, bySize ? 1024 : 65536, bySize ? 253 : 0)).toThrow(TruncatedError);
      // Expected: null. Fails with 'main thread, syscall ...: wait_woken < sk_stream_wait_close < ...'
      // (in close, or in recvmsg for the fds the kernel dropped there).
      expect(await linger.verdict()).toBeNull();
    } finally {
      closeFd(a);
      closeFd(b);
      await linger.end();
    }
    // The closer's close of the socket ended with python: nothing of the test's left.
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  60000,
);
