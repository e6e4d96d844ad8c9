/**
 * Test utilities: TCP sockets whose last close blocks, and the attacker that
 * hands them to a helper daemon.
 *
 * A lingering socket is a TCP connection whose peer never reads, its send
 * buffer full, SO_LINGER set: close(2) of its last reference waits for the
 * unsent data, up to the linger time (socket(7)). python3 makes them (one
 * process holds both ends, so that it can end such a close when told to on
 * stdin, by resetting the connection at the peer).
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

import { closeFd, makeMemfd, makePipe, openFdTable, type FdTable } from '../../src';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { statusWhen } from './helper-status';
import { DIST_SRC, NOBODY, runAsNobody, spawnAsUid, type NobodyProcess, type SpawnOptions } from './nobody';
import { startHelperProcess, type HelperProcess } from './processes';

/** A python3 that nobody may run (not one under root's home), with socket.send_fds (3.9+). */
export const PYTHON = '/usr/bin/python3';

export function hasPython(): boolean {
  try {
    execFileSync(PYTHON, ['-c', 'import socket; socket.send_fds'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * `python3 -c LINGER_ATTACKER MODE NAME [COUNT]`: makes COUNT (default 1)
 * lingering sockets (SO_LINGER 3600 s; small buffers, so that many cost
 * little) and, by MODE, does with them:
 *   local      prints {pid, fds}; once told a line on stdin (`closed`), it
 *              closes its own copies (a copy taken with pidfd_getfd is then
 *              the last one) and prints {closed}. NAME is ignored.
 *   give       sends the sockets in one message on its fd 3 (a SEQPACKET
 *              socket), closes its own copies (the receiver's are then
 *              the last ones) and says so in a second message there
 *              (`closed`): until then a close of the receiver's would not
 *              be the last one, and python's own would block instead, in
 *              the process that is to end it. NAME is ignored.
 *   dup        (a client allowed by the daemon at @NAME) HELLO, then a DUP
 *              carrying the sockets, closes its copies and hangs up; prints
 *              {ready, dupOk} (the frame types it got back).
 *   log        (allowed) HELLO for the log command, a DUP carrying the
 *              sockets, and a call of redirectLogToFd for the first of them
 *              (the command adopts it); closes its copies and hangs up, so
 *              that the command's close of its log fd is the last one;
 *              prints {ready, dupOk, redirected} (the frame types it got back).
 *   probe      (allowed) HELLO for the probe command, a DUP carrying the
 *              sockets, a call of adopt() for all of them (the command owns
 *              them), closes its copies, a call of closeAdopted() for the
 *              first one, and hangs up without waiting for its answer, so
 *              that the command's closes (the first in closeAdopted, the
 *              others in its close()) are the last ones; prints {ready,
 *              dupOk, adopted} (the frame types it got back).
 *   refused    sends the sockets with its HELLO (the daemon, stopped, has not
 *              accepted yet, so they are in its queue whatever it decides),
 *              prints {queued} (false: the kernel refused them, EPERM, and
 *              the HELLO went alone), then waits for REFUSED, hangs up,
 *              prints {answer}.
 *   unread     (allowed) makes the daemon queue 2 MB of replies it never
 *              reads, so that the daemon stops reading its requests; sends
 *              the sockets in a DUP that stays unread there, and hangs up;
 *              prints {answer} (READY's type).
 *   truncated  (allowed) HELLO, prints {ready} (READY's type), and once
 *              told a line on stdin (`stopped`: the daemon is stopped, see
 *              below) sends a frame too large for the daemon's receive
 *              buffer (MSG_TRUNC) carrying the sockets, closes its copies
 *              and prints {sent}; then {answer} once the daemon has hung
 *              up on it (what it read before the end, 'eof' for nothing).
 *   overquota  (allowed, over its fd quota) HELLO, prints {ready}, and once
 *              told `stopped` sends a DUP carrying the sockets, closes its
 *              copies and prints {sent}. Then it takes whichever comes
 *              first, the daemon's answer or a line on stdin (`go`: it
 *              resets the connections, as below), the answer first when
 *              both have, until the answer; prints {answer, afterReset}
 *              (its frame type, and whether the resets had been made).
 * In truncated and overquota the daemon closes the sockets as soon as it
 * reads them: were that before the attacker closed its own copies, the
 * attacker's close would be the last one, and it would block instead. So
 * the daemon process is stopped (SIGSTOP) from `ready` until `sent`.
 * Then, told a line on stdin (`go`), it resets the connections at the peers
 * (a close with SO_LINGER 0 sends RST), which ends the closes waiting for
 * them at once, and prints {drained} (how many).
 */
export const LINGER_ATTACKER = `
import json, os, socket, struct, sys
mode, name = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(count)
tcps, peers = [], []
for _ in range(count):
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    tcp.connect(lst.getsockname()); peer, _ = lst.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tcp.setblocking(False)
    try:
        while True: tcp.send(b'x' * 65536)
    except BlockingIOError: pass
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 3600))
    tcps.append(tcp); peers.append(peer)
fds = [t.fileno() for t in tcps]
def close_own():
    for t in tcps: t.close()
def line():
    # Unbuffered (a buffered readline could take in a later line that select would then never see).
    got = b''
    while not got.endswith(b'\\n'):
        c = os.read(0, 1)
        if not c: break
        got += c
    return got
def reset_peers():
    for peer in peers:
        if peer.fileno() < 0: continue
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        peer.close()
def frame(t, i, body=b''): return bytes([t, 0, 0, 0]) + struct.pack('<I', i) + body
hello = frame(1, 0, json.dumps({'version': 1, 'command': {'name': 'probe'}}).encode())
if mode == 'local':
    print(json.dumps({'pid': os.getpid(), 'fds': fds}), flush=True)
    line(); close_own()
    print(json.dumps({'closed': True}), flush=True)
elif mode == 'give':
    given = socket.socket(fileno=3)
    socket.send_fds(given, [b'x'], fds)
    close_own()
    given.send(b'closed')
else:
    u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); u.connect('\\0' + name)
    if mode == 'dup':
        u.send(hello); ready = u.recv(65536)[0]
        socket.send_fds(u, [frame(4, 1)], fds)
        dup_ok = u.recv(65536)[0]
        close_own(); u.close()
        print(json.dumps({'ready': ready, 'dupOk': dup_ok}), flush=True)
    elif mode == 'log':
        u.send(frame(1, 0, json.dumps({'version': 1, 'command': {'name': 'log'}}).encode())); ready = u.recv(65536)[0]
        socket.send_fds(u, [frame(4, 1)], fds)
        got = u.recv(65536); dup_ok = got[0]; there = struct.unpack('<i', got[8:12])[0]
        u.send(frame(6, 2, json.dumps({'method': 'redirectLogToFd', 'args': [there]}).encode()))
        redirected = u.recv(65536)[0]
        close_own(); u.close()
        print(json.dumps({'ready': ready, 'dupOk': dup_ok, 'redirected': redirected}), flush=True)
    elif mode == 'probe':
        u.send(hello); ready = u.recv(65536)[0]
        socket.send_fds(u, [frame(4, 1)], fds)
        got = u.recv(65536); dup_ok = got[0]
        there = list(struct.unpack('<%di' % count, got[8:8 + 4 * count]))
        u.send(frame(6, 2, json.dumps({'method': 'adopt', 'args': [there]}).encode()))
        adopted = u.recv(65536)[0]
        close_own()
        u.send(frame(6, 3, json.dumps({'method': 'closeAdopted', 'args': [there[:1]]}).encode()))
        u.close()
        print(json.dumps({'ready': ready, 'dupOk': dup_ok, 'adopted': adopted}), flush=True)
    elif mode == 'refused':
        try:
            socket.send_fds(u, [hello], fds); queued = True
        except PermissionError:
            # The kernel refuses fds to a socket not accepted yet (SO_PASSRIGHTS
            # off on the listener). Ours stay the only copies: not closed here,
            # where the close would block, but once the peers are reset.
            u.send(hello); queued = False
        if queued: close_own()
        print(json.dumps({'queued': queued}), flush=True)
        answer = u.recv(65536)[0]
        u.close()
        print(json.dumps({'answer': answer}), flush=True)
    elif mode == 'unread':
        u.send(hello); answer = u.recv(65536)[0]
        m = os.memfd_create('big'); os.write(m, b'x' * 2000000); os.lseek(m, 0, 0)
        socket.send_fds(u, [frame(4, 1)], [m]); os.close(m)
        there = struct.unpack('<i', u.recv(65536)[8:12])[0]
        for i in range(20): u.send(frame(6, 10 + i, json.dumps({'method': 'read', 'args': [there, 100000]}).encode()))
        import time; time.sleep(0.5)
        socket.send_fds(u, [frame(4, 2)], fds)
        close_own(); u.close()
        print(json.dumps({'answer': answer}), flush=True)
    elif mode == 'truncated':
        u.send(hello); ready = u.recv(65536)[0]
        print(json.dumps({'ready': ready}), flush=True)
        line()
        u.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        socket.send_fds(u, [frame(4, 1, b'x' * 300000)], fds)
        close_own()
        print(json.dumps({'sent': True}), flush=True)
        got = u.recv(65536)
        u.close()
        print(json.dumps({'answer': got[0] if got else 'eof'}), flush=True)
    elif mode == 'overquota':
        import select
        u.send(hello); ready = u.recv(65536)[0]
        print(json.dumps({'ready': ready}), flush=True)
        line()
        socket.send_fds(u, [frame(4, 1)], fds)
        close_own()
        print(json.dumps({'sent': True}), flush=True)
        reset = False
        while True:
            readable = select.select([u, 0], [], [])[0]
            if u in readable: break
            line(); reset_peers(); reset = True
        answer = u.recv(65536)[0]
        u.close()
        print(json.dumps({'answer': answer, 'afterReset': reset}), flush=True)
line()
reset_peers()
print(json.dumps({'drained': len(peers)}), flush=True)
`;

/**
 * How many of this process's fds are TCP sockets (their inodes listed in
 * /proc/net/tcp or tcp6). A lingering socket handed to the background
 * closer is one until the closer's close(2) has taken it out of the table.
 * Until then, a process spawned here takes a copy of it with the rest of
 * the table (fork), which it keeps until its exec closes it (close-on-exec):
 * once the closer's own close has run, that one is the socket's last, and
 * it blocks the spawned process's exec for the linger time (an hour here),
 * before the program it runs has started. So a test that spawns a process
 * while a lingering socket waits to be closed in this process waits first
 * until this is 0.
 */
export function tcpSocketsOpen(): number {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue; // no IPv6
    }
    for (const row of text.split('\n').slice(1)) {
      const inode = row.trim().split(/\s+/)[9];
      if (inode !== undefined && inode !== '0') inodes.add(inode);
    }
  }
  let open = 0;
  for (const target of openFdTable().values()) {
    const socket = /^socket:\[(\d+)\]$/.exec(target);
    if (socket && inodes.has(socket[1] as string)) open++;
  }
  return open;
}

/** What the attacker does with its lingering sockets at a daemon (see LINGER_ATTACKER). */
export type AttackerMode = 'dup' | 'log' | 'probe' | 'refused' | 'unread' | 'truncated' | 'overquota';

/** LINGER_ATTACKER in `mode`, run as `uid` (nobody by default), at the daemon listening on the abstract name `name`. */
export function spawnAttacker(mode: AttackerMode, name: string, count = 1, uid = NOBODY, options: SpawnOptions = {}): NobodyProcess {
  return spawnAsUid(uid, PYTHON, ['-c', LINGER_ATTACKER, mode, name, String(count)], {}, options);
}

/**
 * Tells the attacker to reset its peers (which ends every close still
 * waiting for them), and waits until it has exited.
 */
export async function releaseAttacker(attacker: NobodyProcess): Promise<void> {
  attacker.child.stdin?.end('go\n');
  await attacker.line('drained').catch(() => undefined);
  attacker.kill();
  await attacker.exited();
}

/** A helper daemon process under attack by nobody, as withAttackedDaemon hands it to its body. */
export interface AttackedDaemon {
  daemon: HelperProcess;
  /** Its abstract name (the attacker's NAME); socketPath is `@name`. */
  name: string;
  socketPath: string;
  /** The daemon's fd table before any client connected to it. */
  baseline: FdTable;
  /** A memfd of this process's, for root's clients to give the daemon. */
  memfd: number;
  /** The attacker in `mode` at this daemon, with `count` lingering sockets, as `uid` (nobody by default). */
  attack(mode: AttackerMode, count?: number, uid?: number): NobodyProcess;
  /** `node -e script` as nobody (runAsNobody). */
  runAsNobody(script: string): NobodyProcess;
  /** releaseAttacker(attacker), which the end then need not do again. */
  release(attacker: NobodyProcess): Promise<void>;
  /**
   * nobody blocks the daemon's `count` closer threads: the attacker in `dup`
   * mode gives `count` lingering sockets and hangs up; resolves once the
   * daemon closes all of them and the socket of that connection on the
   * background closer (blocked there for an hour), with nobody holding no
   * connection. Returns that attacker (release() ends those closes).
   */
  blockClosers(count: number): Promise<NobodyProcess>;
}

/**
 * Runs `body` with a helper daemon process (`fdbridge helper DAEMON_ARGS`
 * at the abstract name `fdbridge-attack-<label>-<pid>`, at RLIMIT_NOFILE
 * `options.nofile` if given); then, however `body` ended, kills what it
 * started as nobody, releases the attackers not yet released, closes the
 * memfd and kills the daemon.
 */
export async function withAttackedDaemon(
  label: string,
  daemonArgs: readonly string[],
  options: { nofile?: number },
  body: (d: AttackedDaemon) => Promise<void>,
): Promise<void> {
  const name = `fdbridge-attack-${label}-${process.pid}`;
  const socketPath = `@${name}`;
  const daemon = await startHelperProcess(socketPath, [...daemonArgs], options);
  const attackers = new Set<NobodyProcess>();
  const scripts: NobodyProcess[] = [];
  const memfd = makeMemfd(label);
  const attack = (mode: AttackerMode, count = 1, uid = NOBODY): NobodyProcess => {
    const attacker = spawnAttacker(mode, name, count, uid);
    attackers.add(attacker);
    return attacker;
  };
  try {
    await body({
      daemon,
      name,
      socketPath,
      baseline: openFdTable(daemon.pid),
      memfd,
      attack,
      runAsNobody(script) {
        const p = runAsNobody(script);
        scripts.push(p);
        return p;
      },
      async release(attacker) {
        attackers.delete(attacker);
        await releaseAttacker(attacker);
      },
      async blockClosers(count) {
        const lingering = attack('dup', count);
        // READY, DUP_OK
        expect(await lingering.line('ready')).toEqual({ ready: 2, dupOk: 5 });
        await statusWhen(socketPath, (s) => s.fdsClosing === count && s.socketsClosing === 1 && !s.uids.some((u) => u.uid === NOBODY));
        return lingering;
      },
    });
  } finally {
    closeFd(memfd);
    for (const p of scripts) {
      p.kill();
      await p.exited();
    }
    for (const attacker of attackers) await releaseAttacker(attacker);
    await daemon.stop('SIGKILL');
  }
}

/**
 * Runs `body` with a helper daemon process (withAttackedDaemon) and the
 * attacker in `mode` at it, with `count` lingering sockets.
 */
export async function withAttacker(
  mode: AttackerMode,
  daemonArgs: readonly string[],
  body: (run: { daemon: HelperProcess; attacker: NobodyProcess; socketPath: string; whileStopped(step: () => Promise<unknown>): Promise<void> }) => Promise<void>,
  count = 1,
): Promise<void> {
  await withAttackedDaemon(`linger-${mode}`, daemonArgs, {}, async ({ daemon, socketPath, attack }) => {
    /** Runs `step` with the daemon process stopped (SIGSTOP), continued however it ends. */
    const whileStopped = async (step: () => Promise<unknown>): Promise<void> => {
      process.kill(daemon.pid, 'SIGSTOP');
      try {
        await step();
      } finally {
        process.kill(daemon.pid, 'SIGCONT');
      }
    };
    await body({ daemon, attacker: attack(mode, count), socketPath, whileStopped });
  });
}

/**
 * The watcher: `node -e LINGER_WATCHER PID`, a process of its own, so that
 * the files it reads (three a thread it watches, every 5 ms) are opened in
 * its fd table, never in PID's: a leak check of PID's made while it
 * watches would find one of them in its baseline and closed since, or
 * opened and still open at its end. Polls the kernel stack of each thread
 * of PID it watches (PID's main thread, and each tid written to its stdin,
 * one a line; wchan and syscall where the stack is not readable) until
 * its stdin says `done` or ends; a thread found waiting in a TCP close is
 * recorded, and python told to reset its peer (a write to the pipe that is
 * python's stdin, the watcher's fd 3). A thread that has ended reads as ''
 * (nothing found). Prints {ready} once it has looked once, {blocked} once
 * told `done`, and exits once its stdin ends.
 *
 * Reading another process's syscall and stack files needs ptrace access to
 * it (PTRACE_MODE_ATTACH, proc(5)), which root with CAP_SYS_PTRACE, as the
 * suite runs, has; without it (Yama's ptrace_scope 1 or more, which allows
 * only a descendant, or a capability PID has and the watcher lacks) the read
 * fails with EPERM, and read() would give '' for every thread: nothing
 * found, ever, and a close blocked on PID's main thread would wait out the
 * linger time. So before its first look it reads PID's main thread's
 * syscall file (never empty for a live thread); if it cannot, it prints
 * {unreadable} (the file and why) and exits with 2.
 */
const LINGER_WATCHER = `
const { readFileSync, writeSync } = require('node:fs');
const pid = Number(process.argv[1]);
const tids = [pid];
const path = (tid, f) => '/proc/' + pid + '/task/' + tid + '/' + f;
const read = (tid, f) => { try { return readFileSync(path(tid, f), 'utf8'); } catch { return ''; } };
const print = (o) => writeSync(1, JSON.stringify(o) + '\\n');
let why = null;
try {
  if (readFileSync(path(pid, 'syscall'), 'utf8') === '') why = 'it reads empty';
} catch (err) {
  why = err.message;
}
if (why !== null) {
  print({ unreadable: 'cannot read ' + path(pid, 'syscall') + ' (ptrace access): ' + why });
  process.exit(2);
}
let blocked = null;
let done = false;
let input = '';
process.stdin.on('data', (d) => {
  const lines = (input + d).split('\\n');
  input = lines.pop();
  for (const l of lines) if (l === 'done') done = true; else tids.push(Number(l));
});
process.stdin.on('end', () => process.exit(0));
let looks = 0;
const look = () => {
  if (done) return print({ blocked });
  for (const tid of tids) {
    if (blocked !== null) break;
    const stack = read(tid, 'stack');
    const syscall = read(tid, 'syscall').split(' ')[0];
    const inClose = syscall === '3' || syscall === '436'; // close, close_range
    if (stack.includes('sk_stream_wait_close') || (stack === '' && inClose && read(tid, 'wchan') === 'wait_woken')) {
      blocked = (tid === pid ? 'main thread' : 'thread ' + tid) + ', syscall ' + syscall + ': ' + stack.split('\\n').slice(0, 4).map((l) => l.replace(/^\\[<0>\\] /, '').replace(/\\+.*/, '')).join(' < ');
      writeSync(3, 'go\\n');
    }
  }
  if (looks++ === 0) print({ ready: true });
  setTimeout(look, 5);
};
look();
`;

/**
 * A lingering TCP socket of this process's own (`fd`: its only reference;
 * `fds`: `count` of them, `fd` the first), and a watcher of this process's
 * threads, watching (its main thread) when this resolves: `verdict()` ends
 * the watch and says which thread it found blocked in the socket's close
 * (null: none), having ended that close at once by resetting the
 * connection; `end()` ends the watcher and python (and with it any close
 * still blocked, a background one). Deterministic: a close on a watched
 * thread blocks until that reset, so the watcher finds it however loaded
 * the machine is. While the watcher runs, this process's fd table holds
 * its stdin and stdout, and nothing of it comes or goes.
 */
export interface LingeringSocket {
  fd: number;
  fds: number[];
  /**
   * python's pid. Killing it ends a close still blocked: its peers hold
   * unread data, so their close resets the connections (tcp_close).
   */
  attackerPid: number;
  /** Watches `tid` (a thread of this process) too. */
  watch(tid: number): void;
  verdict(): Promise<string | null>;
  end(): Promise<void>;
}

export interface LingeringSocketOptions {
  /**
   * A command (and its arguments) that runs the watcher's own command line
   * after them, as setpriv does: the watcher then runs with what that
   * command leaves it (fewer capabilities, another uid).
   */
  watcherUnder?: readonly string[];
}

/**
 * Rejects, having closed and ended whatever it started, if the watcher
 * cannot read this process's main thread's syscall file (LINGER_WATCHER:
 * no ptrace access to this process); the error names the file and why.
 */
export async function lingeringSocket(count = 1, options: LingeringSocketOptions = {}): Promise<LingeringSocket> {
  const [mine, theirs] = rawSocketPair('seqpacket');
  const [stdinRead, stdinWrite] = makePipe();
  const py = spawn(PYTHON, ['-c', LINGER_ATTACKER, 'give', '-', String(count)], { stdio: [stdinRead, 'ignore', 'inherit', theirs] });
  const pyExited = new Promise((resolve) => py.once('exit', resolve));
  closeFd(theirs);
  closeFd(stdinRead);
  const [command, ...args] = [...(options.watcherUnder ?? []), process.execPath, '-e', LINGER_WATCHER, String(process.pid)];
  const watcher = spawn(command as string, args, { stdio: ['pipe', 'pipe', 'inherit', stdinWrite] });
  const toWatcher = watcher.stdin!;
  // Its exit (a crash included) is what ready and verdict report; a write to its stdin after it is not an error of the test's.
  toWatcher.on('error', () => undefined);
  // What it prints, by key, until it has printed it; at its exit, the keys not printed reject.
  const awaited = new Map<string, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  const printed = (key: string): Promise<unknown> => {
    const value = new Promise((resolve, reject) => awaited.set(key, { resolve, reject }));
    value.catch(() => undefined); // verdict() may never be asked for: its rejection is the asker's to see
    return value;
  };
  const ready = printed('ready');
  const verdict = printed('blocked');
  createInterface({ input: watcher.stdout! }).on('line', (line) => {
    const o = JSON.parse(line) as Record<string, unknown>;
    if (typeof o['unreadable'] === 'string') {
      // It exits next, having watched nothing: that is why nothing it was to print will come.
      const err = new Error(`lingeringSocket: the watcher ${o['unreadable']}; it needs ptrace access to this process (CAP_SYS_PTRACE, or kernel.yama.ptrace_scope 0)`);
      for (const { reject } of awaited.values()) reject(err);
      awaited.clear();
      return;
    }
    for (const [key, value] of Object.entries(o)) {
      awaited.get(key)?.resolve(value);
      awaited.delete(key);
    }
  });
  const watcherClosed = new Promise<void>((resolve) =>
    watcher.once('close', (code, signal) => {
      for (const [key, { reject }] of awaited) reject(new Error(`the lingering-socket watcher exited (${signal ?? code}) before it printed ${key}`));
      resolve();
    }),
  );
  try {
    await ready;
  } catch (err) {
    // With the watcher gone, the end of our copy of python's stdin ends it: it resets its peers and exits, and the
    // sockets it gave, never received here, then close at once with `mine`.
    await watcherClosed;
    closeFd(stdinWrite);
    await pyExited;
    closeFd(mine);
    throw err;
  }
  let fds: number[] = [];
  for (let closed = false; !closed; ) {
    const message = receiveNow(mine, 16, count);
    if (message === null) await new Promise((r) => setTimeout(r, 10));
    else if (message.fds.length > 0) fds = message.fds;
    else closed = message.data.toString() === 'closed';
  }
  let ended = false;
  return {
    fd: fds[0] as number,
    fds,
    attackerPid: py.pid as number,
    watch: (tid) => toWatcher.write(`${tid}\n`),
    verdict: async () => {
      toWatcher.write('done\n');
      return (await verdict) as string | null;
    },
    end: async () => {
      if (ended) return;
      ended = true;
      // The watcher first: it holds a copy of python's stdin, whose end is what ends python.
      toWatcher.end();
      await watcherClosed;
      closeFd(stdinWrite);
      await pyExited;
      closeFd(mine);
    },
  };
}

/**
 * A script for runAsNobody: a log client of the helper daemon at @NAME;
 * prints {connected}. Then by stdin line:
 * `call` sends a call and prints {answeredN: transport} once the Nth is
 * answered (reading on meanwhile); `dup K` gives K copies of /dev/null and
 * prints {dupN} once the Nth is answered (the numbers' count, or the
 * error's quota); `done` closes and exits.
 */
export const holdBackClient = (name: string): string => `
  const { connect, LOG_COMMAND } = require(${JSON.stringify(`${DIST_SRC}/index.js`)});
  const fs = require('node:fs');
  (async () => {
    const c = await connect('helper', { command: LOG_COMMAND, socketPath: ${JSON.stringify(`@${name}`)}, timeoutMs: 20000 });
    console.log(JSON.stringify({ connected: true }));
    const devnull = fs.openSync('/dev/null', 'r');
    let calls = 0;
    let dups = 0;
    let rest = '';
    process.stdin.on('data', async (d) => {
      rest += d.toString();
      for (let at; (at = rest.indexOf('\\n')) >= 0; ) {
        const [what, n] = rest.slice(0, at).split(' ');
        rest = rest.slice(at + 1);
        if (what === 'call') {
          const i = ++calls;
          c.call('where').then((w) => console.log(JSON.stringify({ ['answered' + i]: w.transport })));
        } else if (what === 'dup') {
          const i = ++dups;
          c.dupFileDescriptors(new Array(Number(n)).fill(devnull)).then(
            (got) => console.log(JSON.stringify({ ['dup' + i]: got.length })),
            (e) => console.log(JSON.stringify({ ['dup' + i]: e.quota ?? e.code })),
          );
        } else if (what === 'done') {
          await c.close();
          process.exit(0);
        }
      }
    });
  })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack) })); process.exit(1); });`;
