/**
 * A datagram's `from` is the sender's bound name exactly (README, Datagram
 * sockets bound to a name): replying to it reaches that sender, with its
 * fds. A name that is not UTF-8 was decoded lossily (each bad byte U+FFFD),
 * so the reply went to whoever bound the decoded name, which for an
 * abstract name is any local user. Now a name whose bytes are UTF-8 stays a
 * string, any other is its bytes (a Buffer), and sendTo takes it back.
 *
 * Generated: the name's bytes (any, invalid UTF-8 and UTF-8's edge forms among them), abstract or a
 * path; the sender is Python bound at that name; a decoy is bound at the
 * lossy decoding whenever that differs, and must get nothing.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket, isRelativeSenderName, type SenderAddress, type SocketAddress } from '../../src';
import { closeFds, diffFdTables, makeMemfd, openFdTable } from '../../src/fd';
import { exitOf } from '../util/processes';
import { scaled } from '../util/time-scale';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-from-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Binds at argv[1] (hex), sends to argv[2] (hex), prints what comes back: its data and what its first fd holds.
const SENDER = `
import array, json, os, socket, sys
name, svc = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(name)
try:
    s.sendto(b'request', svc)
    s.settimeout(float(sys.argv[3]))
    try:
        data, anc, _, _ = s.recvmsg(100, socket.CMSG_SPACE(4 * 8))
    except socket.timeout:
        print(json.dumps(None)); sys.exit(0)
    fds = array.array('i')
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(d[:len(d) - len(d) % 4])
    held = os.pread(fds[0], 100, 0).decode() if fds else None
    for fd in fds: os.close(fd)
    print(json.dumps({'data': data.decode(), 'fds': len(fds), 'held': held}))
finally:
    s.close()
    if name[:1] != b'\\0': os.unlink(name)
`;

function isUtf8(bytes: Buffer): boolean {
  return Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes);
}

function sameAddress(a: SenderAddress | null, b: SocketAddress): boolean {
  const bytesOf = (x: string | Uint8Array): Buffer => (typeof x === 'string' ? Buffer.from(x) : Buffer.from(x));
  if (a === null || isRelativeSenderName(a)) return false;
  const flat = (x: SocketAddress): [boolean, string | Uint8Array] => (typeof x === 'string' || x instanceof Uint8Array ? [false, x] : [true, x.abstract]);
  const [aa, an] = flat(a);
  const [ba, bn] = flat(b);
  return aa === ba && typeof an === typeof bn && bytesOf(an).equals(bytesOf(bn));
}

/**
 * Name bytes: random ones, and pieces at UTF-8's edges (overlong forms, surrogates, past U+10FFFF, truncated
 * sequences; and the last valid forms, U+FFFD itself among them), which a decoder that is not strict gets wrong.
 */
const EDGES = [
  [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xe0, 0x9f, 0xbf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf0, 0x8f, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff], [0x80], [0xe2, 0x82], [0xf0, 0x9f, 0x98],
  [0xc2, 0x80], [0xdf, 0xbf], [0xe0, 0xa0, 0x80], [0xed, 0x9f, 0xbf], [0xee, 0x80, 0x80], [0xef, 0xbf, 0xbd], [0xf0, 0x90, 0x80, 0x80], [0xf4, 0x8f, 0xbf, 0xbf],
];
const anyBytes = fc
  .array(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 6 }), fc.constantFrom(...EDGES).map((e) => Uint8Array.from(e))), { minLength: 1, maxLength: 6 })
  .map((parts) => Uint8Array.from(parts.flatMap((p) => [...p])));

