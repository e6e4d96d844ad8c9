/**
 * restoreProcessState (harness/process-state.ts) puts back credentials a
 * row changed whenever the process kept the privilege to: each step on its
 * own, in an order that keeps the privilege. In a node process of its own,
 * as root (real and saved uid 0 throughout, so every change here can be
 * undone): a generated starting state (effective gid and uid, groups), the
 * session's snapshot taken there, then a generated sequence of seteuid,
 * setegid and setgroups calls (some fail EPERM, as a row's would), then
 * the restore: the credentials are the snapshot's again, and nothing is
 * reported lost.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';

import { openFdTable } from '../../src/fd';

const root = process.getuid?.() === 0;
const MODULE = join(__dirname, '../../dist/harness/process-state.js');
const OPS = ['seteuid(0)', 'seteuid(65534)', 'setegid(0)', 'setegid(65534)', 'setegid(1)', 'setgroups([0, 1])', 'setgroups([0])'] as const;

(root ? test : test.skip)('credentials a row changed while the privilege could be had again are put back', () => {
  const before = openFdTable();
  fc.assert(
    fc.property(
      fc.constantFrom(0, 65534),
      fc.constantFrom(0, 65534),
      fc.constantFrom('[0]', '[0, 65534]'),
      fc.array(fc.constantFrom(...OPS), { minLength: 1, maxLength: 5 }),
      (egid, euid, groups, ops) => {
        const script = `
const { snapshotProcessState, restoreProcessState } = require(${JSON.stringify(MODULE)});
const ids = () => [process.getuid(), process.geteuid(), process.getgid(), process.getegid(), [...process.getgroups()].sort((a, b) => a - b).join(',')].join(' ');
process.setgroups(${groups}); process.setegid(${egid}); process.seteuid(${euid});
const saved = snapshotProcessState();
const was = ids();
for (const op of ${JSON.stringify(ops)}) { try { eval('process.' + op); } catch {} }
const changes = restoreProcessState(saved);
process.stdout.write(JSON.stringify({ was, now: ids(), lost: changes.lost ?? null }));
`;
        const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as { was: string; now: string; lost: string | null };
        expect({ now: out.now, lost: out.lost }).toEqual({ now: out.was, lost: null });
      },
    ),
    { numRuns: 40, endOnFailure: true, examples: [[0, 65534, '[0]', ['seteuid(0)', 'setegid(65534)']], [0, 0, '[0]', ['setegid(1)', 'seteuid(65534)']]] },
  );
  expect(openFdTable()).toEqual(before);
});
