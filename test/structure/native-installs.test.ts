/**
 * Every call in the addon's sources that puts an fd in the process's table
 * (socket, socketpair, accept4, pipe2, dup3, fcntl F_DUPFD, open, openat,
 * opendir, memfd_create, eventfd, recvmsg, pidfd_open, pidfd_getfd,
 * getsockopt SO_PEERPIDFD...) gives its number a new install generation
 * (fd_ops.h, FdInstalled), under the registry's lock, so that closeClientFds
 * never takes another fd fdbridge put at a number for the one a command
 * held there. A call passes when its line notes the install itself
 * (FdInstalled, FdInstalledAll, FdOwnHigh, MarkNew, FdMarkNew), or says in
 * its comment where it is noted (`installed: ...`), or why it needs none:
 * `another table: ...` (a thread with a table of its own). A temporary fd
 * is noted too: closed before its function returns, it still sits at a
 * number a command may have held for a moment. A new path that makes an
 * fd and says nothing fails here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';

/** The addon's sources (binding.gyp's target), and the headers beside them. */
function addonSources(): string[] {
  const gyp = readFileSync(join(packageRoot, 'binding.gyp'), 'utf8');
  const sources = [...gyp.matchAll(/"(native\/[a-z_]+\.cc)"/g)].map((m) => m[1] as string);
  const headers = sources.map((s) => s.replace(/\.cc$/, '.h'));
  return [...new Set([...sources, ...headers])].filter((file) => {
    try {
      readFileSync(join(packageRoot, file));
      return true;
    } catch {
      return false;
    }
  });
}

/** A call that makes an fd: the name called as a function (not a method, a member or a declaration), or fcntl's F_DUPFD, getsockopt's SO_PEERPIDFD, the pidfd syscalls. */
const MAKES_FD =
  /(?<![.>:\w*&]\s*)\b(socket|socketpair|accept4?|pipe2?|dup[23]?|open|openat|opendir|memfd_create|eventfd|epoll_create1?|inotify_init1?|signalfd|timerfd_create|recvmsg|recvmmsg)\s*\((?!\))|\bF_DUPFD\w*|\bSYS_pidfd_(?:open|getfd)\b|getsockopt\([^;]*SO_PEERPIDFD/;
/** A line that notes the install it makes. */
const NOTES = /\b(FdInstalled|FdInstalledAll|FdOwnHigh|MarkNew|FdMarkNew|MarkNewLocked)\s*\(/;
/** A comment that says where the install is noted, or why none is needed. */
const SAYS = /^\s*(installed|another table):/;

interface Site {
  file: string;
  line: number;
  code: string;
}

/** Each line's code (before a `//` comment, its string literals emptied) and comment. */
function split(line: string): { code: string; comment: string } {
  let inString = false;
  let code = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '"' && line[i - 1] !== '\\') inString = !inString;
    if (!inString && c === '/' && line[i + 1] === '/') return { code, comment: line.slice(i + 2) };
    if (!inString || c === '"') code += c;
  }
  return { code, comment: '' };
}

function sites(): { all: Site[]; silent: Site[] } {
  const all: Site[] = [];
  const silent: Site[] = [];
  for (const file of addonSources()) {
    const lines = readFileSync(join(packageRoot, file), 'utf8').split('\n');
    lines.forEach((text, i) => {
      const { code, comment } = split(text);
      if (/^\s*#\s*(define|ifndef|endif|include)/.test(code) || !MAKES_FD.test(code)) return;
      const site = { file, line: i + 1, code: code.trim() };
      all.push(site);
      if (!NOTES.test(code) && !SAYS.test(comment)) silent.push(site);
    });
  }
  return { all, silent };
}

describe("the addon's calls that put an fd in the process's table", () => {
  test('each notes its install (FdInstalled, FdOwnHigh, MarkNew) or says where it is noted or why none is needed', () => {
    const { all, silent } = sites();
    // The check sees the calls it is about (a pattern that matched nothing would pass anything).
    const seen = new Set(all.map((s) => `${s.file}:${(MAKES_FD.exec(s.code) as RegExpExecArray)[0].replace(/\s*\($/, '')}`));
    for (const known of ['native/scm_rights.cc:recvmsg', 'native/sock_ops.cc:accept4', 'native/sock_ops.cc:socketpair', 'native/fd_ops.cc:pipe2', 'native/fd_ops.cc:F_DUPFD_CLOEXEC']) {
      expect([...seen]).toContain(known);
    }
    expect(silent.map((s) => `${s.file}:${s.line}: ${s.code}`)).toEqual([]);
  });
});
