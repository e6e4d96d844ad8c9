/**
 * A client of a shared helper daemon redirects its log into an fd of a kind
 * that takes no text. An eventfd takes each 8 bytes of a line as a number
 * added to its counter: a line of a few dozen letters overflows it, and the
 * lane thread's write(2) then waits, in the kernel, for a read that nobody
 * will make (the daemon holds the only copy): the thread and the fd's copy
 * are held for good, and two such lines take every thread of the client's
 * uid's lane, so that no later line of that uid is written, whatever it is
 * redirected to. The redirect is refused (ERR_FDBRIDGE_LOG_FD_REFUSED, the
 * fd given closed, the log where it was) for any fd that is not a regular
 * file, pipe or FIFO, socket or character device open for writing; those
 * are taken as before. Generated over fd kinds and both ways of
 * redirecting (the call, a datagram), with the uid's later redirects, the
 * daemon's threads and fds, and this process's fd table checked. A client
 * whose log goes into a pipe nobody reads holds a thread of its uid's lane
 * until its connection closes: once every thread of it is so held, the
 * round's later clients' lines wait behind them (README) and are written
 * once those connections close.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, DatagramSocket, LOG_COMMAND, makeMemfd, type Connection } from '../../src';
import { closeFd, closeFds, makeEventfd, makePipe, openFdTable } from '../../src/fd';
import { laneThreadsPerOwner, startLaneWrite } from '../../src/test-hooks';
import { rawSocketPair, receiveNow } from '../../src/testing';
import { fullPipe } from '../util/full-pipe';
import { hasPython, PYTHON } from '../util/linger-attacker';
import { fdTableSettles, helperForSuite, startHelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const suite = helperForSuite('fdbridge-attack-log-fd-kinds-');

/** O_PATH (not in fs.constants): open(2) passes it through. */
const O_PATH = 0o10000000;

/** python3: a timerfd, a signalfd and an epoll fd, sent with SCM_RIGHTS on fd 3 (Node makes none of the three). */
const ANON_FDS = `
import ctypes, select, socket
libc = ctypes.CDLL(None, use_errno=True)
t = libc.timerfd_create(1, 0)
s = libc.signalfd(-1, ctypes.create_string_buffer(128), 0)
e = select.epoll()
assert t >= 0 and s >= 0
socket.send_fds(socket.socket(fileno=3), [b'k'], [t, s, e.fileno()])
`;

