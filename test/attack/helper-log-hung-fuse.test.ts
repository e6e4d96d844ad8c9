/**
 * A client of a shared helper daemon (here of another uid, nobody) gives it
 * an fd on a file whose file system stops answering (a FUSE file system
 * such a client can run itself) and redirects the log command's output
 * there. The daemon must not ask that file system anything on its event
 * loop (a file's identity and type are read with statx AT_STATX_DONT_SYNC):
 * every other client is still served, with typed errors only, and the
 * daemon's copy is released once the client has left and the file system
 * is gone. The daemon's close of that fd (closeClientFds, as the log goes
 * elsewhere or the client leaves) waits on the file system (FLUSH, which
 * every close of a number calls, not only the last reference's) on a
 * closer thread, holding nothing that serving another client takes.
 * Likewise in one process: a thread whose closeFd of a number, or whose
 * pidfd pull of it, waits there holds back no other thread's fd calls,
 * with kcmp(2) or without it.
 */
import { spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, LOG_COMMAND, makeMemfd, type LogCommand } from '../../src';
import { makeEventfd, openFdTable, closeFds } from '../../src/fd';
import { statusWhen } from '../util/helper-status';
import { DIST_SRC, isRoot, NOBODY, NOBODY_HANG_GUARD_MS, spawnAsUid, type NobodyProcess } from '../util/nobody';
import { fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { within } from '../util/within';

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

  /** Has the server stop answering. */
  async function hang(fs: HungFuse): Promise<void> {
    fs.server.child.stdin?.write('hang\n');
    await fs.server.line('hanging');
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

  /**
   * Mounts a FUSE file system, runs the client (fixtures/fuse-log-client.js,
   * as nobody) on its file and `body` with a step runner (a stdin line, and
   * the answer must be ok); then the client is killed (its own close of the
   * file waits on the file system, FLUSH, until the server is gone), the
   * file system is gone, and the daemon's and this process's fd tables must
   * be as before.
   */
  async function withLogClient(body: (step: (name: string) => Promise<void>, fs: HungFuse) => Promise<void>): Promise<void> {
    const daemonBefore = openFdTable(helper.pid);
    const testBefore = openFdTable(process.pid);
    const fs = await mountHungFuse();
    let client: NobodyProcess | undefined;
    try {
      const started = spawnAsUid(NOBODY, process.execPath, [join(FIXTURES, 'fuse-log-client.js'), DIST_SRC, socketPath, String(process.getuid?.()), join(fs.mountpoint, 'f')]);
      client = started;
      await started.line('connected');
      const stdin = started.child.stdin as ChildProcessWithoutNullStreams['stdin'];
      await body(async (name) => {
        stdin.write(`${name}\n`);
        expect(await started.line(name)).toEqual({ [name]: { ok: true } });
      }, fs);
    } finally {
      client?.kill();
      await unmount(fs);
      await client?.exited();
    }
    expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
    expect(await fdTableSettles(process.pid, testBefore)).toBe('');
  }

  test.each([
    ['after the fd was given, before the redirect', 'hang-after-dup'],
    ['before the fd was given', 'hang-before-dup'],
  ] as const)('stopping to answer %s: other clients are served, the fd is released after', (_when, mode) =>
    withLogClient(async (step, fs) => {
      if (mode === 'hang-before-dup') await hang(fs);
      await step('dup');
      if (mode === 'hang-after-dup') await hang(fs);
      // The daemon looks at the file (its identity, its type) without asking the file system.
      await step('redirect');
      await anotherClientServed(`while-hung-${mode}`);
      await step('close');
    }),
  );

  /** anotherClientServed, bounded by the test's hang guard besides the library's own deadline (connect's). */
  function servedWithin(name: string): Promise<void> {
    return within(anotherClientServed(name), NOBODY_HANG_GUARD_MS, `another client (${name}): a connection and a dup round trip`);
  }

  test.each([
    ['its log going elsewhere (closeClientFds of the fd)', 'away'],
    ["its disconnect (the command's close closes the fd)", 'close'],
  ] as const)("the daemon's close of the fd waits on the file system after %s: other clients are served meanwhile, the fd is released after", (_after, last) =>
    withLogClient(async (step, fs) => {
      await step('dup');
      await step('redirect');
      await hang(fs);
      await step(last);
      // The daemon's close of the number is in the file's flush: the client's own fd stays open.
      expect(await fs.server.line('flush')).toEqual({ flush: 1 });
      await servedWithin(`while-closed-${last}-1`);
      await servedWithin(`while-closed-${last}-2`);
      if (last === 'away') await step('close');
    }),
  );

  // Without kcmp (fixtures/without-kcmp.py: a seccomp filter refuses it, as
  // a kernel built without it or Docker's default profile does), a number
  // being closed is told from another fd put there by its install
  // generation and file instead of by comparing it with its copy.
  test.each([
    ['closeFd of a number of the file', 'closeFd', 'kcmp'],
    ['pidfd pull of it (the number the pull landed on below the floor is closed)', 'pull', 'kcmp'],
    ['closeFd of a number of the file', 'closeFd', 'no kcmp'],
    ['pidfd pull of it (the number the pull landed on below the floor is closed)', 'pull', 'no kcmp'],
  ] as const)("a worker thread's %s waits on the file system: the process's main thread goes on with fdbridge's fd calls (%s, %s)", async (_what, how, kcmp) => {
    const testBefore = openFdTable(process.pid);
    const fs = await mountHungFuse();
    let proc: NobodyProcess | undefined;
    try {
      const node = [process.execPath, join(FIXTURES, 'fuse-close-thread.js'), DIST_SRC, join(fs.mountpoint, 'f'), how];
      proc = kcmp === 'kcmp' ? spawnAsUid(0, node[0]!, node.slice(1)) : spawnAsUid(0, 'python3', [join(FIXTURES, 'without-kcmp.py'), ...node]);
      await proc.line('opened');
      await hang(fs);
      const stdin = proc.child.stdin as ChildProcessWithoutNullStreams['stdin'];
      stdin.write('go\n');
      expect(await proc.line('started')).toEqual({ started: how });
      // The worker's close is in the file's flush.
      expect(await fs.server.line('flush')).toEqual({ flush: 1 });
      stdin.write('other\n');
      // The main thread's eventfd took the number being closed (the close freed it before the flush) and closed it as its own.
      expect(await proc.line('served')).toEqual({ served: { atClosingNumber: true } });
    } finally {
      // The worker's close then ends (the connection aborted), and the process with it.
      await unmount(fs);
      await proc?.exited();
    }
    expect(await (proc as NobodyProcess).line('done')).toHaveProperty('done');
    expect(await fdTableSettles(process.pid, testBefore)).toBe('');
  });

  // The daemon's close of a number frees it before the file's flush, and
  // while that close waits there, the next fd the daemon receives can take
  // the number: another copy of the very same open file (the client
  // duplicated the same fd again). Asked to close that one, the daemon must
  // close it, not take it for the one whose close is under way (the same
  // open file, as kcmp sees it, but another fd: another install).
  test("a copy of the same file received at a number whose close waits in the file's flush is closed when the command closes it", async () => {
    const daemonBefore = openFdTable(helper.pid);
    const testBefore = openFdTable(process.pid);
    const fs = await mountHungFuse();
    const path = join(fs.mountpoint, 'f');
    const f = openSync(path, 'r+');
    const elsewhere = makeMemfd('hung-fuse-elsewhere');
    const conn = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 5000 });
    const daemonCopiesOfF = (): number => [...openFdTable(helper.pid).values()].filter((target) => target === path).length;
    let answered = false;
    try {
      const log = conn.proxy<LogCommand>();
      const first = await conn.dupFileDescriptor(f);
      await log.redirectLogToFd(first);
      fs.server.child.stdin?.write('hang-flush\n');
      await fs.server.line('hanging-flush');
      // The log goes elsewhere: the daemon's close of `first` frees the number and waits in the flush.
      await log.redirectLogToFd(await conn.dupFileDescriptor(elsewhere));
      expect(await fs.server.line('flush1')).toEqual({ flush1: true });
      // As many copies of the same open file as there are numbers up to it: one lands at the number freed.
      const copies = await conn.dupFileDescriptors(new Array<number>(first + 1).fill(f));
      expect(copies).toContain(first);
      await log.redirectLogToFd(first);
      // The log goes elsewhere again: the daemon closes the copy at `first` (its close too waits in the flush).
      await log.redirectLogToFd(await conn.dupFileDescriptor(elsewhere));
      const secondClose = await Promise.race([
        fs.server.line('flush2').then(() => 'waits in the flush', (err: Error) => `no second flush: ${err.message}`),
        statusWhen(socketPath, (s) => s.fdsClosing <= 1).then(() => 'ended without a flush', (err: Error) => `no status: ${err.message}`),
      ]);
      expect(secondClose).toBe('waits in the flush');
      fs.server.child.stdin?.write('answer\n');
      expect(await fs.server.line('answered')).toEqual({ answered: 2 });
      answered = true;
      await statusWhen(socketPath, (s) => s.fdsClosing === 0);
      // The copies given and not adopted are all the daemon holds of the file: the two adopted at `first` are closed.
      expect(daemonCopiesOfF()).toBe(copies.length - 1);
    } finally {
      if (!answered) fs.server.child.stdin?.write('answer\n');
      await conn.close();
      closeFds([f, elsewhere]);
      await unmount(fs);
    }
    expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
    expect(await fdTableSettles(process.pid, testBefore)).toBe('');
  });
});
