/**
 * The addon makes its errors (end of file, a failed read) with the factory
 * native.init was last given: each realm that loads fdbridge gives its own
 * (every jest test file does, in the same process), so a socket made in one
 * realm may get errors whose Error is another realm's, not its own module's.
 * A UnixSocket tells a read error from a message all the same, by its own
 * means: the error reaches a receive() waiting, or a message handler set
 * after messages were buffered, as an error, and close() drops buffered
 * messages (closing their fds) whatever else is buffered. In a process of
 * its own, whose factory is replaced by one from a vm context: every case,
 * sent 0–2 messages with an fd each (batched: all but the first wait in the
 * socket's buffer), then the peer's end closed, comes out as the messages
 * in order and then the end of file; the fds are closed and the process's
 * fd table is as it was.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';

const DIST_SRC = join(packageRoot, 'dist', 'src');

type End = 'receive' | 'handler' | 'close';
const ENDS: End[] = ['receive', 'handler', 'close'];

const SCRIPT = `
const vm = require('node:vm');
const { native } = require(${JSON.stringify(join(DIST_SRC, 'native.js'))});
const { UnixSocket } = require(${JSON.stringify(join(DIST_SRC, 'socket.js'))});
const { closeFds, diffFdTables, makeMemfd, openFdTable } = require(${JSON.stringify(join(DIST_SRC, 'fd.js'))});

// Errors of another realm, named as fdbridge's are.
native.init(vm.runInNewContext(\`(kind, errno, syscall) => {
  const e = new Error(syscall + ': ' + kind);
  e.name = kind === 'eof' ? 'EofError' : 'SystemError';
  return e;
}\`));

const outcome = (e) => (e && typeof e === 'object' ? e.name : String(e)) + (e instanceof Error ? ' (this realm)' : '');

async function run(end, sent) {
  // Batched: what the peer sent is read in one turn, so that all but the first
  // message wait in the socket's buffer for the next receive (or handler, or close).
  const [a, b] = UnixSocket.pair('seqpacket', { batchMessages: true });
  const file = makeMemfd('foreign-errors');
  for (let i = 0; i < sent; i++) await b.send(Buffer.from('m' + i), [file]);
  closeFds([file]);
  b.close();
  const got = [];
  const take = (m) => {
    got.push(m.data.toString());
    closeFds(m.fds);
  };
  try {
    if (end === 'receive' || sent === 0) {
      for (;;) take(await a.receive());
    }
    take(await a.receive());
    if (end === 'close') {
      a.close();
      got.push('closed');
      return got;
    }
    await new Promise((resolve) => {
      a.setMessageHandler((err, data, fds) => {
        if (err) {
          got.push(outcome(err));
          resolve();
        } else {
          take({ data, fds });
        }
      });
    });
  } catch (e) {
    got.push(outcome(e));
  }
  a.close();
  return got;
}

(async () => {
  const before = openFdTable();
  const results = {};
  for (const end of ${JSON.stringify(ENDS)}) for (let sent = 0; sent <= 2; sent++) results[end + ' ' + sent] = await run(end, sent);
  // The background closes of the closed sockets' copies end soon after.
  let diff;
  for (let i = 0; i < 200; i++) {
    diff = diffFdTables(before, openFdTable());
    if (diff.opened.length === 0 && diff.closed.length === 0) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(JSON.stringify({ results, fdTable: diff }));
})();
`;

test("a socket tells another realm's read errors from messages (receive waiting, handler after buffered messages, close); fds closed, fd table as it was", () => {
  const r = spawnSync(process.execPath, ['-e', SCRIPT], { encoding: 'utf8' });
  expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  const out = JSON.parse(r.stdout) as { results: Record<string, string[]>; fdTable: { opened: unknown[]; closed: unknown[] } };
  const expected: Record<string, string[]> = {};
  for (const end of ENDS) {
    for (let sent = 0; sent <= 2; sent++) {
      const messages = Array.from({ length: sent }, (_, i) => `m${i}`);
      // With nothing sent, the first receive gets the end of file.
      expected[`${end} ${sent}`] = end === 'close' && sent > 0 ? ['m0', 'closed'] : [...messages, 'EofError'];
    }
  }
  expect(out.results).toEqual(expected);
  expect(out.fdTable).toEqual({ opened: [], closed: [] });
});
