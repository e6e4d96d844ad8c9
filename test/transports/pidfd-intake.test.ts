/**
 * The command side of the pidfd transport (src/transports/pidfd-intake.ts)
 * pulls the client's fds through a pidfd for the client's process, after
 * proving it can by pulling the client's end of the socket once. In the
 * command's process that pidfd is fdbridge's own (numbered above the fd
 * floor and registered), as every fd of fdbridge's there: a command that
 * closes a number by mistake through fdbridge's closeFd (its own stale
 * number, which may be one of fdbridge's) is refused with EBADF and the
 * pidfd stays open, so duplications go on. And the probe's copy of the
 * client's end is closed at once: the command's process holds nothing of
 * the client's socket.
 */
import { join } from 'node:path';

import { connect, makeMemfd, closeFd, openFdTable } from '../../src';
import { packageRoot } from '../../src/paths';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles } from '../util/processes';

const HOSTILE_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'hostile-command.js'), export: 'HostileCommand' };

test("the command process holds no copy of the client's end; a command closing fdbridge's pidfd there through closeFd is refused with EBADF, and duplications go on", async () => {
  const before = openFdTable();
  const conn = await connect('pidfd', { command: HOSTILE_COMMAND });
  const memfd = makeMemfd('after-the-close');
  try {
    // The connection's socket is the one socket this process gained.
    const ours = [...openFdTable()].filter(([fd, target]) => !before.has(fd) && target.startsWith('socket:')).map(([, target]) => target);
    expect(ours).toHaveLength(1);
    const links = await conn.call<Array<[number, string]>>('fdLinks');
    expect(links.filter(([, link]) => link === ours[0])).toEqual([]);
    const pidfds = links.filter(([, link]) => link === 'anon_inode:[pidfd]').map(([fd]) => fd);
    // The pidfd the pulls go through, at least (a watch of this process may hold one more).
    expect(pidfds.length).toBeGreaterThan(0);
    expect(await conn.call('closeNumbers', pidfds)).toEqual(pidfds.map(() => 'EBADF'));
    expect(await conn.call('fdLinks')).toEqual(links);
    const [a, b] = await Promise.all([conn.dupFileDescriptor(memfd), conn.dupFileDescriptors([memfd, memfd])]);
    expect(typeof a).toBe('number');
    expect(b).toHaveLength(2);
  } finally {
    await conn.close();
    closeFd(memfd);
  }
  expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
