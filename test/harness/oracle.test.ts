/**
 * The leak oracle on its own: which process is compared when, under which
 * role, and which differences it blames on the row. Processes are small
 * shells that open a file when told (`exec 5>file`), so a leak in them is
 * staged exactly; connections are stand-ins with the location and
 * transport the oracle reads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Connection, TransportName } from '../../src';
import * as leakCheck from '../../src/leak-check';
import type { FdEntry } from '../../src/leak-check';
import * as runtimeFds from '../../src/runtime-fds';
import { LeakLedger, LeakOracle } from '../../harness/oracle';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-oracle-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A shell that says 'ready', opens `path` as its fd 5 on the first line it
 * reads and says 'opened', closes it on the next and says 'closed', and ends
 * on the one after (or when its stdin ends).
 */
class Opener {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  #out = '';
  #waiters: Array<() => void> = [];

  constructor(readonly path: string) {
    this.child = spawn('sh', ['-c', 'echo ready; read x; exec 5>"$0"; echo opened; read y; exec 5>&-; echo closed; read z', path], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.#out += d;
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  async said(word: string): Promise<void> {
    while (!this.#out.includes(word)) await new Promise<void>((r) => this.#waiters.push(r));
  }

  async open(): Promise<void> {
    this.child.stdin!.write('go\n');
    await this.said('opened');
  }

  async close(): Promise<void> {
    this.child.stdin!.write('go\n');
    await this.said('closed');
  }

  async end(): Promise<void> {
    this.child.stdin!.end();
    await this.exited;
  }
}

async function opener(name: string): Promise<Opener> {
  const o = new Opener(join(dir, name));
  await o.said('ready');
  return o;
}

function conn(pid: number, transport: TransportName, via?: number): Connection {
  return { location: { transport, pid, threadId: 0 }, transport, ...(via !== undefined ? { via: { pid: via } } : {}) } as unknown as Connection;
}

const entry = (pid: number, fd: number, target: string, role = 'client'): FdEntry => ({ pid, role, fd, target });

describe('LeakLedger', () => {
  test('a carried leak seen closed later is reclaimed once; the rest is blamed', () => {
    const ledger = new LeakLedger();
    ledger.add([entry(1, 5, '/a'), entry(2, 5, '/a')]);
    const first = ledger.reclaim([entry(1, 5, '/a'), entry(1, 6, '/a'), entry(1, 5, '/b')]);
    expect(first.reclaimed).toEqual([entry(1, 5, '/a')]);
    expect(first.rest).toEqual([entry(1, 6, '/a'), entry(1, 5, '/b')]);
    // Forgotten once reclaimed: the same close again is blamed.
    expect(ledger.reclaim([entry(1, 5, '/a')]).rest).toEqual([entry(1, 5, '/a')]);
    // Another pid's fd of the same number and target is its own entry.
    expect(ledger.reclaim([entry(2, 5, '/a')]).reclaimed).toEqual([entry(2, 5, '/a')]);
  });
});

describe('LeakOracle: this process', () => {
  test('an fd opened during the row is a leak of the client; one closed that was open before is closed', async () => {
    const before = openSync(join(dir, 'before'), 'w');
    let during: number | undefined;
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      during = openSync(join(dir, 'during'), 'w');
      closeSync(before);
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(process.pid, during, join(dir, 'during'))]);
      expect(v.closed).toEqual([entry(process.pid, before, join(dir, 'before'))]);
      expect(v.reclaimed).toEqual([]);
    } finally {
      if (during !== undefined) closeSync(during);
    }
  });

  test("a leak carried by the run's ledger is not blamed on the row that closes it", async () => {
    const ledger = new LeakLedger();
    const first = new LeakOracle({ settleMs: 0, ledger });
    first.begin();
    const leaked = openSync(join(dir, 'carried'), 'w');
    expect((await first.finish()).leaks).toEqual([entry(process.pid, leaked, join(dir, 'carried'))]);
    const second = new LeakOracle({ settleMs: 0, ledger });
    second.begin();
    closeSync(leaked);
    const v = await second.finish();
    expect(v).toEqual({ leaks: [], closed: [], reclaimed: [entry(process.pid, leaked, join(dir, 'carried'))], ended: [] });
  });

  test('without a ledger of the run, each oracle has its own: a close of an fd another row leaked is blamed', async () => {
    const first = new LeakOracle({ settleMs: 0 });
    first.begin();
    const leaked = openSync(join(dir, 'own-ledger'), 'w');
    await first.finish();
    const second = new LeakOracle({ settleMs: 0 });
    second.begin();
    closeSync(leaked);
    expect((await second.finish()).closed).toEqual([entry(process.pid, leaked, join(dir, 'own-ledger'))]);
  });

  test('settleMs 0: no wait, what is open at finish() is a leak even if it closes a moment later', async () => {
    const oracle = new LeakOracle({ settleMs: 0 });
    oracle.begin();
    const fd = openSync(join(dir, 'closes-late'), 'w');
    const closed = new Promise<void>((r) => setTimeout(() => r(closeSync(fd)), 30));
    // The verdict is taken before the close; with any wait at all the close would be seen.
    const v = await oracle.finish();
    await closed;
    expect(v.leaks).toEqual([entry(process.pid, fd, join(dir, 'closes-late'))]);
  });

  test('an fd closed within the settle time is no leak', async () => {
    const oracle = new LeakOracle({ settleMs: 60_000 });
    oracle.begin();
    const fd = openSync(join(dir, 'settles'), 'w');
    setTimeout(() => closeSync(fd), 30);
    // A clean table ends the wait at once; only a leak would take the whole settle time.
    expect(await oracle.finish()).toEqual({ leaks: [], closed: [], reclaimed: [], ended: [] });
  });
});

