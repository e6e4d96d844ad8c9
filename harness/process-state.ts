/**
 * The process-wide state beside process.env (process-env.ts) that rows
 * sharing a process share: the working directory, the file mode creation
 * mask, and the credentials (uids, gids, supplementary groups). A row that
 * changes one changes it for every later row of its process: a row that
 * chdir'd into its own temporary directory, removed as it ends, leaves
 * the next row's process.cwd() failing with ENOENT; a umask of 0777 makes
 * every file a later row creates unreadable; a row that dropped root
 * leaves later rows unable to open what they need. The session takes
 * the state once, and each row's end puts the working directory and the
 * umask back; credentials are put back when the process still may (it
 * kept the privilege to), and otherwise the process is not to run another
 * row (`lost`).
 */

/** The process's credentials, as Node reads them. */
interface Credentials {
  uid: number;
  euid: number;
  gid: number;
  egid: number;
  groups: number[];
}

export interface ProcessState {
  cwd: string;
  umask: number;
  credentials: Credentials;
}

/** The credentials now. */
function credentials(): Credentials {
  return { uid: process.getuid?.() ?? -1, euid: process.geteuid?.() ?? -1, gid: process.getgid?.() ?? -1, egid: process.getegid?.() ?? -1, groups: [...(process.getgroups?.() ?? [])].sort((a, b) => a - b) };
}

function sameCredentials(a: Credentials, b: Credentials): boolean {
  return a.uid === b.uid && a.euid === b.euid && a.gid === b.gid && a.egid === b.egid && a.groups.join(',') === b.groups.join(',');
}

function describeCredentials(c: Credentials): string {
  return `uid ${c.uid}, euid ${c.euid}, gid ${c.gid}, egid ${c.egid}, groups [${c.groups.join(', ')}]`;
}

/** The state now. */
export function snapshotProcessState(): ProcessState {
  // process.umask() with no argument is deprecated (it sets and sets back): set it to itself the same way.
  const umask = process.umask(0o022);
  process.umask(umask);
  return { cwd: process.cwd(), umask, credentials: credentials() };
}

/** What a row changed, as put back (or not) by restoreProcessState. */
export interface ProcessStateChanges {
  /** What was changed and is put back: `working directory (was /x, now /gone)`, `umask (was 0022, now 0777)`. */
  putBack: string[];
  /** What changed and cannot be put back (credentials given up; a working directory no longer enterable): what it is now. */
  lost?: string;
}

/**
 * Puts back the credentials (when it can), the working directory and the
 * umask of `saved`; says what differed. Credentials go first: a working
 * directory only the session's user may enter is entered as that user.
 */
export function restoreProcessState(saved: ProcessState): ProcessStateChanges {
  const putBack: string[] = [];
  const lost: string[] = [];
  const now = credentials();
  const was = saved.credentials;
  if (!sameCredentials(now, was)) {
    // Back to what the session began with, each step on its own (one that fails, EPERM, does not skip the rest), in the
    // order that keeps the privilege to do the next: the effective uid root first when it may be had again (a seteuid
    // undone, or a session that began as root with another effective uid), then gids and groups (only when they
    // differ: setgroups needs the privilege even to set what is there), then the real uid (setuid as root sets all
    // three, so only when the effective uid can be had again after it), and the effective uid last.
    const step = (put: () => void): void => {
      try {
        put();
      } catch {
        // EPERM: checked below.
      }
    };
    if (now.euid !== 0 && (was.uid === 0 || was.euid === 0)) step(() => process.seteuid?.(0));
    if (credentials().gid !== was.gid) step(() => process.setgid?.(was.gid));
    if (credentials().egid !== was.egid) step(() => process.setegid?.(was.egid));
    if (credentials().groups.join(',') !== was.groups.join(',')) step(() => process.setgroups?.(was.groups));
    if (credentials().uid !== was.uid && (was.uid === was.euid || was.uid === 0)) step(() => process.setuid?.(was.uid));
    if (credentials().euid !== was.euid) step(() => process.seteuid?.(was.euid));
    const after = credentials();
    if (sameCredentials(after, was)) putBack.push(`credentials (were ${describeCredentials(was)}, now ${describeCredentials(now)})`);
    else lost.push(`credentials (were ${describeCredentials(was)}, now ${describeCredentials(after)})`);
  }
  let cwd: string | undefined;
  try {
    cwd = process.cwd();
  } catch {
    // Its directory was removed: uv_cwd fails (ENOENT).
  }
  if (cwd !== saved.cwd) {
    const what = `working directory (was ${saved.cwd}, now ${cwd ?? 'a removed directory'})`;
    try {
      process.chdir(saved.cwd);
      putBack.push(what);
    } catch (err) {
      lost.push(`${what}, which it cannot enter again (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  const umask = process.umask(saved.umask);
  if (umask !== saved.umask) putBack.push(`umask (was ${saved.umask.toString(8).padStart(4, '0')}, now ${umask.toString(8).padStart(4, '0')})`);
  return lost.length > 0 ? { putBack, lost: lost.join(', ') } : { putBack };
}
