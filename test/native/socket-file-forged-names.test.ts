/**
 * Whether a socket file is stale (bindReplacingStale may remove it) is
 * asked of the kernel by the file's identity (unix_diag), not read from
 * /proc/net/unix's text, where every socket's name is printed byte for
 * byte: a socket anyone binds (an abstract name, a path in a directory of
 * theirs) whose name holds a newline and a line shaped like a record for
 * our path made our stale file look in use for as long as they liked, and
 * a socket of ours bound through a relative path or a symlink was not
 * recognised at all (its live file taken for stale). The jest setup checks
 * the open-fd table after every test.
 */
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, symlinkSync, unlinkSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

import { FdBridgeError, SystemError } from '../../src/errors';
import { bindReplacingStale } from '../../src/socket-file';
import { isRoot, NOBODY, spawnAsNobody } from '../util/nobody';
import { constants, native } from './binding';
import { openFdTable } from '../../src/fd';
import { expectFdTable, Scope, thrown, withScope } from './helpers';

const describeRoot = isRoot ? describe : describe.skip;
const SEQPACKET = constants.SOCK_SEQPACKET;
const IN_USE = new FdBridgeError('ERR_FDBRIDGE_ADDRESS_IN_USE', 'in use (the test)');
const SEED = Number(process.env.FDBRIDGE_TEST_SEED ?? 20261204);

/** A line of /proc/net/unix for a socket bound at `path`, as unix_seq_show prints it ("%pK: %08X %08X %08X %04X %02X %5lu name"). */
function record(path: string): string {
  return `0000000000000000: 00000002 00000000 00010000 0005 01 31337 ${path}`;
}

/** The same, in the fewest characters the format allows (a name has 107 bytes). */
function shortRecord(path: string): string {
  return `0: 0 0 0 0 0 1 ${path}`;
}

/** What a process killed while it held a socket at `path` leaves: the file, nobody bound behind it. Its inode number. */
function staleSocket(path: string): number {
  native.close(native.listen(SEQPACKET, path, false, 0o600, 0));
  return lstatSync(path).ino;
}

/** bindReplacingStale binding a SEQPACKET listener at `path`: 'bound' (the socket closed at once) or what it threw. */
function tryBind(path: string): unknown {
  try {
    native.close(bindReplacingStale(path, SEQPACKET, () => native.listen(SEQPACKET, path, false, 0o600, 16), () => IN_USE));
    return 'bound';
  } catch (err) {
    return err;
  }
}

/**
 * A socket of ours bound at `path` (as given: relative, through a symlink)
 * that refuses connections (shut down for reading: unix_stream_connect says
 * ECONNREFUSED, as for a socket bound and not listening yet), so that only
 * the question of who is bound can tell it from a stale file. Closed with the test.
 */
function boundRefusing(s: Scope, path: string): number {
  const fd = native.listen(SEQPACKET, path, false, 0o600, 16);
  s.defer(() => native.close(fd));
  native.shutdown(fd, constants.SHUT_RD);
  return fd;
}

/** An abstract SEQPACKET socket named `name`, listening; closed with the test. */
function abstractSquatter(s: Scope, name: string): void {
  const fd = native.listen(SEQPACKET, name, true, -1, 16);
  s.defer(() => native.close(fd));
}

