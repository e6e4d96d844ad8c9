/**
 * The run's temporary directories (harness/exit-cleanup.ts, ownTempDir):
 * each is named with the pid of the process that removes it, so what a
 * SIGKILLed run left (it cannot remove anything) is removed by the next run
 * that makes one with the same prefix, once no process has that pid; and
 * removeAbandonedDirs touches nothing else. A run with no helper row makes
 * no run directory (the helper daemon's) at all. test/harness/run-stop.test.ts
 * SIGKILLs a whole `fdbridge run` and checks that the next run removes what
 * it left.
 *
 * "No process has this pid" is made certain, not likely: the pids used for
 * gone processes are above the kernel's pid_max, which no process can have.
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

import fc from 'fast-check';

import { removeAbandonedDirs } from '../../harness/exit-cleanup';
import { isRoot, NOBODY } from '../util/nobody';
import { runCli } from '../util/processes';

const PID_MAX = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
const PREFIX = 'fdbridge-run-';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-temp-dirs-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** What can sit in a TMPDIR under a name that looks like a run directory, and whether it must go. */
type Kind = 'gone' | 'live' | 'self' | 'symlink' | 'file' | 'other-prefix' | 'short-suffix' | 'other-user';
const KINDS: readonly Kind[] = ['gone', 'live', 'self', 'symlink', 'file', 'other-prefix', 'short-suffix', ...(isRoot ? (['other-user'] as const) : [])];

/** Makes entry `i` of `kind` in `dir` and returns its name. */
function make(kind: Kind, i: number): string {
  const suffix = `s${String(i).padStart(5, '0')}`;
  const gonePid = PID_MAX + 1 + i;
  const name =
    kind === 'live' ? `${PREFIX}1-${suffix}`
    : kind === 'self' ? `${PREFIX}${process.pid}-${suffix}`
    : kind === 'other-prefix' ? `fdbridge-other-${gonePid}-${suffix}`
    : kind === 'short-suffix' ? `${PREFIX}${gonePid}-${suffix.slice(1)}`
    : `${PREFIX}${gonePid}-${suffix}`;
  const path = join(dir, name);
  if (kind === 'symlink') {
    const target = join(dir, `target-${i}`);
    mkdirSync(target);
    writeFileSync(join(target, 'kept'), '');
    symlinkSync(target, path);
  } else if (kind === 'file') {
    writeFileSync(path, '');
  } else {
    mkdirSync(path);
    writeFileSync(join(path, 'helper.log'), 'what the run left\n');
    if (kind === 'other-user') chownSync(path, NOBODY, NOBODY);
  }
  return name;
}

test('generated TMPDIRs: exactly the directories of this user whose pid no process has are removed, with what they hold', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...KINDS), { maxLength: 12 }), (kinds) => {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      const names = kinds.map((kind, i) => ({ kind, name: make(kind, i) }));
      const removed = removeAbandonedDirs(dir, PREFIX);
      const gone = names.filter((n) => n.kind === 'gone').map((n) => join(dir, n.name));
      expect(removed.sort()).toEqual(gone.sort());
      const left = readdirSync(dir).filter((n) => !n.startsWith('target-'));
      expect(left.sort()).toEqual(names.filter((n) => n.kind !== 'gone').map((n) => n.name).sort());
      // A symlink's target is never followed into.
      for (const n of names.filter((x) => x.kind === 'symlink')) expect(existsSync(join(dir, n.name, 'kept'))).toBe(true);
    }),
    { numRuns: 40 },
  );
});

test('a TMPDIR that cannot be read: nothing removed, no error', () => {
  expect(removeAbandonedDirs(join(dir, 'missing'), PREFIX)).toEqual([]);
});

test('`fdbridge run` on the direct transport: in its TMPDIR only the row directory, named with its pid; a gone run\'s is removed; nothing left after', async () => {
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const scenarios = join(dir, 'scenarios');
  mkdirSync(scenarios);
  const seen = join(dir, 'seen.json');
  writeFileSync(
    join(scenarios, 'lists-tmpdir.scenario.js'),
    `const fs = require('node:fs');
const path = require('node:path');
module.exports = { name: 'lists-tmpdir', description: 'x', transports: ['direct'], run(ctx) {
  fs.writeFileSync(${JSON.stringify(seen)}, JSON.stringify({ pids: [process.pid, process.ppid], dir: ctx.tmpdir, tmp: fs.readdirSync(path.dirname(ctx.tmpdir)) }));
} };\n`,
  );
  // What a SIGKILLed run of this scenario left.
  const left = join(tmp, `fdbridge-lists-tmpdir-${PID_MAX + 1}-abc123`);
  mkdirSync(left);
  const r = await runCli(['run', '--transport', 'direct', '--scenario', 'lists-tmpdir', '--settle', '50'], { env: { TMPDIR: tmp, FDBRIDGE_SCENARIOS_DIR: scenarios } });
  expect({ code: r.code, out: r.stdout }).toEqual({ code: 0, out: expect.stringContaining('1 pass') });
  const { pids, dir: rowDir, tmp: listing } = JSON.parse(readFileSync(seen, 'utf8')) as { pids: number[]; dir: string; tmp: string[] };
  expect(dirname(rowDir)).toBe(tmp);
  // Named with the pid of the run that made it: the row's own process, or the run above it.
  const named = /^fdbridge-lists-tmpdir-(\d+)-[A-Za-z0-9]{6}$/.exec(basename(rowDir));
  expect(pids).toContain(Number(named?.[1]));
  expect(listing).toEqual([basename(rowDir)]);
  expect(readdirSync(tmp)).toEqual([]);
});
