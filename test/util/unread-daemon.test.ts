/**
 * unread-daemon.ts: the fake daemon is given poll's numbers on the machines
 * it knows, and on any other the tests that use it are skipped with the
 * reason, instead of the daemon failing at its start.
 */
import fc from 'fast-check';

import { pollCallsArg, unreadDaemonUnavailable } from './unread-daemon';

test('x64 and arm64 have their poll calls; any other arch is unavailable, named in the reason', () => {
  expect(pollCallsArg('x64')).toBe('7,271');
  expect(pollCallsArg('arm64')).toBe('73');
  fc.assert(
    fc.property(
      fc.oneof(fc.constantFrom('ia32', 'arm', 'riscv64', 'ppc64', 's390x', 'loong64', 'mips', 'constructor', '__proto__', 'toString', 'valueOf'), fc.string({ minLength: 1 })).filter((a) => a !== 'x64' && a !== 'arm64'),
      (arch) => {
        expect(pollCallsArg(arch)).toBeUndefined();
        expect(unreadDaemonUnavailable(arch)).toBe(`poll(2)'s system call numbers on ${arch} are not in test/util/unread-daemon.ts`);
      },
    ),
  );
});
