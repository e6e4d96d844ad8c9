/**
 * Reading the fd recorders' files (fdOrigin): what names the call that made
 * a leaked fd, and what must not. A record counts only if it names the fd's
 * target now (a number reused by a call no recorder saw is never blamed on
 * its previous owner); the last record of an fd wins; a torn line or a
 * foreign file is ignored. Real records come from a child process run with
 * trackingEnvironment (the JS recorder and the LD_PRELOAD interposer);
 * edge cases from files written here.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describeFdOrigin, fdOrigin, fdtrackLibrary, trackingEnvironment } from '../../src/fd-track';
import { packageRoot } from '../../src/paths';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-origin-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('trackingEnvironment', () => {
  const preload = JSON.stringify(join(packageRoot, 'dist', 'src', 'fd-track-preload.js'));

  test('the directory, the JS recorder after any NODE_OPTIONS, the interposer before any LD_PRELOAD', () => {
    expect(trackingEnvironment('/d', '/lib/fdtrack.so', { NODE_OPTIONS: '--max-old-space-size=100', LD_PRELOAD: '/other.so' })).toEqual({
      FDBRIDGE_FDTRACK_DIR: '/d',
      NODE_OPTIONS: `--max-old-space-size=100 --require ${preload}`,
      LD_PRELOAD: '/lib/fdtrack.so:/other.so',
    });
  });

  test('nothing to add to: no leading space, no trailing colon; no library: no LD_PRELOAD at all', () => {
    expect(trackingEnvironment('/d', '/lib/fdtrack.so', {})).toEqual({
      FDBRIDGE_FDTRACK_DIR: '/d',
      NODE_OPTIONS: `--require ${preload}`,
      LD_PRELOAD: '/lib/fdtrack.so',
    });
    expect(trackingEnvironment('/d', undefined, { LD_PRELOAD: '/other.so' })).toEqual({
      FDBRIDGE_FDTRACK_DIR: '/d',
      NODE_OPTIONS: `--require ${preload}`,
    });
  });
});

describe('describeFdOrigin', () => {
  test('no origin: one line saying no recorder saw it', () => {
    expect(describeFdOrigin(undefined)).toEqual(['    opened by a call --track-fds did not see (no record for this fd)']);
    expect(describeFdOrigin(undefined, '>')).toEqual(['>opened by a call --track-fds did not see (no record for this fd)']);
  });

  test('the call, then native frames, then JS frames, indented', () => {
    expect(describeFdOrigin({ call: 'fs.openSync', native: ['open (a.cc:1)'], js: ['f (x.js:2:3)', 'g (y.js:4:5)'] }, '  ')).toEqual([
      '  opened by fs.openSync',
      '    native: open (a.cc:1)',
      '    at f (x.js:2:3)',
      '    at g (y.js:4:5)',
    ]);
    expect(describeFdOrigin({ call: 'open' })).toEqual(['    opened by open']);
  });

  test('an unconfirmed origin says, on its first line, what could have opened the fd instead', () => {
    expect(describeFdOrigin({ call: 'fs.openSync', js: ['f (x.js:2:3)'], unconfirmed: true }, '  ')).toEqual([
      '  opened by fs.openSync, unless a close --track-fds cannot see (by a thread it does not record, or by native code) freed this number after that and a call it did not see put the same file here again',
      '    at f (x.js:2:3)',
    ]);
  });

  test("'unseen' (how results.json keeps a leak with no record) reads as no record, not as a call of that name", () => {
    expect(describeFdOrigin({ call: 'unseen' })).toEqual(['    opened by a call --track-fds did not see (no record for this fd)']);
    expect(describeFdOrigin({ call: 'unseen' }, '>')).toEqual(['>opened by a call --track-fds did not see (no record for this fd)']);
  });
});

describe('JS records', () => {
  const line = (r: object): string => `${JSON.stringify(r)}\n`;

  test('the last record of the fd with the same target wins; another fd number (even a prefix) is not it', () => {
    writeFileSync(
      join(dir, 'js-100.log'),
      line({ fd: 12, target: '/t', call: 'fs.openSync', stack: ['other (o.js:1:1)'] }) +
        line({ fd: 1, target: '/t', call: 'fs.open', stack: ['first (a.js:1:1)'] }) +
        line({ fd: 1, target: '/t', call: 'fs.openSync', stack: ['second (b.js:2:2)'] }),
    );
    expect(fdOrigin(dir, 100, 1, '/t')).toEqual({ call: 'fs.openSync', js: ['second (b.js:2:2)'], unconfirmed: true });
    expect(fdOrigin(dir, 100, 12, '/t')).toEqual({ call: 'fs.openSync', js: ['other (o.js:1:1)'], unconfirmed: true });
    // Another pid's log, or none: not seen.
    expect(fdOrigin(dir, 101, 1, '/t')).toBeUndefined();
  });

  test('every JS record is unconfirmed, of a socket or a pipe too (a dup or a received fd can put its inode at a freed number)', () => {
    const targets = ['/f', '/memfd:m (deleted)', 'anon_inode:[eventfd]', 'socket:[77]', 'pipe:[78]', 'socket:[77] ', 'xpipe:[78]'];
    writeFileSync(join(dir, 'js-100.log'), targets.map((target, fd) => line({ fd, target, call: 'fs.openSync', stack: [] })).join(''));
    expect(targets.map((target, fd) => fdOrigin(dir, 100, fd, target)?.unconfirmed ?? false)).toEqual([true, true, true, true, true, true, true]);
  });

  test('a later record of the fd naming another target means the number was reused: not this one', () => {
    writeFileSync(
      join(dir, 'js-100.log'),
      line({ fd: 5, target: '/leaked', call: 'fs.openSync', stack: [] }) + line({ fd: 5, target: '/other', call: 'net.Socket.connect', stack: [] }),
    );
    expect(fdOrigin(dir, 100, 5, '/leaked')).toBeUndefined();
    expect(fdOrigin(dir, 100, 5, '/other')).toEqual({ call: 'net.Socket.connect', js: [], unconfirmed: true });
  });

  test('a close recorded after an open ends it: a later open of the number by a call no recorder saw is not blamed on it', () => {
    writeFileSync(
      join(dir, 'js-100.log'),
      line({ fd: 5, target: '/a', call: 'fs.openSync', stack: ['first (a.js:1:1)'] }) +
        line({ fd: 5, closed: true }) +
        line({ fd: 6, target: '/b', call: 'fs.openSync', stack: ['kept (b.js:1:1)'] }) +
        line({ fd: 7, target: '/c', call: 'fs.open', stack: [] }) +
        line({ fd: 7, closed: true }) +
        line({ fd: 7, target: '/c', call: 'fs.promises.open', stack: ['again (c.js:1:1)'] }),
    );
    expect(fdOrigin(dir, 100, 5, '/a')).toBeUndefined();
    // Another fd's close ends nothing of this one's.
    expect(fdOrigin(dir, 100, 6, '/b')).toEqual({ call: 'fs.openSync', js: ['kept (b.js:1:1)'], unconfirmed: true });
    // Opened again after the close, by a call that was recorded: that call.
    expect(fdOrigin(dir, 100, 7, '/c')).toEqual({ call: 'fs.promises.open', js: ['again (c.js:1:1)'], unconfirmed: true });
  });

  test('a refused close (kept) after a close gives back what that close ended; a close after it ends it again', () => {
    writeFileSync(
      join(dir, 'js-100.log'),
      line({ fd: 5, target: '/a', call: 'fs.openSync', stack: ['first (a.js:1:1)'] }) +
        line({ fd: 5, closed: true }) +
        line({ fd: 6, target: '/b', call: 'fs.openSync', stack: [] }) +
        line({ fd: 5, kept: true }) +
        line({ fd: 7, target: '/c', call: 'fs.openSync', stack: [] }) +
        line({ fd: 7, closed: true }) +
        line({ fd: 7, kept: true }) +
        line({ fd: 7, closed: true }) +
        line({ fd: 8, target: '/d', call: 'fs.openSync', stack: [] }) +
        line({ fd: 8, closed: true }) +
        line({ fd: 8, closed: true }) +
        line({ fd: 8, kept: true }),
    );
    expect(fdOrigin(dir, 100, 5, '/a')).toEqual({ call: 'fs.openSync', js: ['first (a.js:1:1)'], unconfirmed: true });
    expect(fdOrigin(dir, 100, 7, '/c')).toBeUndefined();
    // Refused, the second close of a closed fd gives back nothing: the first one's close stands.
    expect(fdOrigin(dir, 100, 8, '/d')).toBeUndefined();
  });

  test('a record that names no call (not written by the recorder) still gives its stack, under a call of "?", or the native record\'s call', () => {
    writeFileSync(join(dir, 'js-100.log'), line({ fd: 5, target: '/a', stack: ['f (f.js:1:1)'] }) + line({ fd: 6, target: '/b', stack: [] }));
    expect(fdOrigin(dir, 100, 5, '/a')).toEqual({ call: '?', js: ['f (f.js:1:1)'], unconfirmed: true });
    nativeFile(100, { records: [{ fd: 6, kind: 3, target: '/b' }] });
    expect(fdOrigin(dir, 100, 6, '/b')).toEqual({ call: 'accept', js: [], unconfirmed: true });
    expect(describeFdOrigin(fdOrigin(dir, 100, 5, '/a'))).toEqual([
      '    opened by ?, unless a close --track-fds cannot see (by a thread it does not record, or by native code) freed this number after that and a call it did not see put the same file here again',
      '      at f (f.js:1:1)',
    ]);
  });

  test('a line cut short (a crash while writing) is skipped, and the records around it still count', () => {
    writeFileSync(
      join(dir, 'js-100.log'),
      line({ fd: 5, target: '/a', call: 'fs.openSync', stack: ['kept (k.js:1:1)'] }) + '{"fd":5,"target":"/a","call":"fs.op\n',
    );
    expect(fdOrigin(dir, 100, 5, '/a')).toEqual({ call: 'fs.openSync', js: ['kept (k.js:1:1)'], unconfirmed: true });
  });
});

// native/fdtrack/fdtrack.c's file, written here (little-endian, as on x86-64 and aarch64).
const MODULE_PATH = 240;
const MODULES = 128;
const HEADER = 24 + MODULES * MODULE_PATH + MODULES * 8;
const TARGET = 200;

function nativeFile(pid: number, opts: {
  magic?: string;
  maxFds?: number;
  nframes?: number;
  modules?: string[];
  records: Array<{ fd: number; kind: number; target: string; frames?: Array<[number, bigint]>; stamp?: bigint; count?: number }>;
}): void {
  const maxFds = opts.maxFds ?? 16;
  const nframes = opts.nframes ?? 4;
  const recordSize = 16 + TARGET + nframes * 16;
  const buf = Buffer.alloc(HEADER + maxFds * recordSize);
  buf.write(opts.magic ?? 'fdtrack1', 0, 'latin1');
  buf.writeUInt32LE(maxFds, 8);
  buf.writeUInt32LE(nframes, 12);
  const modules = opts.modules ?? [];
  buf.writeUInt32LE(modules.length, 16);
  modules.forEach((m, i) => buf.write(m, 24 + i * MODULE_PATH, 'utf8'));
  for (const r of opts.records) {
    const at = HEADER + r.fd * recordSize;
    const frames = r.frames ?? [];
    buf.writeBigUInt64LE(r.stamp ?? 1n, at);
    buf.writeUInt32LE(r.count ?? frames.length, at + 8);
    buf.writeUInt32LE(r.kind, at + 12);
    buf.write(r.target, at + 16, 'utf8');
    frames.forEach(([module, offset], i) => {
      buf.writeUInt32LE(module, at + 16 + TARGET + i * 16);
      buf.writeBigUInt64LE(offset, at + 16 + TARGET + i * 16 + 8);
    });
  }
  writeFileSync(join(dir, `native-${pid}.bin`), buf);
}

describe('native records', () => {
  test('the kind names the call; recvmsg says the fd was received; an unknown kind is still an fd-making call', () => {
    nativeFile(200, {
      records: [
        { fd: 3, kind: 0, target: '/a' },
        { fd: 4, kind: 13, target: 'socket:[1]' },
        { fd: 5, kind: 15, target: 'anon_inode:[pidfd]' },
        { fd: 6, kind: 99, target: '/b' },
        { fd: 7, kind: 8, target: '/memfd:x (deleted)' },
      ],
    });
    expect(fdOrigin(dir, 200, 3, '/a')).toEqual({ call: 'open' });
    expect(fdOrigin(dir, 200, 4, 'socket:[1]')).toEqual({ call: 'recvmsg (received over a Unix socket)' });
    expect(fdOrigin(dir, 200, 5, 'anon_inode:[pidfd]')).toEqual({ call: 'pidfd_getfd' });
    expect(fdOrigin(dir, 200, 6, '/b')).toEqual({ call: 'an fd-making call' });
    expect(fdOrigin(dir, 200, 7, '/memfd:x (deleted)')).toEqual({ call: 'memfd_create' });
  });

  test('no record: an empty slot, another target, an fd past the file, a foreign or short file', () => {
    nativeFile(200, { maxFds: 8, records: [{ fd: 3, kind: 0, target: '/a' }, { fd: 4, kind: 0, target: '/z', stamp: 0n }] });
    expect(fdOrigin(dir, 200, 2, '/a')).toBeUndefined();
    expect(fdOrigin(dir, 200, 3, '/other')).toBeUndefined();
    expect(fdOrigin(dir, 200, 4, '/z')).toBeUndefined();
    expect(fdOrigin(dir, 200, 8, '/a')).toBeUndefined();
    expect(fdOrigin(dir, 200, 7, '')).toBeUndefined();
    nativeFile(201, { magic: 'fdtrack2', records: [{ fd: 3, kind: 0, target: '/a' }] });
    expect(fdOrigin(dir, 201, 3, '/a')).toBeUndefined();
    writeFileSync(join(dir, 'native-202.bin'), Buffer.from('fdtrack1'));
    expect(fdOrigin(dir, 202, 0, '')).toBeUndefined();
    // A record cut short at the end of the file.
    nativeFile(203, { maxFds: 4, records: [{ fd: 3, kind: 0, target: '/a' }] });
    const whole = readFileSync(join(dir, 'native-203.bin'));
    writeFileSync(join(dir, 'native-203.bin'), whole.subarray(0, whole.length - 1));
    expect(fdOrigin(dir, 203, 3, '/a')).toBeUndefined();
  });

  test('a target as long as the field (no NUL) is compared whole', () => {
    const long = `/${'x'.repeat(TARGET - 1)}`;
    nativeFile(200, { records: [{ fd: 3, kind: 0, target: long }] });
    expect(fdOrigin(dir, 200, 3, long)).toEqual({ call: 'open' });
    expect(fdOrigin(dir, 200, 3, long.slice(0, -1))).toBeUndefined();
  });

  test('a target as long as the field is read up to the field\'s end: not into the frames after it, nor lost at the end of the record', () => {
    const long = `/${'y'.repeat(TARGET - 1)}`;
    // The first frame's module number right after the field: its bytes are not NUL.
    nativeFile(200, { modules: ['/opt/lib/libwork.so'], records: [{ fd: 3, kind: 0, target: long, frames: [[0x41414141, 16n]] }] });
    expect(fdOrigin(dir, 200, 3, long)).toEqual({ call: 'open' });
    expect(fdOrigin(dir, 200, 3, `${long}AAAA`)).toBeUndefined();
    // No frames: the record ends with the field, and no NUL follows it.
    nativeFile(201, { nframes: 0, maxFds: 4, records: [{ fd: 3, kind: 0, target: long }] });
    expect(fdOrigin(dir, 201, 3, long)).toEqual({ call: 'open' });
    expect(fdOrigin(dir, 201, 3, '')).toBeUndefined();
  });

  test('frames: the C library and the recorder are skipped at the top; the Node binary, JIT code or a runtime frame after the caller end the list', () => {
    const modules = [
      '/usr/lib/x86_64-linux-gnu/libc.so.6',
      '/opt/lib/libfdtrack.so',
      '/nowhere/addon-a.node',
      '/nowhere/addon-b.node',
      '/usr/bin/node',
      '/lib64/ld-linux-x86-64.so.2',
    ];
    nativeFile(200, {
      nframes: 6,
      modules,
      records: [
        // libc, recorder, a, b, node, a: the list is a, b.
        { fd: 3, kind: 0, target: '/a', frames: [[1, 0x10n], [2, 0x20n], [3, 0x1235n], [4, 0x10n], [5, 0x99n], [3, 0x50n]] },
        // a, then JIT code (no module): just a.
        { fd: 4, kind: 0, target: '/b', frames: [[3, 0x40n], [0, 0x1n], [4, 0x50n]] },
        // a, libc again: the list ends at the runtime frame.
        { fd: 5, kind: 0, target: '/c', frames: [[3, 0x40n], [6, 0x1n], [4, 0x50n]] },
        // only runtime frames: no native list at all.
        { fd: 6, kind: 0, target: '/d', frames: [[1, 0x40n], [5, 0x1n]] },
        // more frames claimed than the file holds: only those it holds.
        { fd: 7, kind: 0, target: '/e', frames: [[3, 0x40n], [4, 0x41n], [3, 0x42n], [4, 0x43n], [3, 0x44n], [4, 0x45n]], count: 60 },
      ],
    });
    // The modules do not exist: addr2line fails and each frame is module+offset.
    expect(fdOrigin(dir, 200, 3, '/a')).toEqual({ call: 'open', native: ['addon-a.node+0x1235', 'addon-b.node+0x10'] });
    expect(fdOrigin(dir, 200, 4, '/b')).toEqual({ call: 'open', native: ['addon-a.node+0x40'] });
    expect(fdOrigin(dir, 200, 5, '/c')).toEqual({ call: 'open', native: ['addon-a.node+0x40'] });
    expect(fdOrigin(dir, 200, 6, '/d')).toEqual({ call: 'open' });
    expect(fdOrigin(dir, 200, 7, '/e')?.native).toHaveLength(6);
  });

  test("an addon under node_modules, or in a directory named like the C library, is the caller's; the Node binary as the recorder names it (/proc/self/exe) ends the list", () => {
    nativeFile(200, {
      nframes: 6,
      modules: [
        '/usr/lib/x86_64-linux-gnu/libc.so.6',
        '/srv/app/node_modules/sharp/build/Release/sharp.node',
        '/opt/libcamera/build/Release/camera.node',
        '/proc/self/exe',
      ],
      records: [
        // libc, sharp, camera, the Node binary, sharp: the list is sharp, camera.
        { fd: 3, kind: 0, target: '/a', frames: [[1, 0x10n], [2, 0x20n], [3, 0x30n], [4, 0x40n], [2, 0x50n]] },
      ],
    });
    expect(fdOrigin(dir, 200, 3, '/a')).toEqual({ call: 'open', native: ['sharp.node+0x20', 'camera.node+0x30'] });
  });

  test('a JS record and a native one for the same fd: the JS call names it, the native frames come along', () => {
    nativeFile(200, { modules: ['/nowhere/addon.node'], records: [{ fd: 3, kind: 8, target: '/m', frames: [[1, 0x77n]] }] });
    writeFileSync(join(dir, 'js-200.log'), `${JSON.stringify({ fd: 3, target: '/m', call: 'native.memfd', stack: ['s (s.js:1:1)'] })}\n`);
    expect(fdOrigin(dir, 200, 3, '/m')).toEqual({ call: 'native.memfd', js: ['s (s.js:1:1)'], native: ['addon.node+0x77'], unconfirmed: true });
  });
});

describe('native frames symbolized', () => {
  // A shared object built here: with line tables (-g), and the same without them.
  const SOURCE = `namespace ns {
int twice(int (*f)(char), int x) {
  return f('a') * 2 + x;
}
struct S {
  int v;
  int get() const { return v; }
};
int use(const S& s) { return s.get(); }
}  // namespace ns
extern "C" int plain_c(int x) { return x + 1; }
`;

  test('function (file:line) without the parameter list; no line table: the function at module+offset; no symbol at all: ?', () => {
    const src = join(dir, 'frames.cc');
    writeFileSync(src, SOURCE);
    const withLines = join(dir, 'libframes.so');
    const without = join(dir, 'libbare.so');
    execFileSync('g++', ['-g', '-O0', '-fPIC', '-shared', '-o', withLines, src]);
    execFileSync('g++', ['-O0', '-fPIC', '-shared', '-o', without, src]);
    const symbol = (lib: string, mangled: string): bigint => {
      const found = execFileSync('nm', [lib], { encoding: 'utf8' }).split('\n').find((l) => l.endsWith(` ${mangled}`));
      if (!found) throw new Error(`${mangled} not in ${lib}`);
      return BigInt(`0x${found.split(' ')[0]}`);
    };
    const twice = symbol(withLines, '_ZN2ns5twiceEPFicEi');
    const get = symbol(withLines, '_ZNK2ns1S3getEv');
    const plain = symbol(without, 'plain_c');
    // A frame holds a return address: the call is the byte before it, so +1 lands on the function's first byte.
    nativeFile(300, {
      nframes: 4,
      modules: [withLines, without],
      records: [
        { fd: 3, kind: 0, target: '/a', frames: [[1, twice + 1n], [1, get + 1n], [2, plain + 1n], [1, 0n]] },
      ],
    });
    expect(fdOrigin(dir, 300, 3, '/a')?.native).toEqual([
      `ns::twice (${src}:2)`,
      // Not a parameter list at the end: kept whole.
      `ns::S::get() const (${src}:7)`,
      `plain_c (libbare.so+0x${(plain + 1n).toString(16)})`,
      // Address 0 (no return address): nothing there.
      '? (libframes.so+0x0)',
    ]);
  });
});

describe('native frames symbolized: discriminators', () => {
  test('a frame on a line addr2line marks with a discriminator (a call in a one-line loop) reads function (file:line), the discriminator left out', () => {
    const src = join(dir, 'loop.cc');
    writeFileSync(
      src,
      'extern "C" int step(int x) { return x * 3; }\n' +
        'extern "C" int loop(int n) { int s = 0; for (int i = 0; i < n; i++) for (int j = 0; j < i; j++) for (int k = 0; k < j; k++) s += step(i) ? step(j) : step(k) ? step(i + j) : step(k + 1); return s; }\n',
    );
    const lib = join(dir, 'libloop.so');
    execFileSync('g++', ['-g', '-O0', '-fPIC', '-shared', '-o', lib, src]);
    const found = execFileSync('nm', ['-S', lib], { encoding: 'utf8' }).split('\n').find((l) => l.endsWith(' loop'));
    if (!found) throw new Error(`loop not in ${lib}`);
    const [start, size] = found.split(' ').slice(0, 2).map((h) => BigInt(`0x${h}`));
    const addresses = Array.from({ length: Number(size) }, (_, i) => start! + BigInt(i));
    const lines = execFileSync('addr2line', ['-e', lib, ...addresses.map((a) => `0x${a.toString(16)}`)], { encoding: 'utf8' }).split('\n');
    // One with a discriminator of two digits or more (this line has about twenty).
    const at = lines.findIndex((l) => / \(discriminator \d\d+\)$/.test(l));
    if (at < 0) throw new Error(`addr2line gave no discriminator of two digits in loop: ${lines.join(' | ')}`);
    nativeFile(301, {
      nframes: 1,
      modules: [lib],
      // A frame holds a return address: the byte before it is the one looked up.
      records: [{ fd: 3, kind: 0, target: '/a', frames: [[1, addresses[at]! + 1n]] }],
    });
    expect(fdOrigin(dir, 301, 3, '/a')?.native).toEqual([`loop (${src}:2)`]);
  });
});

describe('native frames symbolized: a return address', () => {
  test('a call that ends its line is named by that line, not by the next one, which starts at the return address the interposer recorded', () => {
    const library = fdtrackLibrary(dir);
    if (library.path === undefined) throw new Error(`the interposer could not be built: ${library.unavailable}`);
    // The source in a directory named like addr2line's discriminator: a path is shown as it is.
    const srcDir = join(dir, 'src (discriminator 7)');
    mkdirSync(srcDir);
    const src = join(srcDir, 'opener.c');
    // Built with -O0: `call open` is the last instruction of line 4 (its result unused), `call after` the first of line 5.
    writeFileSync(src, '#include <fcntl.h>\nvoid after(void) {}\nvoid opener(const char *path) {\n  open(path, O_RDONLY);\n  after();\n}\n');
    const lib = join(dir, 'libopener.so');
    execFileSync('cc', ['-g', '-O0', '-fPIC', '-fno-omit-frame-pointer', '-shared', '-o', lib, src]);
    // The program prints its pid and the number open returned in opener (the lowest free one, found before the call).
    const main = join(dir, 'main.c');
    writeFileSync(
      main,
      '#include <stdio.h>\n#include <unistd.h>\nvoid opener(const char *path);\n' +
        'int main(int argc, char **argv) { int next = dup(0); close(next); opener(argv[1]); printf("%d %d\\n", (int)getpid(), next); return 0; }\n',
    );
    const program = join(dir, 'main');
    execFileSync('cc', ['-O0', '-o', program, main, lib, `-Wl,-rpath,${dir}`]);
    const file = join(dir, 'opened');
    writeFileSync(file, '');
    const env = { ...process.env, ...trackingEnvironment(dir, library.path, process.env) };
    const [pid, fd] = execFileSync(program, [file], { env, encoding: 'utf8' }).trim().split(' ').map(Number);

    // What makes this frame tell the two apart: the address the interposer recorded in libopener.so is the first byte of line 5.
    const bin = readFileSync(join(dir, `native-${pid}.bin`));
    const nframes = bin.readUInt32LE(12);
    const modules = Array.from({ length: bin.readUInt32LE(16) }, (_, i) => bin.toString('utf8', 24 + i * MODULE_PATH, bin.indexOf(0, 24 + i * MODULE_PATH)));
    const record = HEADER + fd! * (16 + TARGET + nframes * 16);
    const offsets = Array.from({ length: bin.readUInt32LE(record + 8) }, (_, i) => record + 16 + TARGET + i * 16)
      .filter((at) => modules[bin.readUInt32LE(at) - 1] === lib)
      .map((at) => bin.readBigUInt64LE(at + 8));
    expect(offsets).toHaveLength(1);
    const [, line] = execFileSync('addr2line', ['-e', lib, `0x${offsets[0]!.toString(16)}`], { encoding: 'utf8' }).trim().split(':');
    if (line !== '5') throw new Error(`the return address of open's call in opener is not the start of line 5 (addr2line: line ${line}): the compiler laid opener out otherwise`);

    expect(fdOrigin(dir, pid!, fd!, file)).toEqual({ call: 'open', native: [`opener (${src}:4)`] });
  });
});

describe('records a real process leaves (JS recorder and interposer)', () => {
  test("a child's fs.openSync and fdbridge memfd: each named by its JS call, the memfd with the addon's native frame", async () => {
    const library = fdtrackLibrary(dir);
    if (library.path === undefined) throw new Error(`the interposer could not be built: ${library.unavailable}`);
    const file = join(dir, 'opened');
    const script = `
      const fs = require('node:fs');
      const { native } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'native.js'))});
      const opened = fs.openSync(${JSON.stringify(file)}, 'w');
      const memfd = native.memfd('origin');
      process.stdout.write(JSON.stringify({ opened, memfd }) + '\\n');
      process.stdin.resume();
      process.stdin.on('end', () => process.exit(0));`;
    const child = spawn(process.execPath, ['-e', script], {
      env: { ...process.env, ...trackingEnvironment(dir, library.path, process.env) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      let out = '';
      child.stdout!.setEncoding('utf8');
      const fds = await new Promise<{ opened: number; memfd: number }>((resolve, reject) => {
        child.stdout!.on('data', (d: string) => {
          out += d;
          if (out.includes('\n')) resolve(JSON.parse(out) as { opened: number; memfd: number });
        });
        child.once('exit', (code) => reject(new Error(`the child exited (${code}) before reporting`)));
      });
      const pid = child.pid!;
      const opened = fdOrigin(dir, pid, fds.opened, file);
      expect(opened?.call).toBe('fs.openSync');
      expect(opened?.js?.[0]).toMatch(/\[eval\]/);
      const memfd = fdOrigin(dir, pid, fds.memfd, '/memfd:origin (deleted)');
      expect(memfd?.call).toBe('native.memfd');
      // The addon's frames, symbolized (function without its parameter list, file:line), the C library's left out.
      expect(memfd?.native?.[0]).toMatch(/^fdbridge::FdMemfd \(\/.*\/native\/fd_ops\.cc:\d+\)$/);
      expect(memfd?.native?.[1]).toMatch(/ \(\/.*\/native\/addon_fd_functions\.cc:\d+\)$/);
      // A target that is not what the record saw: not blamed.
      expect(fdOrigin(dir, pid, fds.opened, '/somewhere/else')).toBeUndefined();
    } finally {
      child.stdin!.end();
      await exited;
    }
  });
});