describe('LeakOracle: other processes', () => {
  test("the run's helper daemon is compared before and after the row, as 'helper'", async () => {
    const helper = await opener('helper-file');
    try {
      const oracle = new LeakOracle({ settleMs: 0, helperPid: helper.pid });
      oracle.begin();
      await helper.open();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(helper.pid, 5, helper.path, 'helper')]);
    } finally {
      await helper.end();
    }
  });

  test('a helper daemon that is gone before the row is not watched, and no error', async () => {
    const gone = await opener('gone');
    const pid = gone.pid;
    await gone.end();
    const oracle = new LeakOracle({ settleMs: 0, helperPid: pid });
    oracle.begin();
    expect(await oracle.finish()).toEqual({ leaks: [], closed: [], reclaimed: [], ended: [] });
  });

  test('watch(): a bad pid is a RangeError; a process watched is compared at the end under its role, once', async () => {
    // Spawned before begin(): its stdio pipes are part of the client's baseline.
    const watched = await opener('watched');
    const oracle = new LeakOracle({ settleMs: 0 });
    oracle.begin();
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => oracle.watch(bad, 'x')).toThrow(new RangeError(`watchProcess: ${bad} is not a pid`));
    try {
      oracle.watch(watched.pid, 'peer');
      oracle.watch(watched.pid, 'peer again');
      // The client is watched already: watching it again changes nothing.
      oracle.watch(process.pid, 'me');
      await watched.open();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(watched.pid, 5, watched.path, 'peer')]);
    } finally {
      await watched.end();
    }
  });

  test('watch() of a process already gone: nothing to compare, no error', async () => {
    const gone = await opener('watch-gone');
    const pid = gone.pid;
    await gone.end();
    const oracle = new LeakOracle({ settleMs: 0 });
    oracle.begin();
    oracle.watch(pid, 'gone');
    expect((await oracle.finish()).leaks).toEqual([]);
  });

  test("a command's own process: baseline at connect, compared when its command closes, as 'child'", async () => {
    const command = await opener('command');
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(command.pid, 'child'));
      await command.open();
      await oracle.commandClosed({ transport: 'child', pid: command.pid, threadId: 0 });
      // Compared once: finish() does not look at it again.
      await command.end();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(command.pid, 5, command.path, 'child')]);
    } finally {
      await command.end();
    }
  });

  test("a command's process that closes an fd it had at connect: `closed`, found when its command closes", async () => {
    const command = await opener('closes-its-own');
    try {
      await command.open();
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(command.pid, 'child'));
      await command.close();
      await oracle.commandClosed({ transport: 'child', pid: command.pid, threadId: 0 });
      // Found by the hook: the process is gone before finish() (its stdio pipes here close with it: this test's own doing).
      await command.end();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([]);
      expect(v.closed.filter((e) => e.pid !== process.pid)).toEqual([entry(command.pid, 5, command.path, 'child')]);
    } finally {
      await command.end();
    }
  });

  test("the hook compares with the oracle's settle time: 0 takes what is open at the hook, a long one waits for a close", async () => {
    for (const settleMs of [0, 60_000]) {
      const command = await opener(`hook-settles-${settleMs}`);
      try {
        const oracle = new LeakOracle({ settleMs });
        oracle.begin();
        oracle.connected(conn(command.pid, 'child'));
        await command.open();
        // The first look at the table is taken as the hook is called, before the shell closes the file.
        const compared = oracle.commandClosed({ transport: 'child', pid: command.pid, threadId: 0 });
        await command.close();
        await compared;
        const v = await oracle.finish();
        expect([settleMs, v.leaks]).toEqual([settleMs, settleMs === 0 ? [entry(command.pid, 5, command.path, 'child')] : []]);
      } finally {
        await command.end();
      }
    }
  });

  test("a remote command running under its via on this machine is compared when it closes, as 'remote'", async () => {
    // The shell is this process's child: this process stands for the via that started it.
    const command = await opener('remote-command');
    try {
      const notes: string[] = [];
      const oracle = new LeakOracle({ settleMs: 0, note: (t) => notes.push(t) });
      oracle.begin();
      oracle.connected(conn(command.pid, 'remote', process.pid));
      await command.open();
      await oracle.commandClosed({ transport: 'remote', pid: command.pid, threadId: 0 });
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(command.pid, 5, command.path, 'remote')]);
      expect(notes).toEqual([]);
    } finally {
      await command.end();
    }
  });

  test("a remote command's pid that is no process of its via here (a stranger, a gone one, no via known) is not watched, and a note says so", async () => {
    const stranger = await opener('stranger');
    const other = await opener('not-the-via');
    const gone = await opener('gone-remote');
    const gonePid = gone.pid;
    await gone.end();
    try {
      const notes: string[] = [];
      const oracle = new LeakOracle({ settleMs: 0, note: (t) => notes.push(t) });
      oracle.begin();
      // Another process of the same parent is not the via.
      oracle.connected(conn(stranger.pid, 'remote', other.pid));
      oracle.connected(conn(gonePid, 'remote', process.pid));
      oracle.connected(conn(stranger.pid, 'remote'));
      await stranger.open();
      await oracle.commandClosed({ transport: 'remote', pid: stranger.pid, threadId: 0 });
      const v = await oracle.finish();
      expect(v.leaks).toEqual([]);
      expect(notes).toEqual([
        `leak oracle: the remote command's pid ${stranger.pid} is not a process the via (pid ${other.pid}) started on this machine; not watched`,
        `leak oracle: the remote command's pid ${gonePid} is not a process the via (pid ${process.pid}) started on this machine; not watched`,
        `leak oracle: the remote command's pid ${stranger.pid} is not a process the via (pid undefined) started on this machine; not watched`,
      ]);
    } finally {
      await stranger.end();
      await other.end();
    }
  });

  test("a remote command deeper under its via (the via's child's child) is the via's", async () => {
    // sh (this process's child) runs the opener shell as its own child: this process is two levels up.
    const path = join(dir, 'grandchild');
    const outer = spawn('sh', ['-c', 'sh -c \'echo $$; read x; exec 5>"$0"; echo opened; read y\' "$0"; :', path], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<void>((r) => outer.once('exit', () => r()));
    try {
      let out = '';
      outer.stdout!.setEncoding('utf8');
      const said = (re: RegExp): Promise<string> =>
        new Promise((resolve) => {
          const check = (): void => {
            const m = re.exec(out);
            if (m) {
              outer.stdout!.off('data', onData);
              resolve(m[1] ?? m[0]);
            }
          };
          const onData = (d: string): void => {
            out += d;
            check();
          };
          outer.stdout!.on('data', onData);
          check();
        });
      const inner = Number(await said(/^(\d+)\n/));
      expect(inner).not.toBe(outer.pid);
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(inner, 'remote', process.pid));
      outer.stdin!.write('go\n');
      await said(/opened/);
      await oracle.commandClosed({ transport: 'remote', pid: inner, threadId: 0 });
      expect((await oracle.finish()).leaks).toEqual([entry(inner, 5, path, 'remote')]);
    } finally {
      outer.stdin!.end();
      await exited;
    }
  });

  test('a command process whose close hook never ran is compared at the end if it is still alive', async () => {
    const command = await opener('no-hook');
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(command.pid, 'pidfd'));
      await command.open();
      // A hook for some other process changes nothing.
      await oracle.commandClosed({ transport: 'pidfd', pid: process.pid, threadId: 0 });
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(command.pid, 5, command.path, 'child')]);
    } finally {
      await command.end();
    }
  });

  test("another helper daemon (a scenario's own) is compared at the end, as 'helper', not at its command's close", async () => {
    const daemon = await opener('own-daemon');
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(daemon.pid, 'helper'));
      await oracle.commandClosed({ transport: 'helper', pid: daemon.pid, threadId: 0 });
      await daemon.open();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(daemon.pid, 5, daemon.path, 'helper')]);
    } finally {
      await daemon.end();
    }
  });

  test("commands in this process or in the run's helper get no snapshot of their own", async () => {
    const helper = await opener('run-helper');
    try {
      const oracle = new LeakOracle({ settleMs: 0, helperPid: helper.pid });
      oracle.begin();
      oracle.connected(conn(process.pid, 'direct'));
      oracle.connected(conn(helper.pid, 'helper'));
      await helper.open();
      // Compared once, as the run's helper (not also as a command process or a second helper).
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(helper.pid, 5, helper.path, 'helper')]);
    } finally {
      await helper.end();
    }
  });

  test('a process connected twice, or watched and then connected, keeps its first baseline and role', async () => {
    const p = await opener('twice');
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.watch(p.pid, 'watched');
      oracle.connected(conn(p.pid, 'child'));
      await p.open();
      // Not a command process of this oracle: the hook does not compare it.
      await oracle.commandClosed({ transport: 'child', pid: p.pid, threadId: 0 });
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(p.pid, 5, p.path, 'watched')]);
    } finally {
      await p.end();
    }
    const q = await opener('connected-twice');
    try {
      const oracle = new LeakOracle({ settleMs: 0 });
      oracle.begin();
      oracle.connected(conn(q.pid, 'child'));
      oracle.connected(conn(q.pid, 'helper'));
      oracle.watch(q.pid, 'watched');
      await q.open();
      const v = await oracle.finish();
      expect(v.leaks).toEqual([entry(q.pid, 5, q.path, 'child')]);
    } finally {
      await q.end();
    }
  });

  test('a command process that exited before its close hook has no leak', async () => {
    const command = await opener('exits');
    const oracle = new LeakOracle({ settleMs: 0 });
    oracle.begin();
    oracle.connected(conn(command.pid, 'child'));
    await command.open();
    await command.end();
    await oracle.commandClosed({ transport: 'child', pid: command.pid, threadId: 0 });
    const v = await oracle.finish();
    expect(v.leaks).toEqual([]);
    // The client's end of the shell's stdio closed with it (that is this test's doing); nothing of the shell's own.
    expect(v.closed.filter((e) => e.pid !== process.pid)).toEqual([]);
    expect(v.closed.every((e) => e.target.startsWith('socket:') || e.target.startsWith('pipe:'))).toBe(true);
  });
});

