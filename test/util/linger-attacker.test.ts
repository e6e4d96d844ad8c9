/**
 * The lingering-socket watcher (linger-attacker.ts) reads the /proc files of
 * the threads it watches in a process of its own: however many of this
 * process's threads it watches, this process's fd table, read again and
 * again meanwhile, never changes. A leak check made while a test's
 * lingering sockets are watched finds nothing of the watcher's, neither in
 * its baseline nor at its end.
 */
import { readdirSync } from 'node:fs';

import { closeFd, diffFdTables, formatFdTableDiff, openFdTable } from '../../src/fd';
import { hasPython, lingeringSocket } from './linger-attacker';

(hasPython() ? test : test.skip)("this process's fd table stays the same while the watcher watches every one of its threads", async () => {
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