let run = 0;
test('generated: replying to `from` reaches exactly the sender bound at that name (any bytes), with its fds; a decoy at the lossy name gets nothing', async () => {
  await fc.assert(
    fc.asyncProperty(fc.boolean(), anyBytes, async (abstract, raw) => {
      const n = run++;
      const tail = Buffer.from(raw);
      // A path's last component: no '/' and no NUL (a path ends at its first NUL), never '.' or '..'.
      const pathTail = Buffer.from(raw.map((b) => (b === 0 || b === 0x2f ? 0x5f : b)));
      const nameBytes = abstract
        ? Buffer.concat([Buffer.from(`fdbridge-from-${process.pid}-${n}-`), tail])
        : Buffer.concat([Buffer.from(join(dir, `c${n}-`)), pathTail]);
      const exact: SocketAddress = abstract ? (isUtf8(nameBytes) ? { abstract: nameBytes.toString() } : { abstract: nameBytes }) : isUtf8(nameBytes) ? nameBytes.toString() : nameBytes;
      const lossy = nameBytes.toString('utf8');
      const before = openFdTable();
      const service = DatagramSocket.bind(abstract ? { abstract: `fdbridge-from-svc-${process.pid}-${n}` } : join(dir, `svc${n}`));
      const decoy = isUtf8(nameBytes) ? undefined : DatagramSocket.bind(abstract ? { abstract: lossy } : lossy);
      const memfd = makeMemfd();
      writeSync(memfd, `for sender ${n}`);
      const svcBytes = typeof service.address === 'string' ? Buffer.from(service.address) : Buffer.concat([Buffer.from([0]), Buffer.from((service.address as { abstract: string }).abstract)]);
      const child = spawn('/usr/bin/python3', ['-c', SENDER, (abstract ? Buffer.concat([Buffer.from([0]), nameBytes]) : nameBytes).toString('hex'), svcBytes.toString('hex'), String(scaled(30000) / 1000)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      try {
        const d = await service.receive();
        expect(d.data.toString()).toBe('request');
        await service.sendTo(d.from as SocketAddress, Buffer.from('reply'), [memfd]);
        if (decoy !== undefined) {
          await service.sendTo(decoy.address as SocketAddress, Buffer.from('marker'), []);
          const got = await decoy.receive();
          closeFds(got.fds);
          expect([got.data.toString(), got.fds.length]).toEqual(['marker', 0]);
        }
        expect(await exitOf(child)).toEqual({ code: 0, signal: null });
        expect(JSON.parse(out)).toEqual({ data: 'reply', fds: 1, held: `for sender ${n}` });
        // A string exactly when the name is UTF-8, else its bytes.
        expect(sameAddress(d.from, exact)).toBe(true);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        await exitOf(child);
        // Its stdout (a socket pair's end) is closed after 'exit', on its own 'close'.
        if (!child.stdout.destroyed) await new Promise((resolve) => child.stdout.once('close', resolve));
        closeFds([memfd]);
        await service.close();
        await decoy?.close();
      }
      // Nothing this run opened is left open (an fd open before it, of an earlier test's, may close meanwhile).
      expect(diffFdTables(before, openFdTable()).opened).toEqual([]);
    }),
    { numRuns: 40 },
  );
});

test('a Buffer name and its string are the same address: bind, sendTo and `from` agree whichever form is given', async () => {
  const before = openFdTable();
  const name = `fdbridge-from-forms-${process.pid}`;
  const a = DatagramSocket.bind({ abstract: Buffer.from(name) });
  const b = DatagramSocket.bind(Buffer.from(join(dir, 'forms.sock')));
  try {
    expect(b.address).toBe(join(dir, 'forms.sock'));
    await a.sendTo(Buffer.from(join(dir, 'forms.sock')), Buffer.from('x'));
    const d = await b.receive();
    expect(d.from).toEqual({ abstract: name });
    await b.sendTo({ abstract: Buffer.from(name) }, Buffer.from('y'));
    expect((await a.receive()).from).toBe(join(dir, 'forms.sock'));
    expect(() => DatagramSocket.bind(Buffer.from([0x2f, 0x74, 0xff]))).toThrow(TypeError);
  } finally {
    await a.close();
    await b.close();
  }
  expect(openFdTable()).toEqual(before);
});
