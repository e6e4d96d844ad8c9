/**
 * The log command's own rules, each against a model of what the client
 * sees: how a client's line is escaped and marked for a daemon's log,
 * what a `--logfile` argument means, and, on the direct transport (the
 * command in this thread, so its fds are this process's), the lines a
 * redirected log receives, its fds closed as it is redirected again and
 * closed, and the datagram redirect's answers. Generated inputs; the fd
 * table is the same after each test.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import fc from 'fast-check';

import { connect, DatagramSocket, LOG_COMMAND, logRedirectOption, parseLogfileArgument, RemoteError, SystemError, type Connection } from '../../src';
import { daemonLogLine, escapeLogText } from '../../src/commands/log-command';
import { closeFds, fdFlags, fdIdentity, makePipe, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-log-command-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The model: which UTF-16 code units a log line may not hold as they are. */
function unsafe(code: number): boolean {
  return code === 0x5c || code <= 0x1f || (code >= 0x7f && code <= 0x9f) || code === 0x061c || code === 0x200e || code === 0x200f || code === 0x2028 || code === 0x2029 || (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);
}

function modelEscape(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (!unsafe(code)) out += text[i];
    else if (code <= 0xff) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += `\\u${code.toString(16).padStart(4, '0')}`;
  }
  return out;
}

/** Code units at and around every edge of the unsafe ranges, and any other. */
const unit = fc.oneof(
  fc.constantFrom(0, 9, 10, 13, 0x1b, 0x1f, 0x20, 0x41, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0x9f, 0xa0, 0xff, 0x100, 0x061b, 0x061c, 0x061d, 0x200d, 0x200e, 0x200f, 0x2010, 0x2027, 0x2028, 0x2029, 0x202a, 0x202e, 0x202f, 0x2065, 0x2066, 0x2069, 0x206a, 0xfeff).map((c) => String.fromCharCode(c)),
  fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
);
const text = fc.string({ unit, maxLength: 30 });

test('generated: escapeLogText escapes exactly the unsafe code units, each as \\xNN or \\uNNNN', () => {
  fc.assert(
    fc.property(text, (t) => {
      expect(escapeLogText(t)).toBe(modelEscape(t));
    }),
    { numRuns: 500 },
  );
});

test("generated: daemonLogLine is one line marked with the client's pid and uid, one final newline dropped", () => {
  fc.assert(
    fc.property(fc.nat(), fc.nat(), text, fc.boolean(), (pid, uid, t, newline) => {
      const input = newline ? `${t}\n` : t;
      const line = daemonLogLine({ pid, uid }, input);
      expect(line).toBe(`fdbridge helper: log from pid ${pid} (uid ${uid}): ${modelEscape(input.endsWith('\n') ? input.slice(0, -1) : input)}\n`);
      expect(line.indexOf('\n')).toBe(line.length - 1);
    }),
    { numRuns: 300 },
  );
});

test('generated: parseLogfileArgument reads every form; anything but a non-empty string is a TypeError', () => {
  const path = fc.string({ minLength: 1, maxLength: 12 }).filter((p) => !['-', '-stdout', '-stderr'].includes(p) && !p.startsWith('!'));
  fc.assert(
    fc.property(
      fc.oneof(
        fc.constantFrom('-', '-stdout').map((a) => ({ a, want: { kind: 'stdout' } })),
        fc.constant({ a: '-stderr', want: { kind: 'stderr' } }),
        fc.constant({ a: '!', want: { kind: 'file', path: resolve('!'), truncate: false } }),
        path.map((p) => ({ a: `!${p}`, want: { kind: 'file', path: resolve(p), truncate: true } })),
        path.map((p) => ({ a: p, want: { kind: 'file', path: resolve(p), truncate: false } })),
      ),
      ({ a, want }) => {
        expect(parseLogfileArgument(a)).toEqual(want);
      },
    ),
    { numRuns: 200 },
  );
  for (const bad of ['', undefined, 5, null, ['-']]) {
    expect(() => parseLogfileArgument(bad as string)).toThrow(new TypeError('--logfile needs an argument: [!]path, -, -stdout or -stderr'));
  }
});

