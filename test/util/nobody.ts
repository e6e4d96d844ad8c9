/** Test utilities: processes run as `nobody` (65534), the other local user of these tests (we run as root). */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';

export const NOBODY = 65534;
export const isRoot = process.getuid?.() === 0;

/** `require()` path of the compiled library, for scripts run with `node -e`. */
export const DIST_SRC = join(packageRoot, 'dist', 'src');

export interface NobodyProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves with the first stdout line that parses as JSON and has `key`. */
  line<T = Record<string, unknown>>(key: string): Promise<T>;
  /** Resolves once it has exited, with everything it printed. */
  exited(): Promise<{ code: number | null; stdout: string; stderr: string }>;
  kill(): void;
}

/**
 * Runs `node -e script` as nobody (setpriv drops uid, gid and every
 * supplementary group, as a real other user has none of ours).
 */
export function runAsNobody(script: string, env: Record<string, string> = {}): NobodyProcess {
  return spawnAsNobody(process.execPath, ['-e', script], env);
}

/** Runs `command args...` as nobody; its stdin is a pipe (child.stdin). */
export function spawnAsNobody(command: string, args: readonly string[], env: Record<string, string> = {}): NobodyProcess {
  return spawnAsUid(NOBODY, command, args, env);
}

/**
 * Runs `command args...` as `uid` (its gid the same number, no groups): one
 * more other user, which need not exist in /etc/passwd. Its stdin is a pipe.
 */
export function spawnAsUid(uid: number, command: string, args: readonly string[], env: Record<string, string> = {}): NobodyProcess {
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
  return {
    child,
    pid: child.pid as number,
    line<T>(key: string): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const check = (): void => {
          const o = find(key);
          if (o) resolve(o as T);
          else if (gone) reject(new Error(`the nobody process exited without printing ${key}: ${stderr}`));
          else waiters.push(check);
        };
        check();
      });
    },
    exited: () => exit,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
