/**
 * native/unique_fd.h, the owning fd types of the C++ code, checked on their
 * own: test/native/unique_fd_test.cc is compiled with assertions on (and
 * ASan/UBSan) and run; it checks its own open-fd table before and after.
 */
import { spawnSync } from 'node:child_process';

import { compileNativeTest } from './helpers';

let program: string;

beforeAll(() => {
  program = compileNativeTest('unique_fd_test', ['fd_ops.cc'], true);
}, 120_000);

test('UniqueFd and UniqueFds own, release, move and close as documented, leaving the fd table as it was', () => {
  const run = spawnSync(program, [], { encoding: 'utf8' });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  expect(run.stdout).toMatch(/^ok \d+ checks\n$/);
  expect(Number(/^ok (\d+)/.exec(run.stdout)?.[1])).toBeGreaterThanOrEqual(40);
});

test.each([
  ['double-close', 'double close'],
  ['self-reset', 'reset to the fd already owned'],
])('a debug build asserts on a broken invariant: %s', (mode, message) => {
  const run = spawnSync(program, [mode], { encoding: 'utf8' });
  expect(run.signal).toBe('SIGABRT');
  expect(run.stderr).toContain(message);
});
