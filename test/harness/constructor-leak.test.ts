/**
 * A command that leaks an fd in its constructor, run by the harness on every
 * transport whose process the oracle can read: the leak is the command's,
 * found as a leak of that file (a file, a pipe end, a socket, or a socket of
 * fdbridge's own that the command made: a DatagramSocket) in the process the
 * command ran in. Where the transport starts that process for the command
 * (child, pidfd, remote) the oracle reads its table only once connect() has
 * resolved, after the constructor ran: the READY's constructorFds take those
 * fds out of that baseline, and the report names the constructor. Clean
 * commands (a constructor that opens and closes, one that keeps an fd until
 * its close hook) pass, their own runtime's lazy fds never blamed.
 */
import { closeSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { runScenarios } from '../../harness/runner';
import type { Leak, ResultRow } from '../../harness/types';
import { openFdTable } from '../../src/fd';
import { distPath } from '../../src/paths';
import { warmRuntimeFds } from '../../src/runtime-fds';
import type { TransportName } from '../../src/transports';
import { fileOfLength } from '../util/long-path';
import { rowsTestLimit, scaled } from '../util/time-scale';

/** Each row's time limit (a hang guard: no row here waits on anything that does not come). */
const ROW_MS = 30_000;
/** A run's rows, at most: the one scenario on every transport (direct, worker, child, pidfd, helper, remote). */
const ROWS = 6;

/** Transports whose command process the oracle reads, and the role it names it by. */
const SEEN: Partial<Record<TransportName, string>> = { direct: 'client', child: 'child', pidfd: 'child', helper: 'helper', remote: 'remote' };
const KINDS = ['file', 'pipe end', 'socket', 'fdbridge datagram socket'] as const;
type Kind = (typeof KINDS)[number];

const TARGET: Record<Kind, RegExp | undefined> = { file: undefined, 'pipe end': /^pipe:\[\d+\]$/, socket: /^socket:\[\d+\]$/, 'fdbridge datagram socket': /^socket:\[\d+\]$/ };

let dir: string;
let dirs = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-ctor-leak-'));
  warmRuntimeFds();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** JS that opens one fd of `kind` (the other end of a pair closed) and evaluates to the function that closes it. */
function opener(kind: Kind, file: string): string {
  switch (kind) {
    case 'file':
      return `((fd) => () => fs.closeSync(fd))(fs.openSync(${JSON.stringify(file)}, 'r'))`;
    case 'pipe end':
      return '((p) => (fs.closeSync(p[1]), () => fs.closeSync(p[0])))(native.pipe())';
    case 'socket':
      return '((s) => (fs.closeSync(s[1]), () => fs.closeSync(s[0])))(native.socketpair(5 /* SOCK_SEQPACKET */))';
    case 'fdbridge datagram socket':
      // `own`: registered as fdbridge's own fd, made by the command all the same.
      return '((d) => () => d.close())(DatagramSocket.open({ own: true }))';
  }
}

/** A scenario directory: `command.js` (its class's constructor body given) and one scenario that connects, calls, closes. */
function scenarioDir(className: string, body: (file: string) => string, close: string): { dir: string; file: string } {
  const d = join(dir, `s${++dirs}`);
  mkdirSync(d);
  const file = join(d, 'opened-by-ctor');
  writeFileSync(file, 'x');
  writeFileSync(
    join(d, 'command.js'),
    `const fs = require('node:fs');\nconst { native } = require(${JSON.stringify(distPath('src/native.js'))});\n` +
      `const { DatagramSocket } = require(${JSON.stringify(distPath('src/datagram.js'))});\n` +
      `class ${className} {\n  constructor(context) { this.context = context; this.closers = []; ${body(file)} }\n  ping() { return 'pong'; }\n  close() { ${close} }\n}\nmodule.exports = { ${className} };\n`,
  );
  writeFileSync(
    join(d, 'ctor.scenario.js'),
    `const path = require('node:path');\nconst C = { name: 'ctorcmd', module: path.join(__dirname, 'command.js'), export: ${JSON.stringify(className)} };\n` +
      `module.exports = { name: 'ctor', description: 'x', commands: [C], async run(ctx) { const c = await ctx.connect(C); await c.call('ping'); await c.close(); } };\n`,
  );
  return { dir: d, file };
}

async function run(scenariosDir: string, transports: TransportName[]): Promise<ResultRow[]> {
  const { results } = await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 200, timeoutMs: scaled(ROW_MS), scenariosDir, transports, isolation: 'none' });
  return results.results;
}

/** Closes what rows leaked in this process (direct's leaks are this process's). */
function closeOwnLeaks(leaks: readonly Leak[]): void {
  for (const l of leaks) {
    if (l.pid !== process.pid) continue;
    try {
      if (readlinkSync(`/proc/self/fd/${l.fd}`) === l.target) closeSync(l.fd);
    } catch {
      // closed already
    }
  }
}

const shape = (row: ResultRow): unknown => ({
  transport: row.transport,
  status: row.status,
  leaks: row.leaks.map((l) => ({ role: l.role, target: l.target, openedBy: l.openedBy })),
});

