/**
 * DatagramSocket.sendTo to a path where nothing can receive a datagram.
 * Linux answers a path that names no socket (a regular file, a directory, a
 * FIFO, a device, through a symlink too) with ECONNREFUSED, as it answers a
 * socket file nobody is bound to any more, and a stream or seqpacket socket
 * with EPROTOTYPE. The error keeps the kernel's code, errno and syscall and
 * says which it was: before, a file or a directory read "nobody is bound at
 * ... any more (the receiver closed its socket or died)" and a stream
 * socket "EPROTOTYPE (system error)".
 *
 * Generated: the target (each kind above, and a socket file left by a
 * closed datagram socket), with or without fds, whenFull 'wait' or 'fail',
 * and whether the sender is bound. The jest setup checks the open-fd table
 * after every test; nothing may be queued.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src/datagram';
import { constants, native } from './binding';
import { expectSystemError, rejection, withScope } from './helpers';

type Target = 'file' | 'directory' | 'fifo' | 'char device' | 'symlink to a file' | 'stream socket' | 'seqpacket socket' | 'stale datagram socket';

/** What the kernel answers and what the message must say, by target. */
const EXPECTED: Record<Target, { code: string; says: RegExp }> = {
  file: { code: 'ECONNREFUSED', says: /is a regular file, not a socket/ },
  directory: { code: 'ECONNREFUSED', says: /is a directory, not a socket/ },
  fifo: { code: 'ECONNREFUSED', says: /is a named pipe \(FIFO\), not a socket/ },
  'char device': { code: 'ECONNREFUSED', says: /is a character device, not a socket/ },
  'symlink to a file': { code: 'ECONNREFUSED', says: /is a regular file, not a socket/ },
  'stream socket': { code: 'EPROTOTYPE', says: /is not a datagram socket/ },
  'seqpacket socket': { code: 'EPROTOTYPE', says: /is not a datagram socket/ },
  'stale datagram socket': { code: 'ECONNREFUSED', says: /nobody is bound at .* any more/ },
};

test('generated targets: sendTo a path where no datagram socket is bound says what the path is, with the kernel code', () =>
  fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...(Object.keys(EXPECTED) as Target[])),
      fc.boolean(),
      fc.constantFrom('wait' as const, 'fail' as const),
      fc.boolean(),
      (target, withFds, whenFull, bound) =>
        withScope(async (s) => {
          const dir = s.dir();
          const path = join(dir, 'target');
          if (target === 'file') writeFileSync(path, 'x');
          if (target === 'directory') mkdirSync(path);
          if (target === 'fifo') execFileSync('mkfifo', [path]);
          if (target === 'char device') symlinkSync('/dev/null', path);
          if (target === 'symlink to a file') {
            writeFileSync(join(dir, 'file'), 'x');
            symlinkSync(join(dir, 'file'), path);
          }
          if (target === 'stream socket' || target === 'seqpacket socket') {
            const fd = native.listen(target === 'stream socket' ? constants.SOCK_STREAM : constants.SOCK_SEQPACKET, path, false, 0o600, 1);
            s.defer(() => native.close(fd));
          }
          if (target === 'stale datagram socket') native.close(native.listen(constants.SOCK_DGRAM, path, false, 0o600, 0));
          const tx = s.add(bound ? DatagramSocket.bind(join(dir, 'tx.sock')) : DatagramSocket.open());
          const err = await rejection(tx.sendTo(path, Buffer.from('x'), withFds ? [tx.fd] : [], { whenFull }));
          const { code, says } = EXPECTED[target];
          expectSystemError(err, code, 'sendto');
          expect((err as Error).message).toMatch(says);
          expect((err as Error).message).toContain(path);
          expect(tx.queuedSends).toBe(0);
        }),
    ),
    { numRuns: 40 },
  ));
