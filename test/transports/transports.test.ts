/**
 * One suite, run identically against every transport: the command runs in
 * this thread, a worker, a child process or a helper daemon (its own
 * process), and the client sees the same behaviour through one interface.
 * Besides the global check of this process's fd table, each test checks the
 * command's process: the helper daemon's table returns to its baseline, a
 * child process exits cleanly.
 */
import { lstatSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  ClosedError,
  connect,
  LOG_COMMAND,
  logRedirectOption,
  PeerExitedError,
  PROBE_COMMAND,
  RemoteError,
  SystemError,
  UnsupportedError,
  type ProbeCommand,
} from '../../src';
import { closeFd, fdIdentity, makeMemfd, makePipe, openFdTable, type FdTable } from '../../src/fd';
import type { ChildConnection } from '../../src/transports/child';
import type { WorkerConnection } from '../../src/transports/worker';
import { exitOf, fdTableSettles, helperForSuite, startHelperProcess } from '../util/processes';
import { connectionsPerTest, SPAWNED, TRANSPORTS } from '../util/transport-suite';

const suite = helperForSuite('fdbridge-transports-');

describe.each(TRANSPORTS)('%s transport', (transport) => {
  const { open, killed } = connectionsPerTest(transport, suite);

  test('reports where the command runs', async () => {
    const conn = await open();
    const where = await conn.proxy<ProbeCommand>().where();
    expect(where).toEqual({ transport, pid: conn.location.pid, threadId: conn.location.threadId });
    expect(conn.transport).toBe(transport);
    if (transport === 'direct' || transport === 'worker') expect(where.pid).toBe(process.pid);
    else expect(where.pid).not.toBe(process.pid);
    if (transport === 'worker') expect(where.threadId).not.toBe(0);
  });

  test("duplicates a pipe's write end; the command writes through it and the client reads it", async () => {
    const conn = await open();
    const [r, w] = makePipe();
    try {
      const remote = await conn.dupFileDescriptor(w);
      const local = fdIdentity(w);
      // The client may close its own copy at once: the duplicate lives on there.
      closeFd(w);
      const [far] = await conn.call<Array<{ dev: string; ino: string; type: string }>>('identities', [remote]);
      expect(far).toEqual({ dev: String(local.dev), ino: String(local.ino), type: 'pipe' });
      expect(await conn.call('write', remote, 'through the pipe')).toBe(16);
      const buf = Buffer.alloc(64);
      const n = readSync(r, buf, 0, buf.length, null);
      expect(buf.toString('utf8', 0, n)).toBe('through the pipe');
    } finally {
      closeFd(r);
    }
  });

  test('the log redirect flow: a file opened by the client, appended to, then truncated', async () => {
    const file = join(suite.dir, `${transport}.log`);
    writeFileSync(file, 'existing\n');
    const first = await open({ command: LOG_COMMAND });
    await logRedirectOption(first, file);
    await first.call('log', 'one');
    await first.call('log', 'two');
    await first.close();
    expect(readFileSync(file, 'utf8')).toBe('existing\none\ntwo\n');

    const second = await open({ command: LOG_COMMAND });
    await logRedirectOption(second, file);
    await second.call('log', 'three');
    expect(readFileSync(file, 'utf8')).toBe('existing\none\ntwo\nthree\n');
    // Redirecting again (here with `!`, which truncates) replaces the log fd;
    // the command closes the one it had adopted before.
    await logRedirectOption(second, `!${file}`);
    await second.call('log', 'fresh');
    expect(readFileSync(file, 'utf8')).toBe('fresh\n');
  });

  test('1,000 concurrent duplications give distinct fds for the right files', async () => {
    const conn = await open();
    const sources = Array.from({ length: 10 }, (_, i) => makeMemfd(`source-${i}`));
    try {
      const wanted = sources.map((fd) => {
        const id = fdIdentity(fd);
        return { dev: String(id.dev), ino: String(id.ino), type: 'file' };
      });
      const remote = await Promise.all(Array.from({ length: 1000 }, (_, i) => conn.dupFileDescriptor(sources[i % 10]!)));
      expect(new Set(remote).size).toBe(1000);
      const far = await conn.call<unknown[]>('identities', remote);
      expect(far).toEqual(remote.map((_, i) => wanted[i % 10]));
      // Half are adopted and closed by the command; close() must close the rest.
      const half = remote.slice(0, 500);
      await conn.call('adopt', half);
      await conn.call('closeAdopted', half);
    } finally {
      sources.forEach(closeFd);
    }
  });

  test('requests reach the command in the order they were made (folded duplications before a later call)', async () => {
    const conn = await open();
    const fd = makeMemfd('order');
    try {
      const dups = [conn.dupFileDescriptor(fd), conn.dupFileDescriptor(fd), conn.dupFileDescriptor(fd)];
      const seen = new Map(await conn.call<Array<[number, string]>>('openFds'));
      for (const remote of await Promise.all(dups)) expect(seen.get(remote)).toBe('/memfd:order (deleted)');
    } finally {
      closeFd(fd);
    }
  });

  test('the batch form duplicates 600 fds in order (3 messages of at most 253)', async () => {
    const conn = await open();
    const sources = Array.from({ length: 6 }, (_, i) => makeMemfd(`batch-${i}`));
    try {
      const list = Array.from({ length: 600 }, (_, i) => sources[i % 6]!);
      const remote = await conn.dupFileDescriptors(list);
      expect(remote).toHaveLength(600);
      expect(new Set(remote).size).toBe(600);
      const far = await conn.call<Array<{ ino: string }>>('identities', remote);
      expect(far.map((f) => f.ino)).toEqual(list.map((fd) => String(fdIdentity(fd).ino)));
      expect(await conn.dupFileDescriptors([])).toEqual([]);
    } finally {
      sources.forEach(closeFd);
    }
  });

  test('duplicating a closed fd is a typed EBADF error, and bad arguments throw at once', async () => {
    const conn = await open();
    // A number far above anything open: a freshly closed low number would be
    // reused by the very next dup (the batch below dups fd 0 first).
    const fd = 9999;
    expect(openFdTable().has(fd)).toBe(false);
    const err = await conn.dupFileDescriptor(fd).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code: 'EBADF', errno: -9 });
    await expect(conn.dupFileDescriptors([0, fd])).rejects.toMatchObject({ code: 'EBADF' });
    expect(() => conn.dupFileDescriptor(-1)).toThrow(TypeError);
    expect(() => conn.dupFileDescriptor(1.5)).toThrow(TypeError);
    expect(() => conn.dupFileDescriptors([0, 'x' as unknown as number])).toThrow(TypeError);
    // The connection still works afterwards.
    expect(await conn.call('echo', { ok: true })).toEqual({ ok: true });
  });

  test("calls return values, and the command's errors arrive as RemoteError", async () => {
    const conn = await open();
    const probe = conn.proxy<ProbeCommand>();
    expect(await probe.echo([1, 'two', { three: 3 }])).toEqual([1, 'two', { three: 3 }]);
    const err = await probe.fail('it broke', 'E_BROKEN').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_REMOTE', method: 'fail', remote: { message: 'it broke', code: 'E_BROKEN' } });
    await expect(conn.call('noSuchMethod')).rejects.toBeInstanceOf(RemoteError);
    await expect(conn.call('close')).rejects.toBeInstanceOf(RemoteError);
  });

  test('close() twice is harmless; afterwards every operation is a ClosedError', async () => {
    const conn = await open();
    const pending = conn.call('hang').catch((e: unknown) => e);
    await conn.close();
    await conn.close();
    expect(conn.closed).toBe(true);
    expect(await pending).toBeInstanceOf(ClosedError);
    await expect(conn.dupFileDescriptor(0)).rejects.toBeInstanceOf(ClosedError);
    await expect(conn.call('echo', 1)).rejects.toBeInstanceOf(ClosedError);
  });

  test("onCommandClosed sees the command's process after the command closed, before it ends", async () => {
    const beforeConnect = openFdTable();
    const seen: string[] = [];
    let baseline: FdTable | undefined;
    const conn = await connect(transport, {
      command: PROBE_COMMAND,
      socketPath: suite.socketPath,
      onCommandClosed: async (location) => {
        seen.push(await fdTableSettles(location.pid, baseline as FdTable));
      },
    });
    // A worker's own event loop fds come and go with it: compare with the
    // table from before it started. Elsewhere, with the table right after connect.
    baseline = transport === 'worker' ? beforeConnect : openFdTable(conn.location.pid);
    const fd = makeMemfd();
    try {
      const remote = await conn.dupFileDescriptors([fd, fd, fd, fd, fd]);
      await conn.call('adopt', remote.slice(0, 2));
      expect(openFdTable(conn.location.pid).has(remote[4]!)).toBe(true);
    } finally {
      closeFd(fd);
    }
    await conn.close();
    await conn.close();
    // Called once; by then the two adopted fds (closed by the command's
    // close()) and the three unadopted ones (closed by the connection) are gone.
    expect(seen).toEqual(['']);
    if (SPAWNED.has(transport)) expect((await exitOf((conn as ChildConnection).child)).code).toBe(0);
  });

  if (transport === 'child' || transport === 'helper') {
    test('a lone duplication the command side cannot take (at its fd limit) is a typed error; the connection lives on', async () => {
      const conn = await open();
      const probe = conn.proxy<ProbeCommand>();
      const [soft] = await probe.fdLimit();
      const open_ = (await probe.openFds()).length;
      const fd = makeMemfd('limit');
      try {
        // Leave the far side no free slot (the limit at its lowest free fd
        // number), so the fd cannot be installed there.
        const used = new Set((await probe.openFds()).map(([n]) => n));
        let lowestFree = 0;
        while (used.has(lowestFree)) lowestFree++;
        await probe.setFdLimit(lowestFree);
        const err = await conn.dupFileDescriptor(fd).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(SystemError);
        expect(err).toMatchObject({ code: 'EMFILE', syscall: 'recvmsg' });
      } finally {
        await probe.setFdLimit(soft);
        closeFd(fd);
      }
      expect((await probe.openFds()).length).toBe(open_);
      const remote = await conn.dupFileDescriptor(0);
      expect(await conn.call('echo', remote)).toBe(remote);
    });
  }

  if (SPAWNED.has(transport)) {
    test('a command process that dies before it is ready fails connect with PeerExitedError (its exit code)', async () => {
      const module = join(suite.dir, 'exits-on-load.js');
      writeFileSync(module, 'process.exit(7);\n');
      const err = await connect(transport, { command: { module, export: 'Nothing' } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport, exitCode: 7 });
      expect((err as Error).message).toMatch(/^connect failed: .* exited with code 7/);
    });

    test('a child killed with SIGKILL mid-request fails every pending call with PeerExitedError (a hang would hit the test timeout)', async () => {
      const conn = await open();
      const pid = conn.location.pid;
      const calls = [conn.call('hang'), conn.call('hang')];
      killed.add(conn);
      process.kill(pid, 'SIGKILL');
      for (const call of calls) {
        const err = await call.catch((e: unknown) => e);
        expect(err).toBeInstanceOf(PeerExitedError);
        expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_PEER_EXITED', transport, pid, signal: 'SIGKILL' });
        expect((err as Error).message).toMatch(/killed by SIGKILL/);
      }
      // A dead peer fails new requests at once, and takes no fd with it.
      const fd = makeMemfd();
      try {
        await expect(conn.dupFileDescriptor(fd)).rejects.toBeInstanceOf(PeerExitedError);
      } finally {
        closeFd(fd);
      }
      // Even a request with nothing to send, or naming a closed fd: the
      // connection's state comes first.
      await expect(conn.dupFileDescriptors([])).rejects.toBeInstanceOf(PeerExitedError);
      const closed = makeMemfd();
      closeFd(closed);
      await expect(conn.dupFileDescriptors([closed])).rejects.toBeInstanceOf(PeerExitedError);
      expect((await exitOf((conn as ChildConnection).child)).signal).toBe('SIGKILL');
    });
    test('a duplication queued behind a full socket when the command is killed rejects with PeerExitedError', async () => {
      const conn = await open();
      // The command stops reading, so what follows fills the socket and
      // waits in the send queue; the lone duplication last of all.
      const blocked = conn.call('block', 2000).catch((e: unknown) => e);
      const payload = 'x'.repeat(16384);
      const calls = Array.from({ length: 200 }, () => conn.call('echo', payload).catch((e: unknown) => e));
      const fd = makeMemfd();
      try {
        const dup = conn.dupFileDescriptor(fd).catch((e: unknown) => e);
        killed.add(conn);
        process.kill(conn.location.pid, 'SIGKILL');
        const outcomes = [await blocked, ...(await Promise.all(calls)), await dup];
        for (const outcome of outcomes) expect(outcome).toBeInstanceOf(PeerExitedError);
      } finally {
        closeFd(fd);
      }
    });
  }

  if (transport === 'worker') {
    test('a worker that exits mid-request fails every pending call', async () => {
      const conn = await open();
      const pending = conn.call('hang');
      const exiting = conn.call('exit', 3);
      for (const call of [pending, exiting]) {
        await expect(call).rejects.toMatchObject({ code: 'ERR_FDBRIDGE_PEER_EXITED', transport: 'worker', exitCode: 3 });
      }
      await expect(conn.dupFileDescriptor(0)).rejects.toBeInstanceOf(PeerExitedError);
      await expect(conn.dupFileDescriptors([])).rejects.toBeInstanceOf(PeerExitedError);
    });

    test('fds given to a terminated worker are closed, not leaked', async () => {
      const conn = await open();
      const fd = makeMemfd();
      try {
        const remote = await conn.dupFileDescriptors([fd, fd, fd]);
        expect(openFdTable().has(remote[0]!)).toBe(true);
        await (conn as WorkerConnection).worker.terminate();
      } finally {
        closeFd(fd);
      }
      // The global fd-table check after this test proves the three are gone.
    });
  }
});

