/**
 * checkFdLeaks({ trackFds: true }) must never name, as the opener of a
 * leaked fd, a call whose fd was closed again: the kernel gives a closed
 * number to the next open, and an open the recorder does not see (here
 * fs.opendirSync, as any native addon's open would be) of the same file
 * then reads exactly like the fd that was closed (same number, same
 * target). Generated programs open one directory again and again through
 * calls the recorder sees (fs.openSync, fs.open, fs.promises.open) and two
 * it does not (fs.opendirSync, an openSync taken from fs before the check),
 * and close what they opened in every way a program does (fs.closeSync,
 * a closeSync taken from fs before the check, fs.close, FileHandle.close, fdbridge's
 * closeFd and closeFds, Dir.closeSync); what they leave open must be named by the call
 * that really opened it, or as unseen.
 */
import * as fs from 'node:fs';
import { close, closeSync, mkdtempSync, open, openSync, opendirSync, promises as fsp, rmSync, type Dir } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { checkFdLeaks, closeFd, closeFds, openFdTable } from '../../src';

type Opener = 'fs.openSync' | 'fs.open' | 'fs.promises.open' | 'unseen';
/** How a generated program opens: a call the recorder sees, or one of two it does not. */
type OpenBy = Exclude<Opener, 'unseen'> | 'fs.opendirSync' | 'openSync bound before';
type Op = { op: 'open'; by: OpenBy } | { op: 'close'; which: number; how: number };

interface Live {
  fd: number;
  opener: Opener;
  /** The ways this fd may be closed (by whoever owns it: the fd, a FileHandle, a Dir). */
  closers: Array<() => Promise<void>>;
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('open' as const), by: fc.constantFrom<OpenBy>('fs.openSync', 'fs.open', 'fs.promises.open', 'fs.opendirSync', 'openSync bound before') }),
  fc.record({ op: fc.constant('close' as const), which: fc.nat(), how: fc.nat() }),
);

// Looked up when called, as the recorder wraps them in place (a promisify taken before it is not seen).
const openCb = (path: string): Promise<number> => new Promise((resolve, reject) => open(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
const closeCb = (fd: number): Promise<void> => new Promise((resolve, reject) => close(fd, (err) => (err ? reject(err) : resolve())));
// Taken before any check starts, as a CommonJS destructuring or an ES module's named import is.
const { closeSync: closeSyncBound, openSync: openSyncBound } = fs;

async function openBy(by: OpenBy, dir: string): Promise<Live> {
  const plain = (fd: number): Array<() => Promise<void>> => [
    async () => closeSync(fd),
    async () => closeSyncBound(fd),
    () => closeCb(fd),
    async () => closeFd(fd),
    async () => void closeFds([fd]),
  ];
  switch (by) {
    case 'fs.openSync': {
      const fd = openSync(dir, 'r');
      return { fd, opener: by, closers: plain(fd) };
    }
    case 'fs.open': {
      const fd = await openCb(dir);
      return { fd, opener: by, closers: plain(fd) };
    }
    case 'fs.promises.open': {
      const handle = await fsp.open(dir, 'r');
      return { fd: handle.fd, opener: by, closers: [() => handle.close()] };
    }
    case 'openSync bound before': {
      const fd = openSyncBound(dir, 'r');
      return { fd, opener: 'unseen', closers: plain(fd) };
    }
    case 'fs.opendirSync': {
      // A Dir does not expose its fd: it is the one that appears.
      const before = openFdTable();
      const d: Dir = opendirSync(dir);
      const [fd] = [...openFdTable().keys()].filter((n) => !before.has(n));
      return { fd: fd!, opener: 'unseen', closers: [async () => d.closeSync()] };
    }
  }
}

test('a leaked fd is never blamed on an earlier open of the same file at the same number that was closed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-blame-'));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 14 }), async (ops) => {
        const live: Live[] = [];
        try {
          const report = await checkFdLeaks(
            async () => {
              for (const o of ops) {
                if (o.op === 'open') {
                  const entry = await openBy(o.by, dir);
                  // Which fds share a number is what matters: the model keeps one entry per open fd.
                  live.push(entry);
                } else if (live.length > 0) {
                  const [entry] = live.splice(o.which % live.length, 1);
                  await entry!.closers[o.how % entry!.closers.length]!();
                }
              }
            },
            { trackFds: true, settleMs: 50 },
          );
          const blamed = report.leaks.map((l) => ({ fd: l.fd, call: l.openedAt?.call })).sort((a, b) => a.fd - b.fd);
          const truth = live.map((l) => ({ fd: l.fd, call: l.opener })).sort((a, b) => a.fd - b.fd);
          expect(blamed).toEqual(truth);
        } finally {
          for (const l of live.splice(0)) await l.closers[0]!();
        }
      }),
      { numRuns: 60 },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // A hang guard only: the 60 runs took over 30 s at load average 30.
}, 120_000);
