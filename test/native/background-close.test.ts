/**
 * The background closer (fd_ops.h: FdCloseInBackground) and the news of its
 * progress on the event loop (afterBackgroundCloses): closes go in batches,
 * each with its own ticket; the callback comes once every fd of the batches
 * it names is closed, never before and never synchronously. A close that
 * blocks holds back only its own batch: the pool grows a thread while work
 * waits and every thread is busy, one owner's closes take a few threads at
 * most, past the pool's shared cap an owner with no close running still
 * gets a thread (of a reserve), and past both work waits for a thread to
 * come free.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { closeFd, closeOwnFd, makePipe, openFdTable } from '../../src/fd';
import { native } from './binding';
import { hasPython, LINGER_ATTACKER, PYTHON } from '../util/linger-attacker';
import { thrown } from './helpers';
import { fdRegistration } from '../../src/test-hooks';
import { openAt } from '../util/open-at';
import { fdTableSettles } from '../util/processes';

/** Resolves once every batch named is closed, with what was true at that moment. */
function afterCloses(tickets: number | number[]): Promise<{ done: boolean[] }> {
  const list = Array.isArray(tickets) ? tickets : [tickets];
  return new Promise((resolve) => native.afterBackgroundCloses(list, () => resolve({ done: list.map((t) => native.backgroundCloseDone(t)) })));
}

/** Waits until `ok()` holds, turning the event loop meanwhile (the closer works on its own threads). */
async function until(ok: () => boolean): Promise<boolean> {
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  return ok();
}

/**
 * `count` lingering TCP sockets (test/util/linger-attacker.ts), their last
 * reference ours: taken with pidfd_getfd, the python's own copies closed.
 * `drain()` lets their closes finish; `end()` waits for the python to exit.
 */
