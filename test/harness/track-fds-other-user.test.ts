/**
 * checkFdLeaks({ trackFds: true }) and a Node process started during it as
 * another user (root here, nobody there): the check's directory is root's
 * alone (mkdtemp's mode 0700), so that process cannot open its log. It
 * must run as it does without tracking (it did not start: the recorder's
 * open threw at preload), and a leak of it must read as not tracked, not
 * as a call the recorder missed.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { checkFdLeaks, connect, describeFdLeakReport, PROBE_COMMAND } from '../../src';
import { openFdTable } from '../../src/fd';
import { NOBODY, isRoot } from '../util/nobody';
import { exitOf, fdTableSettles } from '../util/processes';

const itAsRoot = isRoot ? test : test.skip;

/** A script that says `hello` and exits 0. */
const HELLO = 'console.log("hello from " + process.getuid())';

/** The ways a test starts a Node process as another user, each as the argv and options of spawn. */
const STARTS: Array<{ how: string; argv: (script: string) => [string, string[], SpawnOptions] }> = [
  {
    how: 'setpriv',
    argv: (script) => ['setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', script], {}],
  },
  { how: "child_process's uid option", argv: (script) => [process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY }] },
];

/** Runs `script` started as `start` says, with the environment (`env: process.env`: jest's test sees a copy), and returns its exit code and output. */
async function runAs(start: (typeof STARTS)[number], script: string): Promise<{ code: number | null; out: string }> {
  const [file, args, options] = start.argv(script);
  const child = spawn(file, args, { ...options, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const { code } = await exitOf(child);
  return { code, out };
}

describe.each(STARTS)('a Node process started as nobody ($how) during a tracked check', (start) => {
  itAsRoot('runs as it does untracked: exit 0, its output', async () => {
    const before = openFdTable();
    const runs: Record<string, { code: number | null; out: string }> = {};
    for (const trackFds of [false, true]) {
      await checkFdLeaks(
        async () => {
          runs[String(trackFds)] = await runAs(start, HELLO);
        },
        { trackFds, settleMs: 0 },
      );
    }
    expect(runs['true']).toEqual({ code: 0, out: `hello from ${NOBODY}\n` });
    expect(runs['true']).toEqual(runs['false']);
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});

itAsRoot("a child command as nobody (connect('child', { child: { uid } })) starts during a tracked check", async () => {
  const before = openFdTable();
  let reply: unknown;
  await checkFdLeaks(
    async () => {
      const conn = await connect('child', { command: PROBE_COMMAND, child: { uid: NOBODY, gid: NOBODY } });
      try {
        reply = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${conn.location.pid}/status`, 'utf8'))?.[1];
      } finally {
        await conn.close();
      }
    },
    { trackFds: true, settleMs: 0 },
  );
  expect(reply).toBe(String(NOBODY));
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

/**
 * A process that opens /dev/null when told (`go` on stdin), says `opened`,
 * and keeps it until its stdin ends: its leak, seen by a check that
 * watches it, started as `uid` inside a tracked check (so with the
 * recorder preloaded, whether it can write its log or not).
 */
const OPENER = `const fs = require('node:fs');
let fd = -1;
process.stdin.on('data', () => { fd = fs.openSync('/dev/null', 'r'); console.log('opened ' + fd); });
console.log('ready');`;

describe.each([
  { who: 'root', uid: 0, call: 'fs.openSync' },
  { who: 'nobody', uid: NOBODY, call: 'untracked' },
])('a leak of a process started as $who during a tracked check', ({ uid, call }) => {
  itAsRoot(`reads as ${call}`, async () => {
    const before = openFdTable();
    let report: Awaited<ReturnType<typeof checkFdLeaks>> | undefined;
    // The outer check tracks while the opener starts; the inner one (which
    // records into the outer one's directory) watches the opener.
    await checkFdLeaks(
      async () => {
        const child = spawn(process.execPath, ['-e', OPENER], { uid, gid: uid, env: process.env, stdio: ['pipe', 'pipe', 'inherit'] });
        const lines: string[] = [];
        const said = (what: string): Promise<void> =>
          new Promise((resolve, reject) => {
            const look = (): void => {
              if (lines.some((l) => l.startsWith(what))) resolve();
            };
            child.stdout!.on('data', (d: Buffer) => {
              lines.push(...d.toString().split('\n'));
              look();
            });
            child.once('exit', (code) => reject(new Error(`the opener exited (${code}) before saying ${what}: ${lines.join(' | ')}`)));
            look();
          });
        try {
          await said('ready');
          report = await checkFdLeaks(
            async () => {
              child.stdin!.write('go\n');
              await said('opened');
            },
            { processes: [{ pid: child.pid!, role: 'opener' }], trackFds: true, settleMs: 50 },
          );
        } finally {
          child.stdin!.end();
          await exitOf(child);
        }
      },
      { trackFds: true, settleMs: 0 },
    );
    expect(report!.leaks).toEqual([expect.objectContaining({ role: 'opener', target: '/dev/null', openedAt: expect.objectContaining({ call }) })]);
    const text = describeFdLeakReport(report!).split('\n')[2];
    if (call === 'untracked') {
      expect(text).toBe(
        '    not tracked: --track-fds recorded nothing in this process (started before tracking began, or it could not write its records, as a process started as another user cannot)',
      );
    } else expect(text).toMatch(/^ {4}opened by fs\.openSync/);
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});
