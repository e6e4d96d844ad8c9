/**
 * describeFdLeakReport, the text of an FdLeakError (expectNoFdLeaks,
 * toLeakNoFds), against a model, on generated reports: a clean report (no
 * leak, nothing closed) reads as nothing, whatever was set aside; otherwise
 * each leaked and each closed fd has its own line, under a header that
 * counts them, a closed fd of fdbridge's says so, and each set-aside list
 * that has entries (fdbridge's queued closes, a log line's copies, its own
 * fds it closed, the runtime's) has its own section listing exactly them,
 * in that order, and one that has none has no section.
 */
import fc from 'fast-check';

import { describeFdOrigin, type FdOrigin } from '../../src/fd-track';
import { describeFdEntry, describeFdLeakReport, type FdEntry, type FdLeakReport } from '../../src/leak-check';
import { describeRuntimeFd, type RuntimeFd } from '../../src/runtime-fds';

const entry: fc.Arbitrary<FdEntry> = fc.record(
  {
    pid: fc.constantFrom(process.pid, 1, 4242),
    role: fc.constantFrom('self', 'child', 'helper'),
    fd: fc.integer({ min: 0, max: 1 << 20 }),
    target: fc.constantFrom('/tmp/x', 'pipe:[77]', 'anon_inode:[eventfd]', 'socket:[9]', '/dev/pts/3'),
    fdbridgeOwn: fc.constant(true as const),
  },
  { requiredKeys: ['pid', 'role', 'fd', 'target'] },
);
/** Where a leak was opened (trackFds): its lines follow the leak's, indented below it. */
const origin: fc.Arbitrary<FdOrigin> = fc.record(
  {
    call: fc.constantFrom('fs.openSync', 'unseen', 'open'),
    js: fc.array(fc.constantFrom('f (/a.js:1:2)', 'g (/b.js:3:4)'), { maxLength: 2 }),
    native: fc.array(fc.constantFrom('open (libc.so.6+0x10)', 'main (x.c:9)'), { maxLength: 2 }),
  },
  { requiredKeys: ['call'] },
);
const leak: fc.Arbitrary<FdEntry> = fc.tuple(entry, fc.option(origin, { nil: undefined })).map(([e, o]) => (o ? { ...e, openedAt: o } : e));
const runtimeFd: fc.Arbitrary<RuntimeFd> = fc.record({
  fd: fc.integer({ min: 0, max: 1 << 20 }),
  target: fc.constantFrom('/dev/null', '/dev/pts/1'),
  owner: fc.constantFrom("libuv's EMFILE reserve", 'the event loop'),
});
const list = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T[]> => fc.array(a, { maxLength: 3 });

const report: fc.Arbitrary<FdLeakReport> = fc.record(
  {
    leaks: list(leak),
    closed: list(entry),
    gone: fc.constant([]),
    closing: list(entry),
    writing: list(entry),
    ownClosed: list(entry),
    runtime: list(runtimeFd),
  },
  { requiredKeys: ['leaks', 'closed', 'gone'] },
);

/** The set-aside sections in the order they are printed: a word of each header, and its entries' lines. */
function setAside(r: FdLeakReport): { word: RegExp; lines: string[] }[] {
  return [
    { word: /background closer/, lines: (r.closing ?? []).map(describeFdEntry) },
    { word: /log line/, lines: (r.writing ?? []).map(describeFdEntry) },
    { word: /closed during it by fdbridge/, lines: (r.ownClosed ?? []).map(describeFdEntry) },
    { word: /runtime/, lines: (r.runtime ?? []).map(describeRuntimeFd) },
  ];
}

test('generated reports: clean reads as nothing; else one line per leaked and closed fd under counting headers, and one section per non-empty set-aside list', () => {
  fc.assert(
    fc.property(report, (r) => {
      const text = describeFdLeakReport(r);
      if (r.leaks.length === 0 && r.closed.length === 0) {
        expect(text).toBe('');
        return;
      }
      const lines = text.split('\n');
      let at = 0;
      if (r.leaks.length > 0) {
        expect(lines[at++]).toBe(`${r.leaks.length} ${r.leaks.length === 1 ? 'fd' : 'fds'} leaked:`);
        for (const e of r.leaks) {
          expect(lines[at++]).toBe(`  ${describeFdEntry(e)} (opened during the test, still open)`);
          for (const l of e.openedAt ? describeFdOrigin(e.openedAt, '    ') : []) expect(lines[at++]).toBe(l);
        }
      }
      if (r.closed.length > 0) {
        const one = r.closed.length === 1;
        expect(lines[at++]).toBe(`${r.closed.length} ${one ? 'fd' : 'fds'} closed that ${one ? 'was' : 'were'} open before:`);
        for (const e of r.closed) {
          const line = lines[at++]!;
          expect(line.startsWith(`  ${describeFdEntry(e)} (`)).toBe(true);
          expect(line).toMatch(/open before the test, closed during it/);
          // Only one of fdbridge's own says so: the code under test closed it behind fdbridge's back.
          expect(line.includes("fdbridge's own fd")).toBe(e.fdbridgeOwn === true);
        }
      }
      for (const section of setAside(r)) {
        if (section.lines.length === 0) {
          expect(lines.slice(at).some((l) => !l.startsWith('  ') && section.word.test(l))).toBe(false);
          continue;
        }
        const header = lines[at++]!;
        expect(header.startsWith('set aside (')).toBe(true);
        expect(header).toMatch(section.word);
        for (const l of section.lines) expect(lines[at++]).toBe(`  ${l}`);
      }
      expect(at).toBe(lines.length);
    }),
    { numRuns: 300 },
  );
});

test("generated entries: an fd of this process reads `fd N -> target`; another process's is prefixed with that process's pid and role", () => {
  fc.assert(
    fc.property(entry, (e) => {
      expect(describeFdEntry(e)).toBe(e.pid === process.pid ? `fd ${e.fd} -> ${e.target}` : `pid ${e.pid} (${e.role}): fd ${e.fd} -> ${e.target}`);
    }),
  );
});