describe('LeakOracle: tables it cannot read', () => {
  // A table read fails for another user's process when we are not root
  // (EACCES, EPERM), or when the process ends between the look at its start
  // time and the read (ENOENT): staged here by making the snapshot throw.
  const failing = (pid: number, code: string): jest.SpyInstance => {
    const Real = leakCheck.ProcessFdSnapshot;
    return jest.spyOn(leakCheck, 'ProcessFdSnapshot').mockImplementation(((p: number, role: string) => {
      if (p === pid) throw Object.assign(new Error(`${code}: staged`), { code });
      return new Real(p, role);
    }) as unknown as () => leakCheck.ProcessFdSnapshot);
  };

  afterEach(() => {
    jest.restoreAllMocks();
  });

  test("a process whose table is not ours to read is not watched, and a note says so once, however often it is named", async () => {
    for (const code of ['EACCES', 'EPERM']) {
      const notes: string[] = [];
      failing(4242, code);
      const oracle = new LeakOracle({ settleMs: 0, helperPid: 4242, note: (t) => notes.push(t) });
      oracle.begin();
      // The run's helper: not tried again for each connection to it.
      oracle.connected(conn(4242, 'helper'));
      expect(await oracle.finish()).toEqual({ leaks: [], closed: [], reclaimed: [], ended: [] });
      expect(notes).toEqual([`leak oracle: cannot read the fd table of pid 4242 (helper): ${code}; not watched`]);
      jest.restoreAllMocks();
    }
    const notes: string[] = [];
    failing(4243, 'EACCES');
    const oracle = new LeakOracle({ settleMs: 0, note: (t) => notes.push(t) });
    oracle.begin();
    oracle.watch(4243, 'peer');
    oracle.connected(conn(4243, 'child'));
    expect(notes).toEqual([
      'leak oracle: cannot read the fd table of pid 4243 (peer): EACCES; not watched',
      'leak oracle: cannot read the fd table of pid 4243 (child): EACCES; not watched',
    ]);
    await oracle.finish();
  });

  test('a process gone before its table was read: not watched, no note', async () => {
    const notes: string[] = [];
    failing(4244, 'ENOENT');
    const oracle = new LeakOracle({ settleMs: 0, helperPid: 4244, note: (t) => notes.push(t) });
    oracle.begin();
    oracle.watch(4244, 'peer');
    expect(await oracle.finish()).toEqual({ leaks: [], closed: [], reclaimed: [], ended: [] });
    expect(notes).toEqual([]);
  });

  test('any other error is not hidden', () => {
    failing(4245, 'EIO');
    expect(() => new LeakOracle({ settleMs: 0, helperPid: 4245 }).begin()).toThrow(expect.objectContaining({ code: 'EIO' }));
    const oracle = new LeakOracle({ settleMs: 0 });
    oracle.begin();
    try {
      expect(() => oracle.watch(4245, 'peer')).toThrow(expect.objectContaining({ code: 'EIO' }));
    } finally {
      oracle.release();
    }
  });

  test("begin() notes each runtime fd it set aside (opened now, before the baseline, as the runtime's own)", async () => {
    jest.spyOn(runtimeFds, 'warmRuntimeFds').mockReturnValue([{ fd: 99, target: '/dev/null', owner: "libuv's EMFILE reserve" } as runtimeFds.RuntimeFd]);
    const notes: string[] = [];
    const oracle = new LeakOracle({ settleMs: 0, note: (t) => notes.push(t) });
    oracle.begin();
    expect(notes).toEqual(["leak oracle: set aside fd 99 -> /dev/null: libuv's EMFILE reserve"]);
    await oracle.finish();
  });
});