/** [timerfd, signalfd, epoll fd], made by python3; the caller closes them. */
function anonFds(): [number, number, number] {
  const [mine, theirs] = rawSocketPair('stream');
  try {
    const run = spawnSync(PYTHON, ['-c', ANON_FDS], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
    if (run.status !== 0) throw new Error(`python3 making the fds exited ${String(run.status)}`);
    const message = receiveNow(mine, 1, 3);
    const [t, s, e] = message?.fds ?? [];
    if (t === undefined || s === undefined || e === undefined) throw new Error(`python3 sent ${JSON.stringify(message)}`);
    return [t, s, e];
  } finally {
    closeFds([mine, theirs]);
  }
}

const REFUSED = ['eventfd', 'timerfd', 'signalfd', 'epoll', 'O_PATH', 'directory', 'read-only file'] as const;
const TAKEN = ['file', 'pipe', 'full pipe', 'socketpair', '/dev/null', 'memfd'] as const;
type Kind = (typeof REFUSED)[number] | (typeof TAKEN)[number];

/** What a refusal says the fd is, kind by kind. */
const REFUSED_AS: Record<(typeof REFUSED)[number], string> = {
  eventfd: 'anon_inode:[eventfd], not a file that takes text',
  timerfd: 'anon_inode:[timerfd], not a file that takes text',
  signalfd: 'anon_inode:[signalfd], not a file that takes text',
  epoll: 'anon_inode:[eventpoll], not a file that takes text',
  O_PATH: 'not open for writing (O_RDONLY or O_PATH)',
  directory: 'a directory',
  'read-only file': 'not open for writing (O_RDONLY or O_PATH)',
};

/** An fd of `kind` for the log; `read(n)` what arrived (n bytes expected), undefined where nothing can be read back. */
interface Target {
  fd: number;
  /** Closed with the target (the fd among them). */
  fds: number[];
  read?: (n: number) => Promise<string>;
}

function makeTarget(kind: Kind, dir: string, anon: readonly [number, number, number], name: string): Target {
  const own = (fd: number, read?: Target['read']): Target => ({ fd, fds: [fd], read });
  const readFile = (fd: number) => () => Promise.resolve(readFileSync(`/proc/self/fd/${fd}`, 'utf8'));
  switch (kind) {
    case 'eventfd':
      return own(makeEventfd());
    case 'timerfd':
      return { fd: anon[0], fds: [] };
    case 'signalfd':
      return { fd: anon[1], fds: [] };
    case 'epoll':
      return { fd: anon[2], fds: [] };
    case 'O_PATH': {
      // A regular file's (a directory's would be refused as a directory).
      const path = join(dir, `${name}.path`);
      closeSync(openSync(path, 'a'));
      return own(openSync(path, O_PATH));
    }
    case 'directory':
      return own(openSync(dir, 'r'));
    case 'read-only file':
      return own(openSync(join(dir, `${name}.ro`), constants.O_RDONLY | constants.O_CREAT, 0o600));
    case 'file': {
      const fd = openSync(join(dir, `${name}.log`), 'a');
      return own(fd, readFile(fd));
    }
    case 'memfd': {
      const fd = makeMemfd(name);
      return own(fd, readFile(fd));
    }
    case '/dev/null':
      return own(openSync('/dev/null', 'w'));
    case 'pipe':
    case 'full pipe': {
      if (kind === 'full pipe') {
        const [r, w] = fullPipe();
        return { fd: w, fds: [r, w] };
      }
      const [r, w] = makePipe();
      return {
        fd: w,
        fds: [r, w],
        read: async (n) => {
          const reader = openSync(`/proc/self/fd/${r}`, constants.O_RDONLY | constants.O_NONBLOCK);
          try {
            const chunks: Buffer[] = [];
            let got = 0;
            while (got < n) {
              const buf = Buffer.alloc(n - got);
              let k = 0;
              try {
                k = readSync(reader, buf);
              } catch (err) {
                if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
                await new Promise((resolve) => setTimeout(resolve, 10));
              }
              chunks.push(buf.subarray(0, k));
              got += k;
            }
            return Buffer.concat(chunks).toString();
          } finally {
            closeSync(reader);
          }
        },
      };
    }
    case 'socketpair': {
      const [a, b] = rawSocketPair('stream');
      return {
        fd: a,
        fds: [a, b],
        read: async (n) => {
          const chunks: Buffer[] = [];
          let got = 0;
          while (got < n) {
            const m = receiveNow(b, n - got, 0);
            if (m === null) {
              await new Promise((resolve) => setTimeout(resolve, 10));
              continue;
            }
            chunks.push(m.data);
            got += m.data.length;
          }
          return Buffer.concat(chunks).toString();
        },
      };
    }
  }
}

/** The names of `pid`'s threads (their comm), sorted. */
function threadsOf(pid: number): string[] {
  const names: string[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      names.push(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return names.sort();
}

/** `pid`'s threads but the background closer's (which stay a while after their closes, one for good), sorted. */
function threadsButClosers(pid: number): string[] {
  return threadsOf(pid).filter((name) => name !== 'fdbridge-close');
}

/**
 * Waits until `pid` has the threads `baseline` (threadsButClosers) named:
 * no log lane thread (a lane's threads end once it is empty), nothing more.
 */
async function threadsSettle(guard: HangGuard, pid: number, baseline: readonly string[]): Promise<void> {
  await guard.until(`pid ${pid} back to its threads ${JSON.stringify(baseline)}`, () => threadsButClosers(pid), (t) => t.join() === baseline.join());
}

/**
 * A first client of the daemon at `socketPath` (pid `pid`) logs a line into
 * a memfd and goes; returns the daemon's threads (threadsButClosers) once
 * its lane thread has ended: those a log line starts that stay (libuv's
 * pool, say) are among them.
 */
async function warmedThreads(guard: HangGuard, pid: number, socketPath: string): Promise<string[]> {
  const warm = await connect('helper', { command: LOG_COMMAND, socketPath });
  const file = makeMemfd('warm');
  try {
    await warm.call('redirectLogToFd', await warm.dupFileDescriptor(file));
    await warm.call('log', 'warm');
  } finally {
    await warm.close();
    closeFd(file);
  }
  return guard.until(`pid ${pid} without log lane threads`, () => threadsButClosers(pid), (t) => !t.includes('fdbridge-log'));
}

const readText = (fd: number): string => readFileSync(`/proc/self/fd/${fd}`, 'utf8');

/**
 * A line as an eventfd takes it: exactly 8 bytes (7 letters and the
 * newline; any other length is EINVAL), a number of at least 0x0a61616161616161
 * (little-endian) added to its counter; 25 of them overflow it, and the
 * write of the one that would waits for a read.
 */
const sevenLetters = fc.stringMatching(/^[a-z]{7}$/);
const linesArb = fc.array(sevenLetters, { minLength: 25, maxLength: 30 });

/** A redirect by datagram: the client's socket and the command's path. */
interface ByDatagram {
  client: DatagramSocket;
  path: string;
}

/** Redirects `conn`'s log to `fd` by a call or a datagram; resolves 'ok', or what refused it. */
async function redirect(conn: Connection, fd: number, by: ByDatagram | undefined): Promise<string> {
  if (by === undefined) {
    try {
      await conn.call('redirectLogToFd', await conn.dupFileDescriptor(fd));
      return 'ok';
    } catch (err) {
      const e = err as { code?: string; remote?: { code?: string; message?: string } };
      return `${e.remote?.code ?? e.code ?? 'no code'}: ${e.remote?.message ?? String(err)}`;
    }
  }
  await by.client.sendTo(by.path, Buffer.from('redirect'), [fd]);
  return (await by.client.receive()).data.toString();
}

const WAIT_MS = scaled(30_000);

const testWithPython = hasPython() ? test : test.skip;

testWithPython('generated: a redirect into an fd that takes no text is refused, the log left where it was; the others are taken; the uid redirects again after either', async () => {
  const { helper, socketPath, dir } = suite;
  const before = openFdTable(process.pid);
  const anon = anonFds();
  const daemonBefore = openFdTable(helper.pid);
  const daemonThreads = await warmedThreads(new HangGuard(WAIT_MS), helper.pid, socketPath);
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ kind: fc.constantFrom<Kind>(...REFUSED, ...TAKEN), byDatagram: fc.boolean(), lines: linesArb }), {
          minLength: 1,
          maxLength: 3,
        }),
        async (clients) => {
          const guard = new HangGuard(WAIT_MS);
          const round = run++;
          const roundDir = join(dir, `round-${round}`);
          mkdirSync(roundDir, 0o700);
          const opened: Connection[] = [];
          const targets: Target[] = [];
          const sockets: DatagramSocket[] = [];
          // The clients whose lines wait for room in a full pipe, each holding a thread of the uid's
          // lane with its first line, and those lines (each settles with its connection's close).
          let fullPipes: Connection[] = [];
          let stuck: Array<Promise<unknown>> = [];
          const endFullPipes = async (g: HangGuard): Promise<void> => {
            await g.within(Promise.all(fullPipes.map((c) => c.close())), 'the clients logging into full pipes closing');
            // A line stuck in a full pipe ends with its connection.
            for (const e of await g.within(Promise.all(stuck), 'the lines stuck in full pipes ending with their connections')) expect(e).toBeInstanceOf(Error);
            fullPipes = [];
            stuck = [];
          };
          try {
            for (const [i, c] of clients.entries()) {
              const conn = await guard.within(connect('helper', { command: LOG_COMMAND, socketPath }), 'a client connecting');
              opened.push(conn);
              let by: ByDatagram | undefined;
              if (c.byDatagram) {
                by = { client: DatagramSocket.bind(join(roundDir, `c${i}.sock`)), path: await conn.call<string>('listenForRedirects', join(roundDir, `r${i}.sock`)) };
                sockets.push(by.client);
              }
              // The log goes here first: where it stays after a refused redirect.
              const first = makeMemfd(`first-${round}-${i}`);
              targets.push({ fd: first, fds: [first] });
              expect(await guard.within(redirect(conn, first, by), 'a redirect into a memfd')).toBe('ok');
              const target = makeTarget(c.kind, roundDir, anon, `t${i}`);
              targets.push(target);
              const answer = await guard.within(redirect(conn, target.fd, by), `a redirect into ${c.kind}`);
              const refused = c.kind in REFUSED_AS;
              if (refused) {
                const reason = `the fd is ${REFUSED_AS[c.kind as keyof typeof REFUSED_AS]}; the log goes to a regular file, a pipe or FIFO, a socket or a character device (a terminal, /dev/null) open for writing`;
                expect(answer).toBe(by ? `refused: ${reason}` : `ERR_FDBRIDGE_LOG_FD_REFUSED: log.redirectLogToFd(${String(answer.match(/\((\d+)\)/)?.[1])}): ${reason}; it was closed and the log goes where it went`);
              } else {
                expect(answer).toBe('ok');
              }
              const text = c.lines.map((l) => `${l}\n`).join('');
              const logged = c.lines.map((l) => conn.call('log', l));
              if (c.kind === 'full pipe') {
                // Written once the pipe is read, or ended by the connection's close: never here.
                fullPipes.push(conn);
                stuck.push(...logged.map((p) => p.catch((e: unknown) => e)));
                continue;
              }
              if (fullPipes.length >= laneThreadsPerOwner()) {
                // Every thread of the uid's lane waits for room in a full pipe: this client's lines
                // wait behind those (its uid's lines, README), written once their connections close.
                await guard.within(conn.call('where'), 'a call behind lines held back');
                expect(readText(first)).toBe('');
                await endFullPipes(guard);
              }
              await guard.within(Promise.all(logged), `the lines of a client logging into ${c.kind}`, () => `the daemon's threads ${JSON.stringify(threadsOf(helper.pid))}`);
              if (refused) expect(readText(first)).toBe(text);
              else {
                expect(readText(first)).toBe('');
                if (target.read) expect(await guard.within(target.read(Buffer.byteLength(text)), `the lines read from ${c.kind}`)).toBe(text);
              }
              // The same client redirects again and is served.
              const again = makeMemfd(`again-${round}-${i}`);
              targets.push({ fd: again, fds: [again] });
              expect(await guard.within(redirect(conn, again, by), `a redirect after one into ${c.kind}`)).toBe('ok');
              await guard.within(conn.call('log', 'again'), `a line after a redirect from ${c.kind}`);
              expect(readText(again)).toBe('again\n');
            }
          } finally {
            // A guard of its own: after a wait that ran out the round's guard, the clean-up still
            // runs, and the failure reported is that wait's, not the clean-up's.
            const cleanUp = new HangGuard(WAIT_MS);
            for (const s of sockets) s.close();
            await cleanUp.within(Promise.all(opened.map((c) => c.close())), 'the clients closing');
            await endFullPipes(cleanUp);
            for (const t of targets) closeFds(t.fds);
          }
          // Another client of the uid, once those are gone (a line waiting for room in a full
          // pipe holds a thread of the uid's lane until its connection closes): served.
          const other = await guard.within(connect('helper', { command: LOG_COMMAND, socketPath }), 'another client connecting');
          const otherFile = makeMemfd(`other-${round}`);
          try {
            expect(await guard.within(redirect(other, otherFile, undefined), "another client's redirect")).toBe('ok');
            await guard.within(other.call('log', 'other'), "another client's line");
            expect(readText(otherFile)).toBe('other\n');
          } finally {
            // A guard of its own, as the round's clean-up above has.
            closeFd(otherFile);
            await new HangGuard(WAIT_MS).within(other.close(), 'another client closing');
          }
          expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
          await threadsSettle(guard, helper.pid, daemonThreads);
        },
      ),
      {
        numRuns: 12,
        // A run that fails in a hang guard leaves its clients and fds open (its clean-up's waits
        // are past the guard too), and each shrink of it would wait out a guard of its own: the
        // test would end at jest's limit, without the failure's message.
        endOnFailure: true,
        examples: [
          [
            [
              { kind: 'eventfd', byDatagram: false, lines: new Array<string>(25).fill('fdbridg') },
              { kind: 'eventfd', byDatagram: false, lines: new Array<string>(25).fill('fdbridg') },
            ],
          ],
          [
            [
              { kind: 'eventfd', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'full pipe', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
          [
            [
              { kind: 'full pipe', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'full pipe', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
          // Every thread of the uid's lane held by a full pipe: the next client's lines wait behind them.
          [
            [
              { kind: 'full pipe', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'full pipe', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'socketpair', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
          [
            [
              { kind: 'full pipe', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'full pipe', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'eventfd', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
          // Every other kind refused, whatever the runs draw.
          [
            [
              { kind: 'directory', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'O_PATH', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'read-only file', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
          [
            [
              { kind: 'timerfd', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'signalfd', byDatagram: false, lines: new Array<string>(25).fill('abcdefg') },
              { kind: 'epoll', byDatagram: true, lines: new Array<string>(25).fill('abcdefg') },
            ],
          ],
        ],
      },
    );
  } finally {
    closeFds(anon);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(240_000));

test("the attacker's case: two clients log into eventfds until a write would overflow one, then the uid's next client is served, and the daemon keeps no thread or fd of theirs", async () => {
  const before = openFdTable(process.pid);
  const guard = new HangGuard(WAIT_MS);
  const socketPath = `@fdbridge-log-eventfd-${process.pid}`;
  const helper = await startHelperProcess(socketPath);
  try {
    const daemonBefore = openFdTable(helper.pid);
    const daemonThreads = await warmedThreads(guard, helper.pid, socketPath);
    const attackers: Connection[] = [];
    const eventfds: number[] = [];
    for (let i = 0; i < 2; i++) {
      const conn = await connect('helper', { command: LOG_COMMAND, socketPath });
      attackers.push(conn);
      const e = makeEventfd();
      eventfds.push(e);
      await conn.call('redirectLogToFd', await conn.dupFileDescriptor(e)).catch(() => undefined);
      // 24 lines of 8 bytes: what an eventfd's counter takes.
      await Promise.allSettled(Array.from({ length: 24 }, () => conn.call('log', 'xxxxxxx')));
    }
    // Nothing was written into the eventfds (a line refused never reaches one).
    for (const e of eventfds) expect(readFileSync(`/proc/self/fdinfo/${e}`, 'utf8')).toMatch(/^eventfd-count:\s+0$/m);
    // The lines that would overflow the counters.
    const lines = attackers.flatMap((conn) => [conn.call('log', 'xxxxxxx'), conn.call('log', 'xxxxxxx')].map((p) => p.catch((err: unknown) => err)));
    await Promise.all(attackers.map((c) => c.close()));
    closeFds(eventfds);
    await guard.within(Promise.all(lines), "the attacker's lines ending");
    const next = await connect('helper', { command: LOG_COMMAND, socketPath });
    const file = makeMemfd('next');
    try {
      await next.call('redirectLogToFd', await next.dupFileDescriptor(file));
      await guard.within(next.call('log', 'served'), "the next client's line");
      expect(readText(file)).toBe('served\n');
    } finally {
      await next.close();
      closeFd(file);
    }
    expect(await fdTableSettles(helper.pid, daemonBefore)).toBe('');
    await threadsSettle(guard, helper.pid, daemonThreads);
  } finally {
    await helper.stop('SIGKILL');
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120_000));

test('in-process: a lane write into an eventfd fails EINVAL, nothing added to its counter', async () => {
  const before = openFdTable(process.pid);
  const e = makeEventfd();
  try {
    // 8 bytes: what an eventfd takes as a number to add.
    const write = startLaneWrite(e, Buffer.from('abcdefg\n'), 0);
    expect(await write.written).toBe(-osConstants.errno.EINVAL);
    expect(readFileSync(`/proc/self/fdinfo/${e}`, 'utf8')).toMatch(/^eventfd-count:\s+0$/m);
  } finally {
    closeFd(e);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

testWithPython('python3 makes the timerfd, signalfd and epoll fd the generated cases use', () => {
    const fds = anonFds();
    try {
      expect(fds.map((fd) => openFdTable(process.pid).get(fd))).toEqual(['anon_inode:[timerfd]', 'anon_inode:[signalfd]', 'anon_inode:[eventpoll]']);
    } finally {
      closeFds(fds);
    }
});