async function lingeringSockets(count: number): Promise<{ fds: number[]; drain(): Promise<void>; end(): Promise<void> }> {
  const py = spawn(PYTHON, ['-c', LINGER_ATTACKER, 'local', '-', String(count)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: py.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => JSON.parse(((await lines.next()).value as string) ?? 'null');
  const exited = new Promise((resolve) => py.once('exit', resolve));
  const { pid, fds: theirs } = (await next()) as { pid: number; fds: number[] };
  const pidfd = native.pidfdOpen(pid);
  const fds = theirs.map((fd) => native.pidfdGetfd(pidfd, fd));
  closeFd(pidfd);
  py.stdin.write('closed\n');
  await next();
  let drained: Promise<unknown> | undefined;
  return {
    fds,
    drain: async () => {
      drained ??= (py.stdin.write('drain\n'), next());
      await drained;
    },
    end: async () => {
      py.stdin.end();
      await exited;
    },
  };
}

const withPython = hasPython() ? test : test.skip;

test('the callback runs once every fd of its batch is closed, on the event loop, never synchronously', async () => {
  const pipes = Array.from({ length: 200 }, () => makePipe()).flat();
  const ticket = native.closeInBackground(pipes);
  expect(ticket).toBeGreaterThan(0);
  let called = false;
  const news = new Promise<void>((resolve) =>
    native.afterBackgroundCloses(ticket, () => {
      called = true;
      // Every fd of the batch is closed by now.
      const table = openFdTable();
      expect(pipes.filter((fd) => table.has(fd))).toEqual([]);
      expect(native.backgroundCloseDone(ticket)).toBe(true);
      resolve();
    }),
  );
  expect(called).toBe(false);
  await news;
  expect(called).toBe(true);
});

withPython('a close that ends after the environment that asked for its news is gone (a terminated worker) touches nothing of it', async () => {
  // Process exit tears environments down the same way, and a closer thread
  // that used the news's freed thread-safe function aborted the process.
  const before = openFdTable();
  const sockets = await lingeringSockets(1);
  const [fd] = sockets.fds as [number];
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const { native } = require(workerData.native);
     const ticket = native.closeInBackground([workerData.fd]);
     native.afterBackgroundCloses(ticket, () => parentPort.postMessage('closed'), false);
     parentPort.postMessage(ticket);`,
    { eval: true, workerData: { native: join(__dirname, '../../dist/src/native.js'), fd } },
  );
  const ticket = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  // The close blocks (SO_LINGER) until the python drains its end.
  expect(native.backgroundCloseDone(ticket)).toBe(false);
  await worker.terminate();
  await sockets.drain();
  expect(await until(() => native.backgroundCloseDone(ticket))).toBe(true);
  // The closer thread has been to the news by now: this process is still here to check.
  await new Promise((r) => setTimeout(r, 50));
  await sockets.end();
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('no fds is ticket 0, done; its callback still comes asynchronously, once', async () => {
  const ticket = native.closeInBackground([]);
  expect(ticket).toBe(0);
  expect(native.backgroundCloseDone(ticket)).toBe(true);
  let calls = 0;
  const news = new Promise<void>((resolve) => native.afterBackgroundCloses(ticket, () => (calls++, resolve())));
  expect(calls).toBe(0);
  await news;
  await new Promise((resolve) => setImmediate(resolve));
  expect(calls).toBe(1);
});

test('a callback for many batches comes once, after the last of them', async () => {
  const batches = Array.from({ length: 20 }, () => makePipe());
  const tickets = batches.map((fds, i) => native.closeInBackground(fds, i % 3));
  let calls = 0;
  const { done } = await new Promise<{ done: boolean[] }>((resolve) =>
    native.afterBackgroundCloses(tickets, () => (calls++, resolve({ done: tickets.map((t) => native.backgroundCloseDone(t)) }))),
  );
  expect(done.every(Boolean)).toBe(true);
  const table = openFdTable();
  expect(batches.flat().filter((fd) => table.has(fd))).toEqual([]);
  await new Promise((resolve) => setImmediate(resolve));
  expect(calls).toBe(1);
});

test('bad arguments are a TypeError', () => {
  const call = native.afterBackgroundCloses as (ticket: unknown, callback: unknown) => void;
  for (const [ticket, callback, message] of [
    [-1, () => undefined, /ticket must be a non-negative integer/],
    [1.5, () => undefined, /ticket must be a non-negative integer/],
    [1, 'no', /afterBackgroundCloses\(ticket, callback\)/],
    [[1, -2], () => undefined, /ticket must be a non-negative integer/],
  ] as const) {
    const err = thrown(() => call(ticket, callback));
    // Made in the addon's realm, not jest's: compared by name.
    expect((err as Error).name).toBe('TypeError');
    expect((err as Error).message).toMatch(message);
  }
  // A ticket never given would never come: refused at once.
  const never = native.closeInBackground([...makePipe()]) + 1000;
  const err = thrown(() => native.afterBackgroundCloses(never, () => undefined));
  expect((err as Error).name).toBe('RangeError');
  expect((err as Error).message).toMatch(/was never given by closeInBackground/);
  expect((thrown(() => native.backgroundCloseDone(never)) as Error).name).toBe('RangeError');
  expect((thrown(() => native.closeInBackground([], -1)) as Error).name).toBe('TypeError');
});

withPython('a close that blocks (SO_LINGER, unsent data) holds back its own batch and nothing else', async () => {
  const lingering = await lingeringSockets(1);
  try {
    const before = native.backgroundClosesDone();
    const blocked = native.closeInBackground(lingering.fds);
    let called = false;
    const news = afterCloses(blocked).then((r) => ((called = true), r));
    expect(await until(() => native.closerThreads().busy >= 1)).toBe(true);
    // Other batches, of the same owner or another, are closed meanwhile, and
    // their news comes while the blocked one's does not.
    for (const owner of [0, 1]) {
      const pipes = makePipe();
      const { done } = await afterCloses(native.closeInBackground(pipes, owner));
      expect(done).toEqual([true]);
      expect(pipes.filter((fd) => openFdTable().has(fd))).toEqual([]);
    }
    expect(called).toBe(false);
    expect(native.backgroundCloseDone(blocked)).toBe(false);
    expect(native.backgroundClosesDone()).toBe(before + 4);
    expect(native.backgroundClosesPending()).toBe(1);
    expect(native.backgroundClosesOfPeerFds()).toBe(1);
    expect(native.closerThreads().threads).toBeGreaterThanOrEqual(2);
    await lingering.drain();
    expect((await news).done).toEqual([true]);
    expect(native.backgroundClosesPending()).toBe(0);
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

withPython('a batch of closes that block, handed over while threads are idle, wakes as many of them as it needs', async () => {
  // Two threads made (two batches, each close blocking), then left idle.
  const warm = await lingeringSockets(2);
  try {
    const tickets = warm.fds.map((fd) => native.closeInBackground([fd]));
    expect(await until(() => native.closerThreads().busy >= 2)).toBe(true);
    await warm.drain();
    expect((await afterCloses(tickets)).done).toEqual([true, true]);
  } finally {
    await warm.drain();
    await warm.end();
  }
  const { threads, made } = native.closerThreads();
  expect(threads).toBeGreaterThanOrEqual(2);
  // One batch of two: the thread woken for it takes the first close (which
  // blocks); the second goes to another idle thread, not behind the first,
  // and no thread is made for it (one idle past the closer's idle exit may
  // end meanwhile: the count of threads made tells).
  const lingering = await lingeringSockets(2);
  try {
    const batch = native.closeInBackground(lingering.fds);
    expect(await until(() => native.closerThreads().busy === 2)).toBe(true);
    expect(native.closerThreads().made).toBe(made);
    expect(native.backgroundCloseDone(batch)).toBe(false);
    await lingering.drain();
    expect((await afterCloses(batch)).done).toEqual([true]);
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

withPython("one owner's closes that block take its share of threads at most: its next close waits, another owner's goes ahead", async () => {
  const { perOwner } = native.closerThreads();
  const lingering = await lingeringSockets(perOwner + 1);
  try {
    const OWNER = 7;
    const tickets = lingering.fds.map((fd) => native.closeInBackground([fd], OWNER));
    expect(await until(() => native.closerThreads().busy === perOwner)).toBe(true);
    // The owner's last close is queued behind its own blocked ones...
    const pipes = makePipe();
    const { done } = await afterCloses(native.closeInBackground(pipes, OWNER + 1));
    // ... while another owner's batch was closed on a thread of its own.
    expect(done).toEqual([true]);
    // Its thread hands the news on before it counts itself free: busy comes
    // back to the owner's share (it would stay above it had the owner's
    // queued close taken a thread).
    expect(await until(() => native.closerThreads().busy === perOwner)).toBe(true);
    expect(tickets.map((t) => native.backgroundCloseDone(t))).toEqual(new Array(perOwner + 1).fill(false));
    expect(native.backgroundClosesPending()).toBe(perOwner + 1);
    await lingering.drain();
    expect((await afterCloses(tickets)).done).toEqual(new Array(perOwner + 1).fill(true));
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

withPython("an owner of this process's own (newCloseOwner: above every uid plus one) is held to no share of the threads; the highest uid's owner (2^32) is", async () => {
  const { perOwner } = native.closerThreads();
  const lingering = await lingeringSockets(2 * (perOwner + 1));
  try {
    const HIGHEST_UID_OWNER = 2 ** 32; // uid 2^32 - 1, plus one
    const peer = lingering.fds.slice(0, perOwner + 1).map((fd) => native.closeInBackground([fd], HIGHEST_UID_OWNER));
    expect(await until(() => native.closerThreads().busy === perOwner)).toBe(true);
    const own = native.newCloseOwner();
    expect(own).toBeGreaterThan(HIGHEST_UID_OWNER);
    const mine = lingering.fds.slice(perOwner + 1).map((fd) => native.closeInBackground([fd], own));
    // Every one of its closes is in a close; the uid's last one still waits behind its share.
    expect(await until(() => native.closerThreads().busy === 2 * perOwner + 1)).toBe(true);
    await turns(20);
    expect(native.closerThreads().busy).toBe(2 * perOwner + 1);
    expect(native.backgroundCloseFds().queued).toEqual([lingering.fds[perOwner]]);
    await lingering.drain();
    expect((await afterCloses([...peer, ...mine])).done.every(Boolean)).toBe(true);
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

test("newCloseOwner never gives an owner twice in the process, whichever thread asks (a worker thread's copy of the library shares the closer)", async () => {
  const first = native.newCloseOwner();
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const { native } = require(workerData.native);
     parentPort.postMessage([native.newCloseOwner(), native.newCloseOwner()]);`,
    { eval: true, workerData: { native: join(__dirname, '../../dist/src/native.js') } },
  );
  // Listened for before the message: a worker that ended before this thread
  // read its message has both delivered at its exit, 'exit' right after
  // 'message' in the same turn.
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const theirs = await new Promise<number[]>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await exited;
  const owners = [first, ...theirs, native.newCloseOwner()];
  expect(new Set(owners).size).toBe(4);
  expect(owners.every((o) => Number.isSafeInteger(o) && o > 2 ** 32 + 1)).toBe(true);
});

/** Lets the event loop turn `n` times (the closer works on its own threads meanwhile). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 5));
}

/**
 * Fills the shared threads: `owners` owners (ids from 100), each with its
 * share of closes blocked, one fd of `fds` each. Resolves with their tickets
 * once every shared thread is in a close, and with how many threads the
 * pool had then at least (`floor`): the threads idle before (an earlier test
 * file in this process may have left more than `max`, each idle until it
 * exits after 30 s), or `max`, whichever is more.
 */
async function fillShared(fds: readonly number[]): Promise<{ tickets: number[]; floor: number }> {
  const { max, perOwner } = native.closerThreads();
  // Every thread idle first: one still on its way back from the last close
  // (it hands the news on before it counts itself free) would make the
  // pool grow by one more meanwhile.
  expect(await until(() => native.closerThreads().busy === 0)).toBe(true);
  const idle = native.closerThreads().threads;
  const tickets = fds.map((fd, i) => native.closeInBackground([fd], 100 + Math.floor(i / perOwner)));
  expect(await until(() => native.closerThreads().busy === max)).toBe(true);
  return { tickets, floor: Math.max(max, idle) };
}

/**
 * A close of a new pipe for `owner` that no thread is free for: after 20
 * turns of the event loop its callback has not come, its batch is not done,
 * its fds are still open, and the pool has `threads` threads (none was
 * added for it).
 * `news` resolves once it is closed; `called()` says whether it has been.
 */
async function closeThatWaits(owner: number, threads: number): Promise<{ news: Promise<{ done: boolean[] }>; called(): boolean }> {
  const pipes = makePipe();
  const ticket = native.closeInBackground(pipes, owner);
  let called = false;
  const news = afterCloses(ticket).then((r) => ((called = true), r));
  await turns(20);
  expect(called).toBe(false);
  expect(native.backgroundCloseDone(ticket)).toBe(false);
  expect(openFdTable().has(pipes[0])).toBe(true);
  expect(native.closerThreads().threads).toBe(threads);
  return { news, called: () => called };
}

withPython('past the shared cap (every shared thread blocked), an owner with no close running still gets a thread; one with a close running waits for a thread to come free', async () => {
  const { max, perOwner } = native.closerThreads();
  const shared = Math.ceil(max / perOwner) * perOwner;
  const lingering = await lingeringSockets(shared + 1);
  try {
    const { tickets, floor } = await fillShared(lingering.fds.slice(0, shared));
    expect(native.closerThreads().threads).toBe(floor);
    // Owner 1 has no close running: its close goes ahead, on a reserve thread.
    const first = makePipe();
    expect((await afterCloses(native.closeInBackground(first, 1))).done).toEqual([true]);
    expect(native.closerThreads().threads).toBe(Math.max(max + 1, floor));
    // (Its thread counts itself free once it has handed the news on.)
    expect(await until(() => native.closerThreads().busy === max)).toBe(true);
    // Its close that blocks holds that thread...
    const blocked = native.closeInBackground([lingering.fds[shared] as number], 1);
    expect(await until(() => native.closerThreads().busy === max + 1)).toBe(true);
    // ... and its next close waits: it has a close running, and no shared thread is free.
    const waiting = await closeThatWaits(1, Math.max(max + 1, floor));
    // Another owner with none running goes ahead all the same.
    expect((await afterCloses(native.closeInBackground(makePipe(), 2))).done).toEqual([true]);
    expect(waiting.called()).toBe(false);
    await lingering.drain();
    expect((await waiting.news).done).toEqual([true]);
    expect((await afterCloses([...tickets, blocked])).done.every(Boolean)).toBe(true);
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

withPython('past the reserve too (as many more owners, each with a close blocked), every close waits for a thread to come free; the pool never grows beyond both', async () => {
  const { max, perOwner, reserve } = native.closerThreads();
  const shared = Math.ceil(max / perOwner) * perOwner;
  const lingering = await lingeringSockets(shared + reserve);
  try {
    const { tickets, floor } = await fillShared(lingering.fds.slice(0, shared));
    // One blocked close each for `reserve` more owners (ids from 1000).
    const reserved = lingering.fds.slice(shared).map((fd, i) => native.closeInBackground([fd], 1000 + i));
    expect(await until(() => native.closerThreads().busy === max + reserve)).toBe(true);
    const waiting = await closeThatWaits(1, Math.max(max + reserve, floor));
    await lingering.drain();
    expect((await waiting.news).done).toEqual([true]);
    expect((await afterCloses([...tickets, ...reserved])).done.every(Boolean)).toBe(true);
  } finally {
    await lingering.drain();
    await lingering.end();
  }
});

/**
 * `node -e` script, run at RLIMIT_NOFILE 256: a socket on fd 3 closing what
 * arrives unwanted in background as owner 7; its fd table filled up to one
 * free number. Told `read`, it reads the message waiting there (MSG_CTRUNC:
 * one of its fds fits) and prints {received} once the close of the fd that
 * arrived is running on a closer thread (and so, for a lingering socket,
 * blocked there); told `ping`, {pong} with the fds still waiting; told
 * `after`, {closed} once they are closed.
 */
const TRUNCATED_RECEIVER = (dist: string): string => `
  const fs = require('node:fs');
  const { UnixSocket } = require(${JSON.stringify(`${dist}/socket`)});
  const { native } = require(${JSON.stringify(`${dist}/native`)});
  const socket = new UnixSocket(3, 'seqpacket');
  socket.useBackgroundCloser(true, 7);
  const waiting = () => native.backgroundClosesOfPeerFds(7);
  const print = (o) => console.log(JSON.stringify(o));
  const whenBusy = (then) => (native.closerThreads().busy === 1 ? then() : setTimeout(() => whenBusy(then), 10));
  process.stdin.on('data', (d) => {
    for (const line of d.toString().split('\\n').filter(Boolean)) {
      if (line === 'read') {
        socket.setMessageHandler((err, _data, fds) => {
          const got = { error: err && err.name, fdsClosed: err && err.fdsClosed, fds: fds ? fds.length : 0 };
          whenBusy(() => print({ received: { ...got, waiting: waiting() } }));
        });
      } else if (line === 'ping') {
        print({ pong: { waiting: waiting() } });
      } else if (line === 'after') {
        native.afterBackgroundCloses(socket.backgroundCloseTickets(), () => {
          print({ closed: { waiting: waiting() } });
          for (const fd of filler) fs.closeSync(fd);
          socket.close();
          process.exit(0);
        });
      }
    }
  });
  // Filled once stdin and stdout have their handles (libuv opens its EMFILE
  // reserve, /dev/null, with the first one): nothing else takes the free number.
  process.stdout;
  const filler = [];
  for (;;) {
    try { filler.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code === 'EMFILE') break; throw e; }
  }
  fs.closeSync(filler.pop());
  print({ ready: true });`;

withPython("a message that arrives truncated (MSG_CTRUNC: the receiver at its fd limit) hands the fds that did arrive to the closer as the socket's owner's: a lingering socket among them never blocks the receiver's loop", async () => {
  const before = openFdTable();
  const { fds, drain, end } = await lingeringSockets(1);
  const lingering = fds[0] as number;
  const memfds = [native.memfd('a'), native.memfd('b')];
  const [ours, theirs] = native.socketpair(native.constants.SOCK_SEQPACKET);
  const child = spawn('prlimit', ['--nofile=256:256', process.execPath, '-e', TRUNCATED_RECEIVER(join(__dirname, '..', '..', 'dist', 'src'))], {
    stdio: ['pipe', 'pipe', 'inherit', theirs],
  });
  closeFd(theirs);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => JSON.parse(((await lines.next()).value as string) ?? 'null');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    expect(await next()).toEqual({ ready: true });
    // The lingering socket first: it takes the one free number; the memfds do not fit and the kernel drops them.
    native.sendNow(ours, Buffer.from('x'), [lingering, ...memfds]);
    // In flight, the message holds it: ours is not its last reference, and this close does not block.
    closeOwnFd(lingering);
    child.stdin?.write('read\n');
    expect(await next()).toEqual({ received: { error: 'TruncatedError', fdsClosed: 1, fds: 0, waiting: 1 } });
    // Its close blocks on a closer thread; the loop goes on.
    child.stdin?.write('ping\n');
    expect(await next()).toEqual({ pong: { waiting: 1 } });
    await drain();
    child.stdin?.write('after\n');
    expect(await next()).toEqual({ closed: { waiting: 0 } });
  } finally {
    child.kill('SIGKILL');
    await exited;
    closeFd(ours);
    for (const fd of memfds) closeFd(fd);
    await drain();
    await end();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

/**
 * What a native Socket hands to the closer once it is closed (a message's
 * fds that reached nobody, a connection it accepted that nobody took, a
 * caller's closeInBackground) goes as the owner the socket had, and the
 * socket still names the ticket (backgroundCloseTickets) until it is done:
 * it was owner 0's, its ticket nobody's.
 */
withPython("fds a closed socket hands to the closer go as the owner it had, and it names their tickets until they are closed", async () => {
  const before = openFdTable();
  const OWNER = 9;
  const SEQPACKET = native.constants.SOCK_SEQPACKET;
  const { fds, drain, end } = await lingeringSockets(2);
  const [given, queued] = fds as [number, number];
  const [mine, peer] = native.socketpair(SEQPACKET);
  const socket = new native.Socket(mine, SEQPACKET);
  socket.useBackgroundCloser(true, OWNER);
  // A connection nobody takes, its queue holding the only reference to `queued`.
  const [connection, client] = native.socketpair(SEQPACKET);
  native.sendNow(client, Buffer.from('x'), [queued]);
  closeOwnFd(queued);
  let tickets: number[] = [];
  try {
    await new Promise<void>((r) => native.afterBackgroundCloses(socket.close(), r));
    const ticket = socket.closeInBackground([given]);
    socket.closeAccepted(connection);
    tickets = socket.backgroundCloseTickets();
    // Both blocked in the closer as OWNER's, and named. Before: owner 0's (0 here), no ticket named.
    expect({ peerFds: native.backgroundClosesOfPeerFds(OWNER), named: tickets.includes(ticket), tickets: tickets.length }).toEqual({
      peerFds: 2,
      named: true,
      tickets: 2,
    });
  } finally {
    closeFd(client);
    closeFd(peer);
    await drain();
    await end();
  }
  await new Promise<void>((r) => native.afterBackgroundCloses(tickets, r));
  expect(socket.backgroundCloseTickets()).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

withPython("generated: an fd handed to the closer that the program closes behind its back is never closed again: the program's file opened at its number stays open", async () => {
  const { perOwner } = native.closerThreads();
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-closer-identity-'));
  const before = openFdTable(process.pid);
  const OWNER = 9;
  let serial = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ size: fc.integer({ min: 1, max: 3 }), victim: fc.nat(2), registered: fc.boolean(), closedBefore: fc.boolean(), reopen: fc.boolean() }),
        async ({ size, victim: v, registered, closedBefore, reopen }) => {
          const path = join(dir, `file-${++serial}`);
          writeFileSync(path, `file ${serial}\n`);
          const lingering = await lingeringSockets(perOwner);
          try {
            // The owner's threads all in a close that blocks: its next batch waits in its queue.
            const blocked = lingering.fds.map((fd) => native.closeInBackground([fd], OWNER));
            expect(await until(() => native.closerThreads().busy >= perOwner)).toBe(true);
            const pipes = Array.from({ length: size }, () => makePipe()).flat();
            const victim = pipes[v % pipes.length] as number;
            if (registered) native.own(victim);
            const registration = fdRegistration(victim);
            expect(registration !== 0).toBe(registered);
            let ticket: number;
            if (closedBefore) {
              closeSync(victim);
              ticket = native.closeInBackground(pipes, OWNER);
            } else {
              ticket = native.closeInBackground(pipes, OWNER);
              closeSync(victim);
            }
            expect(native.backgroundCloseFds().queued).toEqual(expect.arrayContaining(pipes));
            // The program's own file takes the number (or nothing does).
            const mine = reopen ? openAt(path, victim) : undefined;
            const id = mine === undefined ? undefined : fstatSync(mine);
            await lingering.drain();
            expect((await afterCloses([...blocked, ticket])).done.every(Boolean)).toBe(true);
            const table = openFdTable();
            // The batch's other fds are closed; the program's file is still open at the number, still that file.
            expect(pipes.filter((fd) => fd !== victim && table.has(fd))).toEqual([]);
            if (mine !== undefined && id !== undefined) {
              // The closer left the number alone: the program's file is still there.
              expect(table.get(mine)).toBe(path);
              const now = fstatSync(mine);
              expect([now.dev, now.ino]).toEqual([id.dev, id.ino]);
              closeSync(mine);
            } else {
              expect(table.has(victim)).toBe(false);
            }
            // A registration of ours at the number is gone either way.
            expect(fdRegistration(victim)).toBe(0);
          } finally {
            await lingering.drain();
            await lingering.end();
          }
        },
      ),
      { numRuns: 6, examples: [[{ size: 1, victim: 0, registered: false, closedBefore: false, reopen: true }], [{ size: 2, victim: 1, registered: true, closedBefore: true, reopen: true }]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 120000);

test('generated: closeClientFds of a list naming a number twice is a TypeError naming it, nothing of the list closed; an expected file not at its number is EBADF', async () => {
  const before = openFdTable();
  const owner = native.newCloseOwner();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.nat(), fc.nat(), async (n, picks, againPick, at) => {
      const fds = Array.from({ length: n }, () => native.memfd('repeated'));
      try {
        const once = [...new Set(picks.map((p) => fds[p % n] as number))];
        const again = once[againPick % once.length] as number;
        const list = [...once];
        list.splice(at % (list.length + 1), 0, again);
        const error = thrown(() => native.closeClientFds(list, owner));
        // Made in the addon's realm, not jest's: compared by name.
        expect((error as Error).name).toBe('TypeError');
        expect((error as Error).message).toContain(`fd ${again} is named more than once`);
        expect(fds.every((fd) => openFdTable().has(fd))).toBe(true);
        // Each named once, with the files they hold expected there: closed.
        const files = once.map((fd) => {
          const id = native.identity(fd);
          return { dev: id.dev, ino: id.ino };
        });
        // One expected to hold another file (the next one's) is refused, nothing closed.
        if (once.length > 1) {
          const shifted = files.map((_, i) => files[(i + 1) % files.length]);
          const refused = thrown(() => native.closeClientFds(once, owner, shifted));
          expect(refused).toMatchObject({ code: 'EBADF' });
          expect((refused as Error).message).toContain(`fd ${once[0]} is not the client's`);
          expect(fds.every((fd) => openFdTable().has(fd))).toBe(true);
        }
        await afterCloses(native.closeClientFds(once, owner, files));
        expect(fds.filter((fd) => openFdTable().has(fd))).toEqual(fds.filter((fd) => !once.includes(fd)));
      } finally {
        for (const fd of fds) if (openFdTable().has(fd)) closeFd(fd);
      }
    }),
    { numRuns: 40 },
  );
  expect(openFdTable()).toEqual(before);
});
