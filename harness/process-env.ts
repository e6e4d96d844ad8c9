/**
 * A row's changes to process.env, undone before the next row. The rows of
 * a run share their process (a row process, or this one with isolation
 * 'none'), and so its environment: a variable one row sets reaches every
 * later row, and every process those rows start, which inherits it (a
 * command's child process: FDBRIDGE_FAILPOINT set by one row would make
 * the next row's command kill itself). The row session takes the environment once,
 * before its first row, and puts it back exactly (variables added deleted,
 * changed or deleted ones set again) as each row ends and before each row
 * begins, saying which variables it put back.
 *
 * The variables fdbridge's own code sets and deletes as it runs, which
 * describe this process rather than configure it, are left as they are:
 * the spawn token a child command drops (src/child-process.ts) and the fd
 * recorder's log (src/fd-track.ts).
 *
 * Node shows the environment's values as UTF-8 strings: a value that is not
 * UTF-8, deleted by a row, is set again as Node read it (its bad bytes as
 * U+FFFD). A value only changed and changed back is not written at all.
 */
import { SPAWN_TOKEN_VARIABLE } from '../src/child-process';
import { JS_LOG_VARIABLES } from '../src/fd-track';

/** The variables fdbridge itself sets or deletes (see the file comment). */
const OWN = new Set<string>([SPAWN_TOKEN_VARIABLE, ...JS_LOG_VARIABLES]);

/**
 * process.env as it was, without fdbridge's own variables, and the object
 * itself: a row may replace process.env with an object of its own (one
 * frozen, say, that refuses the writes that put it back).
 */
export interface EnvironmentSnapshot {
  object: NodeJS.ProcessEnv;
  values: ReadonlyMap<string, string>;
}

/** process.env now, without fdbridge's own variables. */
export function snapshotEnvironment(): EnvironmentSnapshot {
  const saved = new Map<string, string>();
  for (const [key, value] of Object.entries(process.env)) {
    if (OWN.has(key)) continue;
    // Stryker disable next-line ConditionalExpression: forced true, equivalent: process.env's values are strings (the type's undefined is for a name it does not have, which Object.entries does not list); forced false is killed
    if (value !== undefined) saved.set(key, value);
  }
  return { object: process.env, values: saved };
}

/** One variable put back, and what had been done to it. */
export interface EnvironmentChange {
  key: string;
  how: 'set' | 'changed' | 'deleted' | 'replaced';
}

/**
 * Puts process.env back as `saved` had it, fdbridge's own variables aside,
 * and returns the variables that differed (none: nothing was written).
 * An object a row put in process.env's place is put out of it first (a
 * change of its own: `replaced`, key 'process.env'), fdbridge's own
 * variables taken over from it as they are. Throws only when
 * process.env cannot be given its own object back (a row made the property
 * read-only).
 */
export function restoreEnvironment(snapshot: EnvironmentSnapshot): EnvironmentChange[] {
  const changes: EnvironmentChange[] = [];
  if (process.env !== snapshot.object) {
    // fdbridge's own variables as they are now (set or deleted meanwhile in the row's object) go with the put-back.
    const replacement = process.env;
    for (const key of OWN) {
      const value = replacement[key];
      if (value === undefined) delete snapshot.object[key];
      else snapshot.object[key] = value;
    }
    process.env = snapshot.object;
    if (process.env !== snapshot.object) throw new TypeError('process.env was made read-only, and holds another object than its own');
    changes.push({ key: 'process.env', how: 'replaced' });
  }
  const saved = snapshot.values;
  for (const key of Object.keys(process.env)) {
    if (OWN.has(key) || saved.has(key)) continue;
    delete process.env[key];
    changes.push({ key, how: 'set' });
  }
  for (const [key, value] of saved) {
    const now = process.env[key];
    if (now === value) continue;
    process.env[key] = value;
    changes.push({ key, how: now === undefined ? 'deleted' : 'changed' });
  }
  return changes;
}

/** A variable's name as a report shows it: as it is, or a JSON string when it has characters other than these. */
function shownKey(key: string): string {
  return /^[A-Za-z0-9_.-]+$/.test(key) ? key : JSON.stringify(key);
}

/** `set A, B; changed C; deleted D`, each list sorted: the names only (a value may be long, or a secret). */
export function describeChanges(changes: readonly EnvironmentChange[]): string {
  const parts: string[] = changes.some((c) => c.how === 'replaced') ? ['replaced the object process.env'] : [];
  for (const how of ['set', 'changed', 'deleted'] as const) {
    const keys = changes
      .filter((c) => c.how === how)
      .map((c) => c.key)
      .sort()
      .map(shownKey);
    if (keys.length > 0) parts.push(`${how} ${keys.join(', ')}`);
  }
  return parts.join('; ');
}
