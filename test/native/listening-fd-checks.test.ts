/**
 * An fd handed in as a listening socket (UnixServer.fromListeningFd,
 * HelperDaemon.start's listenFd: systemd's socket activation) must be a
 * listening Unix domain socket of the kind it is served as. Anything else —
 * a file, a pipe, a TCP listener, a connected or unbound Unix socket, a
 * listener of another kind — is a TypeError (ERR_INVALID_ARG_VALUE) that
 * says what the fd is, thrown before anything is done with it: the fd stays
 * the caller's, open, its flags as they were. Generated over those fds and
 * both entry points; the jest setup checks the fd table after the test.
 */
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:net';

import fc from 'fast-check';

import { HelperDaemon } from '../../src';
import { closeFd, dupFd } from '../../src/fd';
import { UnixServer, type SocketKind } from '../../src/socket';
import { rawListen, rawSocketPair } from '../../src/testing';
import { native } from './binding';
import { abstractName, withScope } from './helpers';

type Made = { fd: number; is: RegExp; extra: number[] };

async function tcpListener(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fd = dupFd((server as unknown as { _handle: { fd: number } })._handle.fd);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return fd;
}

const WRONG = ['file', 'pipe', 'tcp listener', 'connected', 'unix listener of the other kind', 'unbound dgram'] as const;

async function make(what: (typeof WRONG)[number], kind: SocketKind): Promise<Made> {
  const other: SocketKind = kind === 'seqpacket' ? 'stream' : 'seqpacket';
  switch (what) {
    case 'file':
      return { fd: openSync('/etc/hostname', 'r'), is: /something that is not a socket/, extra: [] };
    case 'pipe': {
      const [r, w] = native.pipe();
      return { fd: r, is: /something that is not a socket/, extra: [w] };
    }
    case 'tcp listener':
      return { fd: await tcpListener(), is: /another family than AF_UNIX \(stream\)/, extra: [] };
    case 'connected': {
      const [a, b] = rawSocketPair(kind);
      return { fd: a, is: new RegExp(`a ${kind} socket that is not listening`), extra: [b] };
    }
    case 'unix listener of the other kind':
      return { fd: rawListen(other, abstractName('wrong-kind'), { abstract: true }), is: new RegExp(`not a ${other} socket`), extra: [] };
    case 'unbound dgram': {
      const [a, b] = rawSocketPair('dgram');
      return { fd: a, is: /not a dgram socket/, extra: [b] };
    }
  }
}

describe('an fd handed in as a listening socket', () => {
  test('generated: anything but a listening Unix socket of the kind asked is a TypeError saying what it is; the fd stays the caller\'s', () =>
    fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...WRONG),
        fc.constantFrom<SocketKind>('seqpacket', 'stream'),
        fc.constantFrom('fromListeningFd', 'HelperDaemon listenFd'),
        async (what, kind, entry) => {
          // The helper daemon serves seqpacket only.
          const asKind: SocketKind = entry === 'HelperDaemon listenFd' ? 'seqpacket' : kind;
          const made = await make(what, asKind);
          try {
            const flags = native.getFlags(made.fd);
            let err: unknown;
            try {
              if (entry === 'fromListeningFd') UnixServer.fromListeningFd(made.fd, '@unused', { kind: asKind }).close();
              else await HelperDaemon.start({ listenFd: made.fd, socketPath: '@unused' }).close();
            } catch (e) {
              err = e;
            }
            expect(err).toBeInstanceOf(TypeError);
            expect((err as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
            expect((err as Error).message).toMatch(new RegExp(`^fromListeningFd: fd ${made.fd} must be a listening Unix domain ${asKind} socket`));
            expect((err as Error).message).toMatch(made.is);
            expect(native.getFlags(made.fd)).toBe(flags); // untouched: not made non-blocking or close-on-exec
          } finally {
            closeSync(made.fd); // still open: the caller's to close
            for (const fd of made.extra) closeFd(fd);
          }
        },
      ),
      { numRuns: 40 },
    ));

  test.each<SocketKind>(['seqpacket', 'stream'])('a listening %s socket of the kind asked is served', (kind) =>
    withScope(async () => {
      const name = abstractName('right-kind');
      const server = UnixServer.fromListeningFd(rawListen(kind, name, { abstract: true }), `@${name}`, { kind });
      try {
        expect(server.kind).toBe(kind);
      } finally {
        server.close();
      }
    }));
});