test('a constructor leak is the command\'s, as a leak of that file, on every transport that can see it', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(fc.constantFrom(...KINDS), { minLength: 1, maxLength: 4 }),
      fc.subarray(Object.keys(SEEN) as TransportName[], { minLength: 1 }),
      async (kinds, chosen) => {
        // A DatagramSocket leaked in this process (direct) would stay registered here: not staged.
        const transports = kinds.includes('fdbridge datagram socket') ? chosen.filter((t) => t !== 'direct') : chosen;
        fc.pre(transports.length > 0);
        // The constructor opens each, and nothing closes them.
        const s = scenarioDir('CtorLeak', (file) => kinds.map((k) => `${opener(k, file)};`).join(' '), '/* forgets them */');
        const rows = await run(s.dir, transports);
        try {
          expect(rows.map((r) => r.transport).sort()).toEqual([...transports].sort());
          for (const row of rows) {
            const byCtor = ['child', 'pidfd', 'remote'].includes(row.transport);
            expect(shape(row)).toEqual({
              transport: row.transport,
              status: 'fail',
              leaks: expect.arrayContaining(
                kinds.map((k) => ({
                  role: SEEN[row.transport],
                  target: TARGET[k] ? expect.stringMatching(TARGET[k]) : s.file,
                  openedBy: byCtor ? expect.stringContaining('the constructor of the command ctorcmd, command.js#CtorLeak') : undefined,
                })),
              ),
            });
            expect(row.leaks).toHaveLength(kinds.length);
          }
        } finally {
          closeOwnLeaks(rows.flatMap((r) => r.leaks));
        }
      },
    ),
    { numRuns: 5, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
}, rowsTestLimit({ rowMs: ROW_MS, rows: ROWS, runs: 5 }));

test('clean constructors pass on every transport: one that opens and closes, one that keeps an fd until its close hook', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...KINDS), fc.boolean(), async (kind, keep) => {
      const s = keep
        ? scenarioDir('Keeps', (file) => `this.closers.push(${opener(kind, file)});`, 'for (const close of this.closers) close();')
        : scenarioDir('OpensAndCloses', (file) => `(${opener(kind, file)})();`, '');
      const rows = await run(s.dir, ['direct', 'worker', 'child', 'pidfd', 'helper', 'remote']);
      try {
        expect(rows.map((r) => ({ transport: r.transport, status: r.status, leaks: r.leaks, error: r.error }))).toEqual(
          rows.map((r) => ({ transport: r.transport, status: 'pass', leaks: [], error: undefined })),
        );
      } finally {
        closeOwnLeaks(rows.flatMap((r) => r.leaks));
      }
    }),
    { numRuns: 6, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
}, rowsTestLimit({ rowMs: ROW_MS, rows: ROWS, runs: 6 }));

test('generated: a constructor leak of a file whose path its READY cuts (past READY_TARGET_BYTES) is still the constructor\'s leak of that file', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 900, max: 4000 }), async (count, length) => {
      const file = fileOfLength(dir, length);
      const s = scenarioDir('LongLeak', () => `for (let i = 0; i < ${count}; i++) fs.openSync(${JSON.stringify(file)}, 'r');`, '/* forgets them */');
      const rows = await run(s.dir, ['child', 'pidfd', 'remote']);
      try {
        for (const row of rows) {
          expect(shape(row)).toEqual({
            transport: row.transport,
            status: 'fail',
            leaks: Array.from({ length: count }, () => ({ role: SEEN[row.transport], target: file, openedBy: expect.stringContaining('the constructor of the command ctorcmd, command.js#LongLeak') })),
          });
        }
      } finally {
        closeOwnLeaks(rows.flatMap((r) => r.leaks));
      }
    }),
    { numRuns: 4, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
}, rowsTestLimit({ rowMs: ROW_MS, rows: ROWS, runs: 4 }));

test('generated: a constructor keeping more fds than its READY has room to name (until its close hook) fails the row, one entry saying how many went unnamed', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 6000, max: 9000 }), fc.integer({ min: 1, max: 300 }), async (count, length) => {
      const file = fileOfLength(dir, length);
      const s = scenarioDir(
        'KeepsMany',
        () => `for (let i = 0; i < ${count}; i++) this.closers.push(((fd) => () => fs.closeSync(fd))(fs.openSync(${JSON.stringify(file)}, 'r')));`,
        'for (const close of this.closers) close();',
      );
      const rows = await run(s.dir, ['child', 'pidfd']);
      try {
        for (const row of rows) {
          expect({ ...(shape(row) as object), error: row.error }).toEqual({
            transport: row.transport,
            status: 'fail',
            leaks: [
              {
                role: 'child',
                target: expect.stringMatching(/^\(\d+ more fd\(s\) the constructor left open, not named: past what its READY holds; whether they leak cannot be told\)$/),
                openedBy: expect.stringContaining('the constructor of the command ctorcmd, command.js#KeepsMany'),
              },
            ],
            error: expect.stringMatching(
              /^undeclared leak of 1 fd\(s\): pid \d+ \(child\): fd -1 -> \(\d+ more fd\(s\) the constructor left open, not named: past what its READY holds; whether they leak cannot be told\), opened by the constructor of the command ctorcmd/,
            ),
          });
          // That alone: the fds it closes in its close hook are no wrong-fd closes.
          expect(row.error).not.toMatch(/closed \d+ fd\(s\) that were open before/);
          expect(row.leaks[0]?.fd).toBe(-1);
        }
      } finally {
        closeOwnLeaks(rows.flatMap((r) => r.leaks));
      }
    }),
    { numRuns: 3, endOnFailure: true },
  );
  expect(openFdTable()).toEqual(before);
}, rowsTestLimit({ rowMs: ROW_MS, rows: ROWS, runs: 3 }));
