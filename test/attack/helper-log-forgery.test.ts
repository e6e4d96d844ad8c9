/**
 * The helper daemon's own log (`fdbridge helper --verbose`, its journal
 * under systemd; HelperDaemon's `log` option) names what each client did
 * wrong, quoting what the client sent: a command name, a module path, a
 * method. A client (of an allowed uid) chooses those strings. Whatever it
 * sends, each of the daemon's lines must stay one line that no client
 * wrote: no newline, carriage return or other control character, no
 * Unicode line separator and no bidirectional override may reach the log
 * unescaped (the same rule the `log` command holds a client's lines to),
 * or a client could append a line of its own ("fdbridge helper: serving
 * pid 1 (uid 0)") or show the daemon's line in another order.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { EofError, HelperDaemon } from '../../src';
import { closeFd } from '../../src/fd';
import { encodeJsonText, FrameType } from '../../src/protocol';
import { rawConnect, receiveNow, sendNow } from '../../src/testing';

/** What the log command escapes in a client's line: C0 and C1 controls, DEL, line separators, bidi overrides and isolates. */
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** Waits for the next frame from the daemon (true) or its end of the connection (false). */
async function reply(fd: number): Promise<boolean> {
  for (;;) {
    let m;
    try {
      m = receiveNow(fd, 256 * 1024, 0);
    } catch (err) {
      if (err instanceof EofError || (err as { code?: string }).code === 'ECONNRESET') return false;
      throw err;
    }
    if (m) return m.data.length > 0;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let dir: string;
let daemon: HelperDaemon;
const lines: string[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-log-forgery-'));
  daemon = HelperDaemon.start({ socketPath: join(dir, 'helper.sock'), log: (line) => lines.push(line) });
});
afterAll(async () => {
  await daemon.close();
  rmSync(dir, { recursive: true, force: true });
});

// Text with something unsafe in it, among ordinary characters.
const hostileText = fc
  .tuple(
    fc.string({ maxLength: 12 }),
    fc.constantFrom('\n', '\r', '\x1b[2K\r', '\u2028', '\u2029', '\u202e', '\u2066', '\u200f', '\u061c', '\x85', '\x00', '\t'),
    fc.constantFrom('fdbridge helper: serving pid 1 (uid 0)', 'x', ''),
  )
  .map(([a, bad, b]) => `${a}${bad}${b}`);

/** Where in a request the text goes: each is quoted by one of the daemon's lines when refused. */
const shapes: Array<(text: string) => { hello: string; method?: string }> = [
  (text) => ({ hello: JSON.stringify({ version: 1, command: { name: text } }) }),
  (text) => ({ hello: JSON.stringify({ version: 1, command: { name: 'log', module: text } }) }),
  (text) => ({ hello: JSON.stringify({ version: 1, command: { name: 'log', export: text } }) }),
  (text) => ({ hello: JSON.stringify({ version: 1, command: { name: 'log' } }), method: text }),
];

test('generated: whatever a client puts in its HELLO or CALL, every line of the daemon\'s log is one line with nothing unsafe in it', async () => {
  await fc.assert(
    fc.asyncProperty(hostileText, fc.integer({ min: 0, max: shapes.length - 1 }), async (text, shape) => {
      const { hello, method } = (shapes[shape] as (t: string) => { hello: string; method?: string })(text);
      const from = lines.length;
      const fd = rawConnect('seqpacket', daemon.socketPath);
      try {
        sendNow(fd, encodeJsonText(FrameType.HELLO, 1, hello));
        if ((await reply(fd)) && method !== undefined) {
          sendNow(fd, encodeJsonText(FrameType.CALL, 2, JSON.stringify({ method, args: [] })));
          await reply(fd);
        }
      } finally {
        closeFd(fd);
      }
      // The daemon logs a connection's end when it sees it; wait for that (no time bound).
      while (daemon.stats.active > 0) await new Promise((resolve) => setTimeout(resolve, 5));
      const unsafe = lines.slice(from).filter((l) => UNSAFE.test(l));
      expect(unsafe).toEqual([]);
    }),
    { seed: 9, numRuns: 60 },
  );
});
