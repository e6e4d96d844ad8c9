/**
 * test/attack/fixtures/unread-daemon.py, the fake helper daemon of the
 * tests whose dupFileDescriptorSync waits in a full send queue: it acts
 * once the client's thread is in poll(2), which it reads from
 * /proc/PID/syscall, so it is given the numbers of poll and ppoll as the
 * client's libc makes them (asm/unistd.h). They are known here for the
 * machines listed; on another the tests are skipped, and say why.
 */
import { join } from 'node:path';

import { hasPython } from './linger-attacker';

/** poll(2)'s and ppoll(2)'s system call numbers, by Node's process.arch (arm64 has ppoll only). */
const POLL_CALLS: ReadonlyMap<string, readonly number[]> = new Map([
  ['x64', [7, 271]],
  ['arm64', [73]],
]);

export const UNREAD_DAEMON = join(__dirname, '..', 'attack', 'fixtures', 'unread-daemon.py');

/** The daemon's last argument on `arch`: its poll calls' numbers, comma-separated; undefined where they are not known. */
export function pollCallsArg(arch: string = process.arch): string | undefined {
  return POLL_CALLS.get(arch)?.join(',');
}

/** Why the daemon cannot run on `arch` (python3 missing, or its poll calls' numbers not known), for a skipped test's name; undefined when it can. */
export function unreadDaemonUnavailable(arch: string = process.arch): string | undefined {
  if (pollCallsArg(arch) === undefined) return `poll(2)'s system call numbers on ${arch} are not in test/util/unread-daemon.ts`;
  if (!hasPython()) return 'no python3';
  return undefined;
}
