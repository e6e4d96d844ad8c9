/**
 * A client of a shared helper daemon (here of another uid, nobody) gives it
 * an fd on a file whose file system stops answering (a FUSE file system
 * such a client can run itself) and redirects the log command's output
 * there. The daemon must not ask that file system anything on its event
 * loop (a file's identity and type are read with statx AT_STATX_DONT_SYNC):
 * every other client is still served, with typed errors only, and the
 * daemon's copy is released once the client has left and the file system
 * is gone. (The close of that copy waits on the file system, FLUSH, on a
 * closer thread.)
 */
import { spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, LOG_COMMAND, type LogCommand } from '../../src';
import { makeEventfd, openFdTable, closeFds } from '../../src/fd';
import { DIST_SRC, isRoot, NOBODY, spawnAsUid, type NobodyProcess } from '../util/nobody';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';

/** Why a FUSE file system cannot be mounted here, or undefined when it can be tried. */
function fuseUnusable(): string | undefined {
  if (!isRoot) return 'not running as root (mount(2) of a FUSE file system needs it)';
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch (err) {
    return `/dev/fuse is not usable: ${(err as Error).message}`;
  }
  if (spawnSync('python3', ['--version']).status !== 0) return 'no python3 for the FUSE server';
  return undefined;
}

const unusable = fuseUnusable();
const FIXTURES = join(__dirname, 'fixtures');

/** The FUSE server (fixtures/hung-fuse.py): mounted at `mountpoint`, answering until told to hang. */
interface HungFuse {
  server: NobodyProcess;
  mountpoint: string;
}

let dir: string;
let helper: HelperProcess;
const socketPath = `@fdbridge-test-hung-fuse-${process.pid}`;

describe('a client whose log goes to a FUSE file system that stops answering', () => {
  if (unusable !== undefined) {
    test.skip(`does not stall the daemon (NOT RUN: ${unusable})`, () => undefined);
    // eslint-disable-next-line no-console
    console.warn(`helper-log-hung-fuse.test: NOT RUN, ${unusable}`);
    return;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-hung-fuse-'));
    chmodSync(dir, 0o755); // the client, nobody, opens a file under it
    helper = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY)]);
  });

  afterAll(async () => {
    await helper?.stop('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Mounts the FUSE server's file system on a new directory. */
  async function mountHungFuse(): Promise<HungFuse> {
    const mountpoint = mkdtempSync(join(dir, 'mnt-'));
    const server = spawnAsUid(0, 'python3', [join(FIXTURES, 'hung-fuse.py'), mountpoint]);
    await server.line('mounted');
    return { server, mountpoint };
  }

  /**
   * Kills the server (its /dev/fuse closes: the kernel aborts the
   * connection, and every request left unanswered fails), then unmounts
   * (lazily: a file still open there keeps nothing mounted in view).
   */
  async function unmount(fs: HungFuse): Promise<void> {
    fs.server.kill();
    await fs.server.exited();
    const umount = spawnSync('umount', ['-l', fs.mountpoint]);
    if (umount.status !== 0) throw new Error(`umount -l ${fs.mountpoint}: ${umount.stderr.toString()}`);
  }

  /** Another client, of the daemon's uid: connects, duplicates eventfds and a file, logs a line into the file; a deadline of the library's. */
  async function anotherClientServed(name: string): Promise<void> {
    const other = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 5000 });
    const fds = [makeEventfd(), makeEventfd()];
    const file = join(dir, `${name}.log`);
    const fd = openSync(file, 'a');
    try {
      expect(await other.dupFileDescriptors(fds)).toHaveLength(2);
      const log = other.proxy<LogCommand>();
      await log.redirectLogToFd(await other.dupFileDescriptor(fd));
      await log.log(name);
      expect(readFileSync(file, 'utf8')).toBe(`${name}\n`);
    } finally {
      closeSync(fd);
      closeFds(fds);
      await other.close();
    }
  }

  test.each([
    ['after the fd was given, before the redirect', 'hang-after-dup'],
    ['before the fd was given', 'hang-before-dup'],
  ] as const)('stopping to answer %s: other clients are served, the fd is released after', async (_when, mode) => {
    const daemonBefore = openFdTable(helper.pid);
    const testBefore = openFdTable(process.pid);
    const fs = await mountHungFuse();
    let client: NobodyProcess | undefined;
    try {
      client = spawnAsUid(NOBODY, process.execPath, [join(FIXTURES, 'fuse-log-client.js'), DIST_SRC, socketPath, String(process.getuid?.()), join(fs.mountpoint, 'f')]);
      await client.line('connected');
      const stdin = client.child.stdin as ChildProcessWithoutNullStreams['stdin'];
      const hang = async (): Promise<void> => {
        fs.server.child.stdin?.write('hang\n');
        await fs.server.line('hanging');
      };
      if (mode === 'hang-before-dup') await hang();
      stdin.write('dup\n');
      expect(await client.line('dup')).toEqual({ dup: { ok: true } });
      if (mode === 'hang-after-dup') await hang();
      stdin.write('redirect\n');
      // The daemon looked at the file (its identity, its type) without asking the file system.
      expect(await client.line('redirect')).toEqual({ redirect: { ok: true } });
      await anotherClientServed(`while-hung-${mode}`);

      stdin.write('close\n');
      expect(await client.line('close')).toEqual({ close: { ok: true } });
    } finally {
      // The client's own close of the file waits on the file system (FLUSH) until the server is gone.
      client?.kill();
      await unmount(fs);
      await client?.exited();
    }
    expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
    expect(await fdTableSettles(process.pid, testBefore)).toBe('');
  });
});
