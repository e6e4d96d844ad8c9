/**
 * A watched process that has exited but is not reaped (a zombie): its
 * /proc/<pid>/fd reads as empty, which must never count as "every fd it had
 * was closed". Staged with a parent that never waits: `sleep` exec'd over a
 * shell that started the soon-to-be zombie in the background.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import type { Writable } from 'node:stream';

import { checkFdLeaks, SystemError } from '../../src';
import { ProcessFdSnapshot, settleFdSnapshots } from '../../src/leak-check';

function state(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

async function until<T>(look: () => T | undefined): Promise<T> {
  for (;;) {
    const v = look();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Family {
  parent: ChildProcess;
  /** The background child: reads a line from the pipe (fd 3), then exits; never reaped by `sleep`. */
  pid: number;
  release: Writable;
  exited: Promise<void>;
}

async function family(): Promise<Family> {
  // The subshell holds fd 3 (the pipe) and reads from it; `exec sleep` replaces the shell, so the
  // subshell's parent is a process that never calls wait().
  const parent = spawn('sh', ['-c', '(read line <&3) & exec sleep 1000'], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  const exited = new Promise<void>((r) => parent.once('exit', () => r()));
  const ppid = parent.pid!;
  const pid = await until(() => {
    try {
      // /proc/<pid>/comm is 'sleep' once the exec happened; the child was forked before it.
      if (readFileSync(`/proc/${ppid}/comm`, 'utf8').trim() !== 'sleep') return undefined;
      const kids = readFileSync(`/proc/${ppid}/task/${ppid}/children`, 'utf8').trim();
      if (kids === '') return undefined;
      const kid = Number(kids.split(' ')[0]);
      // Settled only once it is blocked in `read <&3`: the shell has moved the pipe onto fd 0 for it
      // (and saved the old fd 0 above), and its table stays so until it exits.
      return readlinkSync(`/proc/${kid}/fd/0`) === readlinkSync(`/proc/${kid}/fd/3`) ? kid : undefined;
    } catch {
      return undefined;
    }
  });
  return { parent, pid, release: parent.stdio[3] as Writable, exited };
}

async function reap(f: Family): Promise<void> {
  f.release.destroy();
  f.parent.kill('SIGKILL');
  await f.exited;
}

test('a process watched while alive that becomes a zombie is gone, not "closed every fd"', async () => {
  const f = await family();
  try {
    const snap = new ProcessFdSnapshot(f.pid, 'background');
    try {
      expect(snap.baseline.size).toBeGreaterThan(0);
      expect(snap.current()).toEqual(snap.baseline);
      f.release.write('go\n');
      await until(() => (state(f.pid) === 'Z' ? true : undefined));
      expect(snap.current()).toBeUndefined();
      expect(snap.changes()).toBeUndefined();
      const report = await settleFdSnapshots([snap], { settleMs: 0 });
      expect(report).toEqual({ leaks: [], closed: [], gone: [{ pid: f.pid, role: 'background' }] });
    } finally {
      snap.release();
    }
  } finally {
    await reap(f);
  }
});

test('a zombie cannot be watched: SystemError ESRCH naming the pid', async () => {
  const f = await family();
  try {
    f.release.write('go\n');
    await until(() => (state(f.pid) === 'Z' ? true : undefined));
    let err: unknown;
    try {
      new ProcessFdSnapshot(f.pid, 'zombie');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({
      code: 'ESRCH',
      errno: -3,
      syscall: 'open-fd table',
      message: `open-fd table of pid ${f.pid}: no such process (or it is a zombie)`,
    });
    await expect(checkFdLeaks(() => undefined, { processes: [f.pid] })).rejects.toMatchObject({ code: 'ESRCH' });
  } finally {
    await reap(f);
  }
});

test('checkFdLeaks: a watched process that turns zombie during fn is reported gone, its fds neither leaked nor closed', async () => {
  const f = await family();
  try {
    const report = await checkFdLeaks(
      async () => {
        f.release.write('go\n');
        await until(() => (state(f.pid) === 'Z' ? true : undefined));
      },
      { processes: [{ pid: f.pid, role: 'bg' }], settleMs: 0, failOnClosed: true },
    );
    expect(report.gone).toEqual([{ pid: f.pid, role: 'bg' }]);
    expect(report.closed).toEqual([]);
    expect(report.leaks).toEqual([]);
  } finally {
    await reap(f);
  }
});
