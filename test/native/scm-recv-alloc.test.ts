/**
 * ScmRecv sizes the set of fds it receives once, from the cmsg lengths:
 * test/native/scm_recv_alloc_test.cc counts the allocations of receiving
 * one fd and of receiving 253 in one message (they must be equal; growing
 * the set fd by fd made 9), and checks its own open-fd table before and after.
 */
import { spawnSync } from 'node:child_process';

import { scaled } from '../util/time-scale';

import { compileNativeTest } from './helpers';

let program: string;

beforeAll(() => {
  // No sanitizer: the program counts allocations through its own operator new.
  program = compileNativeTest('scm_recv_alloc_test', ['scm_rights.cc', 'fd_ops.cc'], false);
}, scaled(120_000));

test('receiving 253 fds in one message allocates no more than receiving one', () => {
  const run = spawnSync(program, [], { encoding: 'utf8' });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  expect(run.stdout).toMatch(/^ok \d+\n$/);
});
