/** Test utilities: processes run as `nobody` (65534), the other local user of these tests (we run as root). */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { TimeoutError } from '../../src/errors';
import { packageRoot } from '../../src/paths';
import { backgroundCloseFds } from '../../src/fd';
import { backgroundClosesPending, closerThreads } from '../../src/test-hooks';
import { scaled } from './time-scale';

export const NOBODY = 65534;
export const isRoot = process.getuid?.() === 0;

/** `require()` path of the compiled library, for scripts run with `node -e`. */
export const DIST_SRC = join(packageRoot, 'dist', 'src');

/**
 * How long a wait on such a process (line(), exited()) lasts before it is
 * taken for a hang: a hang guard (scaled, time-scale.ts), far above what
 * any of them takes, below jest's limit on a test, so that a process that
 * never says what is waited for fails the test with what it was doing
 * (describeHang) and is killed, and the test's own clean-up still runs.
 */
export const NOBODY_HANG_GUARD_MS = scaled(20_000);

export interface SpawnOptions {
  /** What else to show when a wait on the process is taken for a hang (a daemon's status...), read then. */
  describe?: () => string;
  /**
   * A directory (writable by the process) where a Node process writes its
   * diagnostic report on SIGUSR2 (node --report-on-signal): what a hang
   * guard asks for before the kill, for the JavaScript stack and the event
   * loop's handles. runAsNobody sets it up.
   */
  reportDir?: string;
}

export interface NobodyProcess {
  child: ChildProcess;
  pid: number;
  /**
   * Resolves with the first stdout line that parses as JSON and has `key`;
   * rejects if the process exits without one, or (a TimeoutError that says
   * what the process was doing, which is then killed) if none comes within
   * `guardMs`.
   */
  line<T = Record<string, unknown>>(key: string, guardMs?: number): Promise<T>;
  /** Resolves once it has exited, with everything it printed (the same guard as line's: then killed, and rejected). */
  exited(guardMs?: number): Promise<{ code: number | null; stdout: string; stderr: string }>;
  kill(): void;
}

/** A thread's kernel-side state: its name, wchan, syscall (number and arguments) and the top of its kernel stack. */
function describeThread(pid: number, tid: string): string {
  const read = (f: string): string => {
    try {
      return readFileSync(`/proc/${pid}/task/${tid}/${f}`, 'utf8').trim();
    } catch (err) {
      return `(${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`;
    }
  };
  const stack = read('stack')
    .split('\n')
    .slice(0, 6)
    .map((l) => l.replace(/^\[<[0-9a-f]+>\] /, '').replace(/\+0x.*/, ''))
    .join(' < ');
  return `  ${tid} ${read('comm')}: wchan ${read('wchan')}, syscall ${read('syscall').split(' ').slice(0, 3).join(' ')}; ${stack}`;
}

/**
 * What process `pid` is doing, as the kernel shows it: its state, every
 * thread's wait (describeThread), and its open fds; and this process's
 * background closer (the daemons the tests start here close on it).
 */
export function describeHang(pid: number): string {
  const lines: string[] = [];
  try {
    const state = /^State:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    lines.push(`pid ${pid}: ${state ?? '?'}`);
    for (const tid of readdirSync(`/proc/${pid}/task`)) lines.push(describeThread(pid, tid));
    const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
      } catch {
        return `${fd} -> ?`;
      }
    });
    lines.push(`  fds: ${fds.join(', ')}`);
  } catch (err) {
    lines.push(`pid ${pid}: gone (${(err as Error).message})`);
  }
  lines.push(`this process's closer: ${JSON.stringify({ ...closerThreads(), pending: backgroundClosesPending(), fds: backgroundCloseFds() })}`);
  return lines.join('\n');
}

/**
 * Runs `node -e script` as nobody (setpriv drops uid, gid and every
 * supplementary group, as a real other user has none of ours).
 */
export function runAsNobody(script: string, env: Record<string, string> = {}, options: SpawnOptions = {}): NobodyProcess {
  const reportDir = mkdtempSync(join(tmpdir(), 'fdbridge-nobody-report-'));
  chmodSync(reportDir, 0o777);
  const p = spawnAsNobody(process.execPath, ['--report-on-signal', '--report-signal=SIGUSR2', `--report-directory=${reportDir}`, '-e', script], env, { ...options, reportDir });
  p.child.once('close', () => rmSync(reportDir, { recursive: true, force: true }));
  return p;
}

/** What a hang guard shows of a Node diagnostic report: the JavaScript stack (if it was running any) and the loop's active handles. */
function summarizeReport(text: string): string {
  try {
    const r = JSON.parse(text) as {
      javascriptStack?: { message?: string; stack?: string[] };
      libuv?: Array<{ type?: string; is_active?: boolean; is_referenced?: boolean; fd?: number; firesInMsFromNow?: number }>;
    };
    const handles = (r.libuv ?? [])
      .filter((h) => h.is_active === true && h.type !== 'loop')
      .map((h) => `${h.type}${h.is_referenced === true ? '' : ' (unref)'}${h.fd !== undefined ? ` fd ${h.fd}` : ''}${h.firesInMsFromNow !== undefined ? ` in ${h.firesInMsFromNow} ms` : ''}`);
    return [`  JS: ${r.javascriptStack?.message ?? ''} ${(r.javascriptStack?.stack ?? []).slice(0, 8).join(' < ')}`, `  active libuv handles: ${handles.join('; ')}`].join('\n');
  } catch (err) {
    return `  (report unreadable: ${(err as Error).message})`;
  }
}

