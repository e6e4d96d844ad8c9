/**
 * The background closer (fd_ops.h: FdCloseInBackground) and the news of its
 * progress on the event loop (afterBackgroundCloses): the callback comes once
 * every close up to its ticket is done, never before and never
 * synchronously, while a close that blocks keeps only the closer thread
 * waiting.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import { closeFd, makePipe, openFdTable } from '../../src/fd';
import { native } from '../../src/native';
import { thrown } from './helpers';

/** Resolves once the closer thread has reached `ticket`, with what was true at that moment. */
function afterCloses(ticket: number): Promise<{ done: number }> {
  return new Promise((resolve) => native.afterBackgroundCloses(ticket, () => resolve({ done: native.backgroundClosesDone() })));
}

test('the callback runs once every close up to its ticket is done, on the event loop, never synchronously', async () => {
  const pipes = Array.from({ length: 200 }, () => makePipe()).flat();
  const ticket = native.closeInBackground(pipes);
  let called = false;
  const news = new Promise<void>((resolve) =>
    native.afterBackgroundCloses(ticket, () => {
      called = true;
      // Every fd of the ticket is closed by now.
      const table = openFdTable();
      expect(pipes.filter((fd) => table.has(fd))).toEqual([]);
      expect(native.backgroundClosesDone()).toBeGreaterThanOrEqual(ticket);
      resolve();
    }),
  );
  expect(called).toBe(false);
  await news;
  expect(called).toBe(true);
});

test('a ticket already reached still calls back asynchronously, once', async () => {
  const ticket = native.closeInBackground([]);
  let calls = 0;
  const news = new Promise<void>((resolve) => native.afterBackgroundCloses(ticket, () => (calls++, resolve())));
  expect(calls).toBe(0);
  await news;
  await new Promise((resolve) => setImmediate(resolve));
  expect(calls).toBe(1);
});

test('bad arguments are a TypeError', () => {
  const call = native.afterBackgroundCloses as (ticket: unknown, callback: unknown) => void;
  for (const [ticket, callback, message] of [
    [-1, () => undefined, /ticket must be a non-negative integer/],
    [1.5, () => undefined, /ticket must be a non-negative integer/],
    [1, 'no', /afterBackgroundCloses\(ticket, callback\)/],
  ] as const) {
    const err = thrown(() => call(ticket, callback));
    // Made in the addon's realm, not jest's: compared by name.
    expect((err as Error).name).toBe('TypeError');
    expect((err as Error).message).toMatch(message);
  }
});

/**
 * A TCP socket whose close blocks: its send buffer full of data its peer has
 * not read, SO_LINGER 60 s. python3 makes it and prints its pid and fd; once
 * told `closed`, it closes its own copy (ours, taken with pidfd_getfd, is
 * then the last one); once told `drain`, it reads everything at the peer,
 * which lets our close finish.
 */
const LINGERING = `
import json, os, socket, struct, sys
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(1)
tcp = socket.create_connection(lst.getsockname()); peer, _ = lst.accept()
tcp.setblocking(False)
try:
    while True: tcp.send(b'x' * 65536)
except BlockingIOError: pass
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 60))
print(json.dumps({'pid': os.getpid(), 'fd': tcp.fileno()}), flush=True)
sys.stdin.readline(); tcp.close(); print('{}', flush=True)
sys.stdin.readline()
peer.setblocking(True)
while peer.recv(1 << 20): pass
print('{}', flush=True)
`;

test('a close that blocks (SO_LINGER, unsent data) holds back its callback and nothing else', async () => {
  const py = spawn('python3', ['-c', LINGERING], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: py.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, number>> => JSON.parse(((await lines.next()).value as string) ?? 'null');
  const exited = new Promise((resolve) => py.once('exit', resolve));
  try {
    const { pid, fd } = await next();
    const pidfd = native.pidfdOpen(pid!);
    const lingering = native.pidfdGetfd(pidfd, fd!);
    closeFd(pidfd);
    py.stdin.write('closed\n');
    await next();
    const before = native.backgroundClosesDone();
    const ticket = native.closeInBackground([lingering]);
    let called = false;
    const news = afterCloses(ticket).then((r) => ((called = true), r));
    // The loop runs on (timers, I/O) while the closer thread is blocked in close(2).
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(called).toBe(false);
    expect(native.backgroundClosesDone()).toBe(before);
    expect(native.backgroundClosesPending()).toBe(1);
    py.stdin.write('drain\n');
    const { done } = await news;
    expect(done).toBeGreaterThanOrEqual(ticket);
    expect(openFdTable().has(lingering)).toBe(false);
    await next();
  } finally {
    py.stdin.end();
    await exited;
  }
});
