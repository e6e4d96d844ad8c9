/**
 * Where `fdbridge run --json FILE` (and --html, merge) may be pointed: a
 * new file, an existing one, but also what users pass as FILE when it is
 * not a plain file: a symlink to the results kept elsewhere, a FIFO a
 * reader waits on (`mkfifo`, `<(...)`), a character device (`/dev/stdout`,
 * `/dev/null`, `/dev/full`). A write through a temporary file and a rename
 * must never replace what the name is: a symlink stays a symlink and the
 * file it names gets the text, a FIFO or a device is written into (and a
 * write that fails there, ENOSPC on /dev/full, is an error, never "wrote").
 * Replacing them instead would, as root, turn /dev/stdout or /dev/full
 * into a regular file for the whole machine. Devices here are made in a
 * temporary directory (mknod), never the real ones.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, lstatSync, mkdtempSync, openSync, readFileSync, readlinkSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeFileAtomic } from '../../harness/write-file';
import { runCli } from '../util/processes';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-output-targets-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Makes a character device node like /dev/full (1, 7) at `path`; false where mknod is not allowed. */
function mknodFull(path: string): boolean {
  try {
    execFileSync('mknod', ['-m', '666', path, 'c', '1', '7'], { stdio: 'ignore' });
    return lstatSync(path).isCharacterDevice();
  } catch {
    return false;
  }
}

test('a symlink stays a symlink; the file it names gets the text', () => {
  writeFileSync(join(dir, 'kept.json'), 'old\n');
  symlinkSync('kept.json', join(dir, 'link.json'));
  writeFileAtomic(join(dir, 'link.json'), 'new\n');
  expect({
    link: lstatSync(join(dir, 'link.json')).isSymbolicLink() ? readlinkSync(join(dir, 'link.json')) : 'replaced by a regular file',
    kept: readFileSync(join(dir, 'kept.json'), 'utf8'),
  }).toEqual({ link: 'kept.json', kept: 'new\n' });
});

test('a dangling symlink stays a symlink; the file it names is created', () => {
  symlinkSync('made.json', join(dir, 'link.json'));
  writeFileAtomic(join(dir, 'link.json'), 'new\n');
  expect(lstatSync(join(dir, 'link.json')).isSymbolicLink()).toBe(true);
  expect(readFileSync(join(dir, 'made.json'), 'utf8')).toBe('new\n');
});

test('a FIFO stays a FIFO, and its reader gets the text', () => {
  const fifo = join(dir, 'results.fifo');
  execFileSync('mkfifo', [fifo]);
  // Our read end, opened read-write so that neither side's open blocks.
  const reader = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  try {
    writeFileAtomic(fifo, 'through the fifo\n');
    const buf = Buffer.alloc(4096);
    let got = '';
    try {
      got = buf.subarray(0, readSync(reader, buf)).toString();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
    expect({ fifo: lstatSync(fifo).isFIFO(), got }).toEqual({ fifo: true, got: 'through the fifo\n' });
  } finally {
    closeSync(reader);
  }
});

const devices = mknodFull(join(tmpdir(), `fdbridge-mknod-probe-${process.pid}`));
rmSync(join(tmpdir(), `fdbridge-mknod-probe-${process.pid}`), { force: true });

(devices ? test : test.skip)('a character device is written into, not replaced: /dev/full says ENOSPC', () => {
  const full = join(dir, 'full');
  expect(mknodFull(full)).toBe(true);
  expect(() => writeFileAtomic(full, 'x\n')).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
  expect(lstatSync(full).isCharacterDevice()).toBe(true);
});

(devices ? test : test.skip)('fdbridge run --json at a /dev/full: exit 3 naming ENOSPC, never "wrote"; the device stays a device', async () => {
  const full = join(dir, 'full');
  expect(mknodFull(full)).toBe(true);
  writeFileSync(join(dir, 'quick.scenario.js'), "module.exports = { name: 'quick', description: 'completes', transports: ['direct'], async run() {} };\n");
  const r = await runCli(['run', '--scenarios', dir, '--settle', '100', '--json', full]);
  expect({ code: r.code, wrote: r.stdout.includes(`wrote ${full}`), error: /ENOSPC/.test(r.stderr), device: lstatSync(full).isCharacterDevice() }).toEqual({
    code: 3,
    wrote: false,
    error: true,
    device: true,
  });
});
