/**
 * A remote command runs on another machine, in a container or a pod: the
 * pid its server reports (`conn.location.pid`) is a pid over there, in
 * another pid namespace. The leak oracle of `fdbridge run` must never take
 * it for a process of this machine: here a process that happens to have
 * that number is some unrelated program, and its fds are not the row's.
 *
 * Staged without timing: the via runs the server in a pid namespace of its
 * own (`unshare --pid`, as `docker exec` does) where the server's pid is
 * made equal to that of a decoy process on this machine (ns_last_pid). The
 * scenario is clean (its command keeps nothing); while its connection is
 * open the decoy opens a file, and the row must still pass, with no leak
 * naming the decoy.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { exitOf, runCli } from '../util/processes';

let dir: string;
let decoy: ChildProcess;
let decoyPid: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-remote-oracle-'));
  // The decoy: on SIGUSR1 it opens a file, keeps it open, and says so in a file.
  writeFileSync(
    join(dir, 'decoy.js'),
    `const { openSync, writeFileSync } = require('node:fs');
const kept = [];
process.on('SIGUSR1', () => { kept.push(openSync(${JSON.stringify(join(dir, 'decoy-opened'))}, 'w')); writeFileSync(${JSON.stringify(join(dir, 'decoy-ack'))}, 'opened'); });
process.stdout.write('ready\\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
`,
  );
  decoy = spawn(process.execPath, [join(dir, 'decoy.js')], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    decoy.stdout?.once('data', () => resolve());
    decoy.once('exit', () => reject(new Error('the decoy exited before it was ready')));
  });
  decoyPid = decoy.pid as number;
  // The via: the server in a pid namespace of its own, numbered as the decoy is here
  // (its next fork takes ns_last_pid + 1; fd 3 carries the channel past the
  // /dev/null a shell gives a background command's stdin).
  writeFileSync(
    join(dir, 'via.sh'),
    `#!/bin/sh
pid=$1; shift
exec unshare --pid --fork --kill-child --mount-proc sh -c 'echo $(($0 - 1)) > /proc/sys/kernel/ns_last_pid; "$@" 0<&3 3<&- & wait $!' "$pid" "$@" 3<&0
`,
  );
  chmodSync(join(dir, 'via.sh'), 0o755);
  writeFileSync(
    join(dir, 'clean-remote.scenario.js'),
    `const { existsSync } = require('node:fs');
const { PROBE_COMMAND } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
module.exports = {
  name: 'clean-remote',
  description: 'a remote command that keeps nothing; meanwhile an unrelated local process opens a file',
  transports: ['remote'],
  async run(ctx) {
    const conn = await ctx.connect(PROBE_COMMAND);
    const where = await conn.call('where');
    ctx.note('remote pid ' + where.pid);
    process.kill(Number(process.env.DECOY_PID), 'SIGUSR1');
    while (!existsSync(${JSON.stringify(join(dir, 'decoy-ack'))})) await new Promise((r) => setTimeout(r, 20));
    await conn.close();
  },
};
`,
  );
});

afterAll(async () => {
  decoy.stdin?.end();
  await exitOf(decoy);
  rmSync(dir, { recursive: true, force: true });
});

test("a clean remote row passes, and no leak is blamed on a local process that has the remote command's pid", async () => {
  const json = join(dir, 'results.json');
  const r = await runCli(['run', '--scenarios', dir, '--settle', '200', '--json', json], {
    env: { FDBRIDGE_REMOTE_VIA: `${join(dir, 'via.sh')} ${decoyPid}`, DECOY_PID: String(decoyPid) },
  });
  const results = existsSync(json) ? (JSON.parse(readFileSync(json, 'utf8')) as ResultsFile) : undefined;
  const row = results?.results.find((x) => x.scenario === 'clean-remote');
  // The staging worked: the server's pid over there is the decoy's here, and the decoy opened its file.
  expect({ run: row ? 'ran' : `${r.code}\n${r.stdout}\n${r.stderr}`, notes: row?.notes ?? [], ack: existsSync(join(dir, 'decoy-ack')) }).toEqual({
    run: 'ran',
    notes: expect.arrayContaining([`remote pid ${decoyPid}`]),
    ack: true,
  });
  expect({
    status: row?.status,
    blamed: (row?.leaks ?? []).filter((l) => l.pid === decoyPid).map((l) => `${l.role} ${l.target}`),
    error: row?.error,
    code: r.code,
  }).toEqual({ status: 'pass', blamed: [], error: undefined, code: 0 });
});