/** A direct connection to the log command for `body`; closed after, and the fd table checked. */
async function withLog(body: (conn: Connection) => Promise<void>): Promise<void> {
  const before = openFdTable();
  const conn = await connect('direct', { command: LOG_COMMAND });
  try {
    await body(conn);
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}

/** Reads what is in the pipe now (its writer still open), up to `max` bytes. */
function drain(r: number, bytes: number): string {
  const buf = Buffer.alloc(bytes);
  let n = 0;
  while (n < bytes) n += readSync(r, buf, n, bytes - n, null);
  return buf.toString();
}

test('generated: lines go to the redirected fd in call order, each ending in exactly one newline', async () => {
  await withLog(async (conn) => {
    const [r, w] = makePipe();
    try {
      await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(fc.string({ maxLength: 20 }).filter((s) => !s.includes('\n')), fc.boolean()), { maxLength: 6 }), async (lines) => {
          await Promise.all(lines.map(([l, nl]) => conn.call('log', nl ? `${l}\n` : l)));
          const want = lines.map(([l]) => `${l}\n`).join('');
          expect(drain(r, Buffer.byteLength(want))).toBe(want);
        }),
        { numRuns: 30 },
      );
      const err = await conn.call('log', 5).catch((e: unknown) => e);
      expect((err as RemoteError).remote).toMatchObject({ name: 'TypeError', message: 'log.log: line must be a string, not 5' });
    } finally {
      closeFds([r, w]);
    }
  });
});

