/**
 * A sender that is not fdbridge (Python here) may bind a relative path in
 * its own working directory. The kernel reports that name as it was bound
 * and not the directory, so a receiver that took `from` as a path resolved
 * it against its own directory: its reply, fds included, went to another
 * socket there. Now such a `from` is `{ relative: name }` (a string when
 * the name is UTF-8, else a Buffer), which sendTo, bind and
 * UnixSocket.connect refuse with a TypeError saying why; nothing is sent.
 *
 * Generated: the relative name (its components' bytes, `./` before it or
 * not), the way the datagram is read (receive() or a message handler). A
 * decoy bound at the same relative name in the receiver's working directory
 * must get nothing, and the sender nothing before the marker sent to its
 * absolute path afterwards.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, isRelativeSenderName, UnixSocket, type Datagram, type SenderAddress, type SocketAddress } from '../../src';
import { closeFds, diffFdTables, makeMemfd, openFdTable } from '../../src/fd';
import { exitOf } from '../util/processes';
import { errorOf, escaped, expectNothingBefore } from '../util/socket-names';
import { scaled } from '../util/time-scale';

let base: string;
const cwd = process.cwd();
beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'fdbridge-attack-relfrom-'));
});
afterAll(() => {
  process.chdir(cwd);
  rmSync(base, { recursive: true, force: true });
});

// In argv[1] (its own working directory) binds the relative name argv[2] (hex), sends to argv[3], prints the first datagram that comes back.
const SENDER = `
import array, json, os, socket, sys
os.chdir(sys.argv[1])
name = bytes.fromhex(sys.argv[2])
d = os.path.dirname(name)
if d: os.makedirs(d, exist_ok=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(name)
try:
    s.sendto(b'request', sys.argv[3].encode())
    s.settimeout(float(sys.argv[4]))
    try:
        data, anc, _, _ = s.recvmsg(100, socket.CMSG_SPACE(4 * 8))
    except socket.timeout:
        print(json.dumps(None)); sys.exit(0)
    fds = array.array('i')
    for level, kind, b in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(b[:len(b) - len(b) % 4])
    for fd in fds: os.close(fd)
    print(json.dumps({'data': data.decode(), 'fds': len(fds)}))
finally:
    s.close()
    os.unlink(name)
`;

function isUtf8(bytes: Buffer): boolean {
  return Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes);
}

/** The TypeError's message for a relative sender's name (as messages give it). */
function refusal(shown: string): string {
  return (
    `a sender bound at the relative path ${shown} cannot be answered: the kernel reports the path as it was bound, ` +
    "relative to the sender's working directory, and not that directory (resolved here it would name another socket); " +
    'the sender must bind an absolute path or an abstract name'
  );
}

// A path component: any bytes but '/' and NUL, never '.' or '..'.
const component = fc
  .uint8Array({ minLength: 1, maxLength: 10 })
  .map((raw) => Buffer.from(raw.map((b) => (b === 0 || b === 0x2f ? 0x5f : b))))
  .filter((c) => c.toString('latin1') !== '.' && c.toString('latin1') !== '..');
const relativeName = fc
  .tuple(fc.boolean(), fc.array(component, { minLength: 1, maxLength: 2 }))
  .map(([dot, parts]) => Buffer.concat([Buffer.from(dot ? './' : ''), ...parts.flatMap((p, i) => (i === 0 ? [p] : [Buffer.from('/'), p]))]));