/** Asks the Node process `child` for its diagnostic report (SIGUSR2, see SpawnOptions.reportDir) and waits for it, at most `ms`. */
async function nodeReport(child: ChildProcess, dir: string, ms: number): Promise<string> {
  if (child.exitCode !== null || child.signalCode !== null || !child.kill('SIGUSR2')) return 'diagnostic report: not asked for (the process has exited)';
  for (const deadline = Date.now() + ms; Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 100));
    // Gone once the process has exited (runAsNobody removes it then): SIGUSR2 ended a process that was not running Node yet.
    if (child.exitCode !== null || child.signalCode !== null) return `diagnostic report: none (the signal ended the process: ${child.signalCode ?? child.exitCode})`;
    try {
      const file = readdirSync(dir).find((f) => f.endsWith('.json'));
      // Written in one go once complete: a file that does not parse yet is still being written.
      const text = file === undefined ? '' : readFileSync(join(dir, file), 'utf8');
      if (text.trimEnd().endsWith('}')) return `diagnostic report:\n${summarizeReport(text)}`;
    } catch (err) {
      return `diagnostic report: unreadable (${(err as Error).message})`;
    }
  }
  return `diagnostic report: none within ${ms} ms (its main thread does not run JavaScript)`;
}

/** pid_max's ceiling on 64-bit Linux (2^22): no pid reaches it. */
const PID_CEILING = 4_194_304;

/**
 * A uid that no other process running these tests uses at the same time,
 * the `slot`th (0-999) of this process: `slot` keeps a test's users apart
 * from other tests' in this process, the pid from every other process (CI
 * runs the suite on two Nodes at once). For a test that depends on what the
 * kernel counts per user across all of a user's processes: fds in flight
 * (ETOOMANYREFS past RLIMIT_NOFILE), which another test's sends as the same
 * user would fill. A number no user of the machine has (from 10^6 up), gid
 * the same; run a process as it with spawnAsUid.
 */
export function ownUid(slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot > 999) throw new RangeError(`ownUid: slot ${slot} is not an integer from 0 to 999`);
  return 1_000_000 + slot * PID_CEILING + process.pid;
}

/** Runs `command args...` as nobody; its stdin is a pipe (child.stdin). */
export function spawnAsNobody(command: string, args: readonly string[], env: Record<string, string> = {}, options: SpawnOptions = {}): NobodyProcess {
  return spawnAsUid(NOBODY, command, args, env, options);
}

/**
 * Runs `command args...` as `uid` (its gid the same number, no groups): one
 * more other user, which need not exist in /etc/passwd. Its stdin is a pipe.
 */
export function spawnAsUid(uid: number, command: string, args: readonly string[], env: Record<string, string> = {}, options: SpawnOptions = {}): NobodyProcess {
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', command, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let gone = false;
  // 'close': the process has exited and its stdout/stderr are drained.
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code) => {
      gone = true;
      for (const w of waiters.splice(0)) w();
      resolve({ code, stdout, stderr });
    }),
  );
  const find = (key: string): Record<string, unknown> | undefined => {
    for (const l of stdout.split('\n')) {
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        if (o !== null && typeof o === 'object' && key in o) return o;
      } catch {
        // not a JSON line
      }
    }
    return undefined;
  };
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  /**
   * `settles`, or, past `guardMs`, a TimeoutError that says what the
   * process was doing then (describeHang, options.describe, what it
   * printed), once it has been killed and has exited.
   */
  const guarded = <T>(settles: Promise<T>, what: string, guardMs: number): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    let fired = false;
    /** What the process was doing (read before anything is sent to it), then the kill; whatever of it fails, the guard's error still comes. */
    const describeThenKill = async (): Promise<string> => {
      const seen = [`${command} as uid ${uid}: ${what}: not within ${guardMs} ms (a hang guard); it is killed`];
      try {
        seen.push(describeHang(child.pid as number));
        if (options.describe) seen.push(options.describe());
        if (options.reportDir !== undefined) seen.push(await nodeReport(child, options.reportDir, scaled(3000)));
      } catch (err) {
        seen.push(`(describing it failed: ${(err as Error).message})`);
      }
      seen.push(`stdout: ${JSON.stringify(stdout)}`, `stderr: ${JSON.stringify(stderr)}`);
      kill();
      // Not longer than a SIGKILL takes (a process stuck in the kernel may not die at all: the error says so).
      let gave: NodeJS.Timeout | undefined;
      const waited = new Promise<string>((r) => (gave = setTimeout(() => r('it has not exited after SIGKILL'), scaled(5000))));
      seen.push(await Promise.race([exit.then(() => 'it has exited'), waited]));
      clearTimeout(gave);
      return seen.join('\n');
    };
    const hang = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // The kill ends the wait otherwise ("exited without printing"): the guard's error is the one to see.
        fired = true;
        void describeThenKill().then((seen) => reject(new TimeoutError(seen)));
      }, guardMs);
    });
    const unlessFired = settles.then(
      (v) => (fired ? hang : v),
      (err: unknown) => (fired ? hang : Promise.reject(err)),
    );
    return Promise.race([unlessFired, hang]).finally(() => clearTimeout(timer));
  };
  return {
    child,
    pid: child.pid as number,
    line<T>(key: string, guardMs = NOBODY_HANG_GUARD_MS): Promise<T> {
      const found = new Promise<T>((resolve, reject) => {
        const check = (): void => {
          const o = find(key);
          if (o) resolve(o as T);
          else if (gone) reject(new Error(`the nobody process exited without printing ${key}: ${stderr}`));
          else waiters.push(check);
        };
        check();
      });
      return guarded(found, `no line with ${JSON.stringify(key)}`, guardMs);
    },
    exited: (guardMs = NOBODY_HANG_GUARD_MS) => guarded(exit, 'not exited', guardMs),
    kill,
  };
}