test('generated: each redirect closes the log fd before it, and close() the last', async () => {
  const before = openFdTable();
  const [r, w] = makePipe();
  const withPipe = openFdTable();
  try {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 4 }), async (n) => {
        const conn = await connect('direct', { command: LOG_COMMAND });
        try {
          let last = -1;
          for (let i = 0; i < n; i++) {
            last = await conn.dupFileDescriptor(w);
            await conn.call('redirectLogToFd', last);
            await conn.call('log', `via ${i}`);
            expect(drain(r, `via ${i}\n`.length)).toBe(`via ${i}\n`);
          }
          // Every copy before the last is closed; the last is the log's.
          expect(await fdTableSettles(process.pid, new Map([...withPipe, [last, withPipe.get(w) as string]]))).toBe('');
        } finally {
          await conn.close();
        }
        expect(await fdTableSettles(process.pid, withPipe)).toBe('');
      }),
      { numRuns: 8 },
    );
  } finally {
    closeFds([r, w]);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('redirectLogToFd refuses what is no fd number, nothing adopted', async () => {
  await withLog(async (conn) => {
    const err = await conn.call('redirectLogToFd', -1).catch((e: unknown) => e);
    expect((err as RemoteError).remote).toMatchObject({ name: 'RangeError', message: 'log.redirectLogToFd: fd must be an integer from 0 to 2147483647, not -1' });
  });
});

test('close() ends a line waiting for a pipe nobody reads with ClosedError, and lines after it too; no copy of the fd is left', async () => {
  await withLog(async (conn) => {
    const [r, w] = makePipe();
    const withPipe = openFdTable();
    try {
      await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
      // The first line fits the pipe (64 KiB); the second fills it and waits, nothing being read here; the third waits its turn.
      const line = 'x'.repeat(40_000);
      const waiting = [line, line, 'after'].map((l) => conn.call('log', l).then(
        () => 'written',
        (e: unknown) => (e instanceof RemoteError ? e.remote.name : (e as Error).name),
      ));
      await new Promise((res) => setImmediate(res));
      await conn.close();
      const [first, ...rest] = await Promise.all(waiting);
      expect(['written', 'ClosedError']).toContain(first);
      expect(rest).toEqual(['ClosedError', 'ClosedError']);
      expect(await fdTableSettles(process.pid, withPipe)).toBe('');
    } finally {
      closeFds([r, w]);
    }
  });
});

test('logRedirectOption: a path appends, !path truncates; the file it opened is closed again', async () => {
  const file = join(dir, 'append.log');
  writeFileSync(file, 'before\n');
  await withLog(async (conn) => {
    await logRedirectOption(conn, file);
    await conn.call('log', 'one');
    expect(readFileSync(file, 'utf8')).toBe('before\none\n');
    await logRedirectOption(conn, `!${file}`);
    await conn.call('log', 'two');
    expect(readFileSync(file, 'utf8')).toBe('two\n');
  });
  const created = join(dir, 'created.log');
  await withLog(async (conn) => {
    await logRedirectOption(conn, created);
    await conn.call('log', 'new');
  });
  expect(readFileSync(created, 'utf8')).toBe('new\n');
});

test("logRedirectOption: - and -stdout send the log to a copy of this process's fd 1, -stderr of fd 2; neither is closed", async () => {
  for (const [argument, fd] of [['-', 1], ['-stdout', 1], ['-stderr', 2]] as const) {
    await withLog(async (conn) => {
      const before = openFdTable();
      await logRedirectOption(conn, argument);
      const added = [...openFdTable().keys()].filter((n) => !before.has(n));
      expect(added.length).toBe(1);
      expect(fdIdentity(added[0] as number)).toEqual(fdIdentity(fd));
    });
  }
});

test('logRedirectOption: a FIFO nobody reads is a SystemError ENXIO naming it; with a reader, the lines arrive', async () => {
  const fifo = join(dir, 'log.fifo');
  execFileSync('mkfifo', [fifo]);
  await withLog(async (conn) => {
    const err = await logRedirectOption(conn, fifo).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({ code: 'ENXIO', syscall: 'open' });
    expect((err as Error).message).toContain(`--logfile ${fifo}: it is a FIFO that nobody reads (ENXIO; open it for reading first, e.g. \`cat ${fifo}\`)`);
    // The open's own error, with the path it failed on, is kept as the cause.
    expect((err as Error).cause).toMatchObject({ code: 'ENXIO', syscall: 'open', path: fifo });
    const reader = openSync(fifo, 'r+');
    try {
      const held = openFdTable();
      await logRedirectOption(conn, fifo);
      // The command's copy shares the open file opened O_NONBLOCK here: made blocking again, as for any file.
      const added = [...openFdTable().keys()].filter((n) => !held.has(n));
      expect(added.map((n) => fdFlags(n).nonblock)).toEqual([false]);
      await conn.call('log', 'through the fifo');
      expect(drain(reader, 17)).toBe('through the fifo\n');
    } finally {
      closeSync(reader);
    }
  });
});

test('listenForRedirects: "redirect" with one fd is answered ok and the log goes there; anything else refused, its fds closed', async () => {
  await withLog(async (conn) => {
    const path = join(dir, `redirects-${process.pid}.sock`);
    expect(await conn.call('listenForRedirects', path)).toBe(path);
    const again = await conn.call('listenForRedirects', path).catch((e: unknown) => e);
    expect((again as RemoteError).remote.message).toBe(`listenForRedirects: already listening at ${path}`);
    const client = DatagramSocket.bind(join(dir, `client-${process.pid}.sock`));
    const [r, w] = makePipe();
    try {
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.constant('redirect'), fc.string({ maxLength: 10 })), fc.integer({ min: 0, max: 3 }), async (data, count) => {
          const fds = Array.from({ length: count }, () => w);
          await client.sendTo(path, Buffer.from(data), fds);
          const answer = (await client.receive()).data.toString();
          if (data === 'redirect' && count === 1) {
            expect(answer).toBe('ok');
            await conn.call('log', 'redirected');
            expect(drain(r, 11)).toBe('redirected\n');
          } else {
            expect(answer).toBe(`refused: expected "redirect" with one fd, got ${Buffer.byteLength(data)} bytes and ${count} fd(s)`);
          }
        }),
        { numRuns: 25, examples: [['redirect', 1], ['redirect', 0], ['redirect', 2], ['x', 1]] },
      );
    } finally {
      client.close();
      closeFds([r, w]);
    }
  });
});