describe('a name that prints a forged /proc/net/unix record does not keep our stale file', () => {
  test('abstract and path sockets of this process, forged for the absolute and the relative path: the file is replaced', () =>
    withScope((s) => {
      const dir = s.dir();
      const path = join(dir, 'v.sock');
      staleSocket(path);
      const rel = relative(process.cwd(), path);
      abstractSquatter(s, `x\n${record(path)}`);
      abstractSquatter(s, `x\n${record(rel)}`);
      const squat = join(s.dir(), `y\n${shortRecord(path)}`);
      mkdirSync(resolve(squat, '..'), { recursive: true });
      boundRefusing(s, squat);
      // The attack is in place: the table holds a line that reads as a record of our path.
      expect(readFileSync('/proc/net/unix', 'utf8').split('\n')).toContain(record(path));
      expect(tryBind(path)).toBe('bound');
      expect(tryBind(rel)).toBe('bound');
    }));

  describeRoot('another user (nobody)', () => {
    test('their sockets (abstract, and a path in a directory of theirs) named with forged records of our path: our stale file is replaced', () =>
      withScope(async (s) => {
        const base = s.dir();
        chmodSync(base, 0o755);
        const theirs = join(base, 'n');
        mkdirSync(theirs, { mode: 0o700 });
        chownSync(theirs, NOBODY, NOBODY);
        const path = join(s.dir(), 'v.sock');
        staleSocket(path);
        const names: Array<['abstract' | 'path', string]> = [
          ['abstract', `x\n${record(path)}`],
          ['abstract', `x\n${record(relative(process.cwd(), path))}`],
          ['path', join(theirs, `x\n${shortRecord(path)}`)],
        ];
        const script = `
import json, os, socket, sys
held = []
for kind, name in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if kind == 'abstract':
        s.bind('\\0' + name)
    else:
        os.makedirs(os.path.dirname(name), exist_ok=True)
        s.bind(name)
    s.listen(1)
    held.append(s)
print(json.dumps({'ready': True}), flush=True)
sys.stdin.read()
`;
        const p = spawnAsNobody('/usr/bin/python3', ['-c', script, JSON.stringify(names)]);
        s.child(p.child);
        await p.line('ready');
        try {
          const lines = readFileSync('/proc/net/unix', 'utf8').split('\n');
          expect(lines).toContain(record(path));
          expect(lines).toContain(shortRecord(path));
          expect(tryBind(path)).toBe('bound');
            } finally {
          p.child.stdin?.end();
          await p.exited();
        }
      }));
  });
});

describe('generated: live or stale, bound by any path to the file, under any name, with or without a forged record', () => {
  const NAME_CHARS = ['a', 'b', '0', ' ', '  ', '\t', '\n', '@', ':', '.', '-'];
  const arbName = fc
    .array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: 10 })
    .map((parts) => parts.join(''))
    .filter((name) => name !== '.' && name !== '..');

  test('a file a socket is bound to is never taken; a stale one is always replaced', () =>
    withScope((s) => {
      const base = s.dir();
      let round = 0;
      fc.assert(
        fc.property(
          arbName,
          fc.constantFrom('absolute', 'relative', 'symlink'),
          fc.constantFrom('absolute', 'relative'),
          fc.boolean(),
          fc.boolean(),
          (name, boundVia, probedAs, live, forged) => {
            round += 1;
            const before = openFdTable();
            const r = new Scope();
            try {
              const real = join(base, `r${round}`);
              mkdirSync(real);
              const link = join(base, `l${round}`);
              symlinkSync(real, link);
              const file = join(real, name);
              const boundAt = boundVia === 'absolute' ? file : boundVia === 'relative' ? relative(process.cwd(), file) : join(link, name);
              const fd = native.listen(SEQPACKET, boundAt, false, 0o600, 16);
              native.shutdown(fd, constants.SHUT_RD);
              if (live) r.defer(() => native.close(fd));
              else native.close(fd);
              r.defer(() => unlinkSync(file));
              if (forged) abstractSquatter(r, `x\n${shortRecord(file)}`);
              const ino = lstatSync(file).ino;
              const probe = probedAs === 'absolute' ? file : relative(process.cwd(), file);
              const result = tryBind(probe);
              // 'bound' means the file was removed (bind never replaces a name); in use, it is the same file still.
              expect(live ? [result, lstatSync(file).ino] : result).toEqual(live ? [IN_USE, ino] : 'bound');
            } finally {
              r.dispose();
            }
            expectFdTable(before);
          },
        ),
        { seed: SEED, numRuns: 80 },
      );
    }));
});

