/**
 * HelperProcess.stop() in a process that may no longer signal its daemon
 * (a row gave up root; the daemon runs as root): stop() resolves, with no
 * 'error' left unhandled, rather than crash the process (ChildProcess.kill
 * emits EPERM as 'error') or wait for an exit that never comes. In a node
 * process of its own, as root: it starts a daemon, sets gid and uid to
 * nobody, stops it once or twice, and prints what it saw; once it exits,
 * its daemon goes too (--exit-with-parent).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { scaled } from '../util/time-scale';

const root = process.getuid?.() === 0;
const MODULE = join(__dirname, '../../dist/harness/helper-process.js');

(root ? test.each([1, 2]) : test.skip.each([1, 2]))('stop() %i time(s) after giving up root: resolves, nothing unhandled', (stops) => {
  const before = openFdTable();
  const dir = mkdtempSync(join(tmpdir(), 'fdb-helper-eperm-'));
  try {
    const script = `
const { HelperProcess } = require(${JSON.stringify(MODULE)});
process.on('uncaughtException', (err) => { process.stdout.write('uncaught ' + err.message); process.exit(3); });
(async () => {
  const helper = new HelperProcess(${JSON.stringify(dir)});
  await helper.start();
  process.setgid(65534);
  process.setuid(65534);
  for (let i = 0; i < ${stops}; i++) await helper.stop();
  process.stdout.write('stopped, alive ' + helper.alive);
  process.exit(0);
})();
`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: scaled(120_000) });
    expect(out).toBe('stopped, alive true');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(openFdTable()).toEqual(before);
}, scaled(150_000));
