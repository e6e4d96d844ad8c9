/**
 * On remote a regular file open for reading is given as a copy of the
 * whole file (README, Remote commands). Some regular files cannot be read
 * to their end: /proc/self/mem fails with EIO at its start (nothing is
 * mapped at address 0), a namespace fd (/proc/self/ns/net) with EINVAL, a
 * file on a failing disk with EIO wherever its bad block is. The copy's
 * failed read ended it as the file's end does, and the duplication
 * resolved with a copy cut short there (for these, empty): the command read
 * what looked like the whole file. It must fail with a SystemError naming
 * the read's errno instead, nothing of the copy left over there, and a
 * batch holding such a file must fail whole.
 *
 * Mid-copy failures (a read after some bytes came) are driven in
 * test/unit/remote-endpoints.test.ts, which stages the failing read.
 */
import { closeSync, openSync } from 'node:fs';

import { connect, PROBE_COMMAND, SystemError } from '../../src';
import { makePipe, closeFds, openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

test.each([
  ['/proc/self/mem', 'EIO'],
  ['/proc/self/ns/net', 'EINVAL'],
])('a file whose read fails (%s: %s) is refused with a SystemError naming it; a batch holding it fails whole; nothing is left over there', async (path, code) => {
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  const fd = openSync(path, 'r');
  const [r, w] = makePipe();
  try {
    // The server's table once its runtime has settled (the first call opens what it opens lazily).
    await conn.call('where');
    const serverBaseline = openFdTable(conn.location.pid);
    const err = await conn.dupFileDescriptor(fd).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).code).toBe(code);
    expect((err as Error).message).toMatch(new RegExp(`dupFileDescriptor\\(${fd}\\) failed on the remote transport: the file could not be read to its end for its copy`));
    const batch = await conn.dupFileDescriptors([r, fd, w]).catch((e: unknown) => e);
    expect(batch).toBeInstanceOf(SystemError);
    expect((batch as SystemError).code).toBe(code);
    // Named as the caller asked for it: the batch, and the entry.
    expect((batch as Error).message).toMatch(new RegExp(`^dupFileDescriptors \\(fd ${fd}\\) failed on the remote transport: the file could not be read to its end`));
    expect(await fdTableSettles(conn.location.pid, serverBaseline)).toBe('');
    // The connection goes on: a readable file is still copied.
    const far = await conn.dupFileDescriptor(r);
    expect(typeof far).toBe('number');
  } finally {
    await conn.close();
    closeSync(fd);
    closeFds([r, w]);
  }
}, scaled(60_000));
