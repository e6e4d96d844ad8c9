/**
 * checkFdLeaks in a process that has just started with its stdout in a
 * file (the way `fdbridge run > out.log` starts), around a spawn, an
 * fs.watch and a connection on this row's transport: no leak, although
 * libuv opens its EMFILE reserve (/dev/null) at the first spawn and its
 * inotify fd at the first watch, and keeps both. The check opened them
 * before its baseline and says so. A /dev/null the test itself opens and
 * leaves open is still a leak.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Scenario } from '../harness/types';
import { cliTransportArgs } from './support/common';

const SCRIPT = join(__dirname, 'support', 'fresh-leak-check.js');

interface Summary {
  leaks: Array<{ fd: number; target: string }>;
  closed: number;
  runtime: string[];
}

const scenario: Scenario = {
  name: 'check-leaks-in-fresh-process',
  description: "checkFdLeaks in a fresh process with stdout in a file: the runtime's lazy fds are set aside (and named), a leaked /dev/null is still caught",
  tags: ['leak-check'],
  async run(ctx) {
    const out = join(ctx.tmpdir, 'result.json');
    const stdout = openSync(join(ctx.tmpdir, 'stdout.log'), 'w');
    let stderr = '';
    const code = await new Promise<number | null>((resolve, reject) => {
      void cliTransportArgs(ctx).then((args) => {
        const child = spawn(process.execPath, [SCRIPT, out, ...args], { stdio: ['ignore', stdout, 'pipe'] });
        child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
        child.once('error', reject);
        child.once('close', resolve);
      }, reject);
    }).finally(() => closeSync(stdout));
    const result = JSON.parse(readFileSync(out, 'utf8')) as { clean: Summary; devNull: Summary & { fd: number }; error?: string };
    assert.equal(code, 0, `exit status (${result.error ?? stderr})`);
    assert.deepEqual(result.clean.leaks, [], 'no leak around a spawn, a watch and a connection');
    assert.equal(result.clean.closed, 0);
    assert.ok(result.clean.runtime.includes('/dev/null'), `libuv's EMFILE reserve is named as set aside (${result.clean.runtime.join(', ')})`);
    assert.deepEqual(result.devNull.leaks, [{ fd: result.devNull.fd, target: '/dev/null' }], 'a leaked /dev/null is caught');
    ctx.note(`set aside in the fresh process: ${result.clean.runtime.join(', ')}`);
  },
};

export default scenario;