describe('helper daemon killed with SIGKILL', () => {
  test('pending calls fail with PeerExitedError; a new daemon replaces the stale socket; SIGTERM removes it', async () => {
    const path = join(suite.dir, 'doomed.sock');
    const doomed = await startHelperProcess(path);
    const conn = await connect('helper', { command: PROBE_COMMAND, socketPath: path });
    const fd = makeMemfd();
    try {
      await conn.dupFileDescriptor(fd);
      const pending = conn.call('hang');
      await doomed.stop('SIGKILL');
      const err = await pending.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport: 'helper', pid: doomed.pid });
      expect((err as Error).message).toMatch(/helper daemon \(pid \d+\) exited/);
    } finally {
      closeFd(fd);
      await conn.close();
    }
    // SIGKILL left the socket file behind; a new daemon takes it over...
    expect(lstatSync(path).isSocket()).toBe(true);
    const next = await startHelperProcess(path);
    const again = await connect('helper', { command: PROBE_COMMAND, socketPath: path });
    expect(await again.call('echo', 'alive')).toBe('alive');
    await again.close();
    // ...and removes it on SIGTERM.
    expect(await next.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(() => lstatSync(path)).toThrow(/ENOENT/);
  });
});

describe('a command process running as another user', () => {
  const NOBODY = 65534;
  if (process.getuid?.() !== 0) {
    test.skip('needs root to start the command as another uid', () => undefined);
    // eslint-disable-next-line no-console
    console.log('transports.test: not root, so the other-uid child/pidfd tests are skipped');
    return;
  }

  test('child: SCM_RIGHTS works across uids', async () => {
    const conn = await connect('child', { command: PROBE_COMMAND, child: { uid: NOBODY, gid: NOBODY } });
    const [r, w] = makePipe();
    try {
      const remote = await conn.dupFileDescriptor(w);
      expect(await conn.call('write', remote, 'from nobody')).toBe(11);
      const buf = Buffer.alloc(32);
      expect(buf.toString('utf8', 0, readSync(r, buf, 0, 32, null))).toBe('from nobody');
    } finally {
      closeFd(r);
      closeFd(w);
      await conn.close();
    }
  });

  test('pidfd: a process that may not ptrace the client fails to connect with UnsupportedError', async () => {
    const err = await connect('pidfd', { command: PROBE_COMMAND, child: { uid: NOBODY, gid: NOBODY } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedError);
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_UNSUPPORTED' });
    expect((err as Error).message).toMatch(/ptrace/);
  });
});