describe('without an answer from sock_diag: /proc/net/unix decides', () => {
  /** Makes native.unixFileBound throw `err` until the returned function puts the real one back. */
  function failingDiag(err: Error): () => void {
    const real = native.unixFileBound;
    native.unixFileBound = () => {
      throw err;
    };
    return () => {
      native.unixFileBound = real;
    };
  }

  test('a kernel without unix_diag (ENOENT) or NETLINK_SOCK_DIAG (EPROTONOSUPPORT): a socket listed there is in use, a stale file replaced', () =>
    withScope((s) => {
      const dir = s.dir();
      for (const errno of [2, 93]) {
        const restore = failingDiag(new SystemError(errno, 'sock_diag'));
        try {
          const live = join(dir, `live${errno}.sock`);
          boundRefusing(s, live);
          expect(tryBind(live)).toBe(IN_USE);
          // Listed by its absolute path, named by a relative one: found as the path it resolves to.
          expect(tryBind(relative(process.cwd(), live))).toBe(IN_USE);
          const stale = join(dir, `stale${errno}.sock`);
          staleSocket(stale);
          expect(tryBind(stale)).toBe('bound');
          // What the fallback cannot tell: a forged record keeps a stale file (never takes a live one).
          const forged = join(dir, `forged${errno}.sock`);
          staleSocket(forged);
          abstractSquatter(s, `x\n${shortRecord(forged)}`);
          expect(tryBind(forged)).toBe(IN_USE);
        } finally {
          restore();
        }
      }
    }));

  test('another failure of the question (not a sock_diag SystemError) is the caller\'s, and nothing is removed', () =>
    withScope((s) => {
      const path = join(s.dir(), 'stale.sock');
      const ino = staleSocket(path);
      for (const err of [new TypeError('a bad argument'), new SystemError(13, 'open')]) {
        const restore = failingDiag(err);
        try {
          expect(tryBind(path)).toBe(err);
        } finally {
          restore();
        }
        expect(lstatSync(path).ino).toBe(ino);
      }
    }));
});

describe('native.unixFileBound', () => {
  test('the kernel device encoding is converted: the file of a socket bound on this filesystem is found by its stat st_dev, not by the kernel\'s raw number', () =>
    withScope((s) => {
      const path = join(s.dir(), 'b.sock');
      const fd = native.listen(SEQPACKET, path, false, 0o600, 16);
      const st = lstatSync(path, { bigint: true });
      const ino32 = Number(st.ino & 0xffffffffn);
      const dev = Number(st.dev);
      try {
        expect(native.unixFileBound([dev], ino32)).toBe(true);
        expect(native.unixFileBound([dev + 1, dev], ino32)).toBe(true);
        // MKDEV(major, minor) as the kernel keeps it (major << 20 | minor): the same number as st_dev only for major 0 and minor < 256 (tmpfs).
        const major = Number(((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn));
        const minor = Number((st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn));
        const kernelDev = major * 2 ** 20 + minor;
        expect(kernelDev === dev || !native.unixFileBound([kernelDev], ino32)).toBe(true);
        expect(native.unixFileBound([], ino32)).toBe(false);
      } finally {
        native.close(fd);
      }
      // Its socket closed, the file is nobody's.
      expect(native.unixFileBound([dev], ino32)).toBe(false);
    }));

  test('arguments that are not device numbers and a 32-bit inode number are a TypeError', () => {
    for (const args of [[undefined, 1], [[1], -1], [[1], 2 ** 32], [[-1], 1], [[1.5], 1], [['1'], 1], [[1]]] as unknown[][]) {
      expect(thrown(() => (native.unixFileBound as (...a: unknown[]) => boolean)(...args))).toMatchObject({ name: 'TypeError' });
    }
  });
});

describeRoot('on an overlayfs over layers of different filesystems (a tmpfs under the directory of the test)', () => {
  test("a socket file's st_dev is its layer's, the kernel reports the overlay's (the directory's): a bound socket there is still found, a stale file replaced", () =>
    withScope((s) => {
      const base = s.dir();
      const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(base, d)) as [string, string, string, string];
      for (const d of [lower, upper, work, merged]) mkdirSync(d);
      const mount = (args: string[]): number | null => spawnSync('mount', args, { stdio: 'ignore' }).status;
      if (mount(['-t', 'tmpfs', 'lower', lower]) !== 0) {
        // eslint-disable-next-line no-console
        console.log('socket-file-forged-names.test: mount is not allowed here, so the overlayfs case is skipped');
        return;
      }
      s.defer(() => spawnSync('umount', [lower]));
      expect(mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged])).toBe(0);
      s.defer(() => spawnSync('umount', [merged]));
      const live = join(merged, 'live.sock');
      boundRefusing(s, live);
      // What makes this case: the file's device is not the directory's.
      expect(lstatSync(live).dev).not.toBe(lstatSync(merged).dev);
      expect(tryBind(live)).toBe(IN_USE);
      const stale = join(merged, 'stale.sock');
      staleSocket(stale);
      expect(tryBind(stale)).toBe('bound');
    }));
});