test('a pipe whose reader is gone: each line fails with the SystemError EPIPE of its write', async () => {
  await withLog(async (conn) => {
    const [r, w] = makePipe();
    await conn.call('redirectLogToFd', await conn.dupFileDescriptor(w));
    closeFds([r, w]);
    for (const line of ['one', 'two']) {
      const err = await conn.call('log', line).catch((e: unknown) => e);
      expect((err as RemoteError).remote).toMatchObject({ name: 'SystemError', code: 'EPIPE', syscall: 'write' });
    }
  });
});

test('generated: a redirect from an unbound sender applies, unanswered; a refused one closes its fds', async () => {
  const before = openFdTable();
  const sender = DatagramSocket.open();
  // A bound client's datagram after the unbound one's: its answer says the one before was handled.
  const marker = DatagramSocket.bind(join(dir, `marker-${process.pid}.sock`));
  const [r, w] = makePipe();
  const withPipe = openFdTable();
  let n = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 3 }), async (redirect, count) => {
        const conn = await connect('direct', { command: LOG_COMMAND });
        try {
          const path = join(dir, `unbound-${process.pid}-${n++}.sock`);
          await conn.call('listenForRedirects', path);
          await sender.sendTo(path, Buffer.from(redirect ? 'redirect' : 'other'), Array.from({ length: count }, () => w));
          await marker.sendTo(path, Buffer.from('mark'), []);
          expect((await marker.receive()).data.toString()).toBe('refused: expected "redirect" with one fd, got 4 bytes and 0 fd(s)');
          if (redirect && count === 1) {
            await conn.call('log', 'after');
            expect(drain(r, 6)).toBe('after\n');
          }
        } finally {
          await conn.close();
        }
        expect(await fdTableSettles(process.pid, withPipe)).toBe('');
      }),
      { numRuns: 15, examples: [[false, 2], [true, 1], [true, 2]] },
    );
  } finally {
    sender.close();
    marker.close();
    closeFds([r, w]);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('logRedirectOption: an open that fails otherwise than a FIFO with no reader fails with its own error, not said to be one', async () => {
  const socketPath = join(dir, `not-a-fifo-${process.pid}.sock`);
  const listener = DatagramSocket.bind(socketPath);
  try {
    await withLog(async (conn) => {
      for (const [path, code] of [[socketPath, 'ENXIO'], [join(dir, 'missing', 'x.log'), 'ENOENT']] as const) {
        const err = await logRedirectOption(conn, path).catch((e: unknown) => e);
        expect(err).toMatchObject({ code, syscall: 'open' });
        expect((err as Error).message).not.toMatch(/FIFO/);
      }
    });
  } finally {
    listener.close();
  }
});

test('listenForRedirects refuses anything but a non-empty path, nothing bound', async () => {
  await withLog(async (conn) => {
    for (const bad of ['', 5, { abstract: 'x' }]) {
      const err = await conn.call('listenForRedirects', bad).catch((e: unknown) => e);
      expect((err as RemoteError).remote.name).toBe('TypeError');
      expect((err as RemoteError).remote.message.startsWith('log.listenForRedirects: path must be a non-empty path, not ')).toBe(true);
    }
  });
});

test('where() is the thread the command runs in; the spec names the log command', async () => {
  expect(LOG_COMMAND).toMatchObject({ name: 'log', export: 'LogCommand' });
  await withLog(async (conn) => {
    expect(await conn.call('where')).toEqual({ transport: 'direct', pid: process.pid, threadId: 0 });
  });
});
