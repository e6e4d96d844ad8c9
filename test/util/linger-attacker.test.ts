/**
 * The lingering-socket watcher (linger-attacker.ts):
 * - it finds a close blocked on the main thread, and ends it: the control
 *   without which a watcher that reads nothing would pass every test that
 *   expects verdict() to be null;
 * - one that cannot read this process's /proc files (no ptrace access to
 *   it) makes lingeringSocket reject, naming the file, rather than watch
 *   nothing;
 * - it reads those files in a process of its own: however many of this
 *   process's threads it watches, this process's fd table, read again and
 *   again meanwhile, never changes. A leak check made while a test's
 *   lingering sockets are watched finds nothing of the watcher's, neither
 *   in its baseline nor at its end.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';

import { closeFd, diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { hasPython, lingeringSocket } from './linger-attacker';
import { isRoot } from './nobody';
import { scaled } from './time-scale';

const withPython = hasPython() ? test : test.skip;

withPython('a lingering socket closed on the main thread: the watcher finds the main thread in close(2) and ends that close', async () => {
  const baseline = openFdTable();
  const linger = await lingeringSocket();
  // Were the watcher not to find the close, python's death would end it (its peers hold unread data: their close
  // resets the connections), and the verdict below would fail the test rather than the close block it for an hour.
  const guard = spawn('sh', ['-c', `sleep ${Math.ceil(scaled(20_000) / 1000)}; kill -KILL ${linger.attackerPid}`], { stdio: 'ignore', detached: true });
  try {
    closeFd(linger.fd);
    expect(await linger.verdict()).toMatch(/^main thread, syscall 3:/);
  } finally {
    process.kill(-(guard.pid as number), 'SIGKILL');
    await linger.end();
  }
  expect(formatFdTableDiff(diffFdTables(baseline, openFdTable()))).toBe('');
});

// Dropping CAP_SYS_PTRACE from the watcher's capabilities (setpriv, which needs CAP_SETPCAP: root) denies it ptrace
// access to this process, which has it: the kernel's check (ptrace_may_access) that Yama's ptrace_scope also answers.
(isRoot && hasPython() ? test : test.skip)(
  'a watcher without ptrace access to this process: lingeringSocket rejects, naming the file it cannot read, and leaves nothing open',
  async () => {
    const baseline = openFdTable();
    await expect(lingeringSocket(1, { watcherUnder: ['setpriv', '--bounding-set=-sys_ptrace', '--'] })).rejects.toThrow(
      `lingeringSocket: the watcher cannot read /proc/${process.pid}/task/${process.pid}/syscall (ptrace access): EPERM`,
    );
    expect(formatFdTableDiff(diffFdTables(baseline, openFdTable()))).toBe('');
  },
);

withPython("this process's fd table stays the same while the watcher watches every one of its threads", async () => {
  const linger = await lingeringSocket();
  try {
    for (const tid of readdirSync('/proc/self/task')) linger.watch(Number(tid));
    const baseline = openFdTable();
    const changes = new Set<string>();
    for (let read = 0; read < 2000; read++) {
      const diff = formatFdTableDiff(diffFdTables(baseline, openFdTable()));
      if (diff !== '') changes.add(diff);
      if (read % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    expect([...changes]).toEqual([]);
  } finally {
    closeFd(linger.fd);
    await linger.end();
  }
});