let run = 0;
test('generated: a sender bound at a relative path is `from: { relative }`, which sendTo refuses (TypeError): no reply reaches the same name here', async () => {
  await fc.assert(
    fc.asyncProperty(relativeName, fc.boolean(), async (name, handler) => {
      const n = run++;
      const senderDir = join(base, `s${n}`);
      const recvDir = join(base, `r${n}`);
      mkdirSync(senderDir, { mode: 0o700 });
      mkdirSync(recvDir, { mode: 0o700 });
      const utf8 = isUtf8(name);
      const before = openFdTable();
      const memfd = makeMemfd();
      writeSync(memfd, 'secret');
      process.chdir(recvDir);
      const service = DatagramSocket.bind(join(recvDir, 'svc.sock'));
      // The same relative name in the receiver's working directory (bind makes the parent directory, 0700).
      const decoy = utf8 ? DatagramSocket.bind(join(recvDir, name.toString())) : undefined;
      const child = spawn('/usr/bin/python3', ['-c', SENDER, senderDir, name.toString('hex'), join(recvDir, 'svc.sock'), String(scaled(30000) / 1000)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      try {
        const d = handler
          ? await new Promise<Datagram>((resolve) => service.setMessageHandler((_err, got) => got && resolve(got)))
          : await service.receive();
        expect(d.data.toString()).toBe('request');
        const from = d.from as SenderAddress;
        expect(from).toEqual({ relative: utf8 ? name.toString() : name });
        expect(typeof (from as { relative: unknown }).relative === 'string').toBe(utf8);
        expect(isRelativeSenderName(from)).toBe(true);
        const message = refusal(utf8 ? name.toString() : escaped(name));
        const refused = await service.sendTo(from as SocketAddress, Buffer.from('reply'), [memfd]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(refused).toBeInstanceOf(TypeError);
        expect((refused as Error).message).toBe(message);
        const connectRefused = await UnixSocket.connect(from as SocketAddress, { kind: 'dgram' }).then(
          (s) => s.close(),
          (e: unknown) => e,
        );
        expect(connectRefused).toBeInstanceOf(TypeError);
        expect((connectRefused as Error).message).toBe(message);
        const bindRefused = errorOf(() => DatagramSocket.bind(from as SocketAddress).close());
        expect(bindRefused).toBeInstanceOf(TypeError);
        expect((bindRefused as Error).message).toBe(message);
        // What each gets first is the marker sent to it by its absolute name after the refusal.
        if (decoy !== undefined) await expectNothingBefore(service, decoy);
        await service.sendTo(Buffer.concat([Buffer.from(`${senderDir}/`), name]), Buffer.from('marker'));
        expect(await exitOf(child)).toEqual({ code: 0, signal: null });
        expect(JSON.parse(out)).toEqual({ data: 'marker', fds: 0 });
      } finally {
        process.chdir(cwd);
        if (child.exitCode === null) child.kill('SIGKILL');
        await exitOf(child);
        // Its stdout (a socket pair's end) is closed after 'exit', on its own 'close'.
        if (!child.stdout.destroyed) await new Promise((resolve) => child.stdout.once('close', resolve));
        closeFds([memfd]);
        service.close();
        decoy?.close();
      }
      // Nothing this run opened is left open (an fd open before it, of an earlier test's, may close meanwhile).
      expect(diffFdTables(before, openFdTable()).opened).toEqual([]);
    }),
    { numRuns: 30 },
  );
});

test('a relative name given as `from` is refused whichever form its name has, before any name is looked at', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  try {
    for (const relative of ['rel.sock', Buffer.from('rel\xff.sock', 'latin1'), 'x'.repeat(200)]) {
      const e = await sender.sendTo({ relative } as unknown as SocketAddress, Buffer.from('x')).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(TypeError);
      expect((e as Error).message).toBe(refusal(typeof relative === 'string' ? relative : escaped(relative)));
      expect(isRelativeSenderName({ relative })).toBe(true);
    }
    // `relative` with no name is no form at all: refused as an object with a key beside `abstract`.
    for (const relative of [5, null, undefined, ['rel.sock']]) {
      const e = await sender.sendTo({ relative } as unknown as SocketAddress, Buffer.from('x')).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(TypeError);
      expect((e as Error).message).toBe('a socket address is a path (a string or a Uint8Array) or { abstract: name } and nothing else, not an object with "relative"');
    }
    // Every other form `from` takes is an address to answer.
    for (const from of ['/a.sock', 'rel.sock', Buffer.from('/a\xff', 'latin1'), { abstract: 'x' }, { abstract: Buffer.from([0xff]) }]) {
      expect(isRelativeSenderName(from)).toBe(false);
    }
  } finally {
    sender.close();
  }
  expect(openFdTable()).toEqual(before);
});
