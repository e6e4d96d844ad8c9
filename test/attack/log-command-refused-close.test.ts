/**
 * The log command closes the log fd it replaces (and, on close, the one it
 * has) with closeClientFds. When other code of the process has closed that
 * fd behind fdbridge's back (its number free now, or another file's), the
 * close is refused: the command must say so to whoever asked (the call's
 * error, the redirect's answer, close()'s error) and go on, never throw
 * out of a datagram's handler (that ends the process: in a helper daemon,
 * every client's). Each case runs in a process of its own (direct), whose
 * exit, answers, log lines and fd table are compared.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DIST_SRC } from '../util/nobody';
import { exitOf } from '../util/processes';
import { scaled } from '../util/time-scale';
import { within } from '../util/within';

const FD_FILES = join(__dirname, 'fixtures', 'fd-files.js');

/**
 * Redirects the log to a.log by `entry` (a call, a datagram; 'close' by a call), closes its fd behind
 * fdbridge's back (`after`: left free, which b.log's fd then takes, or /dev/null opened there), then
 * redirects to b.log and logs a line (or, for 'close', closes).
 */
const SCRIPT = `
const { connect, LOG_COMMAND, DatagramSocket } = require(process.env.DIST_SRC);
const { openAt } = require(process.env.FD_FILES);
const fs = require('node:fs');
const { join } = require('node:path');
const [entry, after, dir] = process.argv.slice(1);
const table = () => Object.fromEntries(fs.readdirSync('/proc/self/fd').map((n) => { try { return [n, fs.readlinkSync('/proc/self/fd/' + n)]; } catch { return [n, null]; } }).filter(([, t]) => t !== null));
const numberOf = (path, except) => Object.entries(table()).filter(([n, t]) => t === path && Number(n) !== except).map(([n]) => Number(n));
(async () => {
  const result = {};
  const a = join(dir, 'a.log'), b = join(dir, 'b.log');
  const fa = fs.openSync(a, 'a'), fb = fs.openSync(b, 'a');
  const before = table();
  const c = await connect('direct', { command: LOG_COMMAND });
  let client;
  const redirect = async (fd) => {
    if (entry !== 'datagram') {
      try { await c.call('redirectLogToFd', await c.dupFileDescriptor(fd)); return 'ok'; } catch (e) { return 'error: ' + e.message; }
    }
    await client.sendTo(join(dir, 'r.sock'), Buffer.from('redirect'), [fd]);
    return (await client.receive()).data.toString();
  };
  if (entry === 'datagram') {
    await c.call('listenForRedirects', join(dir, 'r.sock'));
    client = DatagramSocket.bind(join(dir, 'c.sock'));
  }
  result.first = await redirect(fa);
  const [n] = numberOf(a, fa);
  // Other code of the process closes the log fd behind fdbridge's back.
  fs.closeSync(n);
  const other = after === 'taken' ? openAt('/dev/null', n) : undefined;
  if (entry !== 'close') {
    result.second = (await redirect(fb)).replace(String(n), 'N');
    await c.call('log', 'to b');
  }
  try { await c.close(); result.closed = 'ok'; } catch (e) { result.closed = 'error: ' + e.message.replace(String(n), 'N'); }
  result.otherOpen = other === undefined ? null : fs.readlinkSync('/proc/self/fd/' + n);
  if (other !== undefined) fs.closeSync(other);
  client?.close();
  result.b = fs.readFileSync(b, 'utf8');
  const after_ = table();
  result.leaked = Object.keys(after_).filter((k) => !(k in before) || before[k] !== after_[k]).map((k) => k + ' ' + after_[k]);
  result.lost = Object.keys(before).filter((k) => !(k in after_)).map((k) => k + ' ' + before[k]);
  fs.closeSync(fa); fs.closeSync(fb);
  console.log(JSON.stringify({ result }));
})().catch((e) => { console.log(JSON.stringify({ result: { failed: e.stack } })); process.exitCode = 2; });
`;

async function runCase(entry: string, after: string): Promise<{ code: number | null; result: Record<string, unknown>; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-log-refused-'));
  try {
    const child = spawn(process.execPath, ['-e', SCRIPT, entry, after, dir], {
      env: { ...process.env, DIST_SRC, FD_FILES },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const { code } = await within(exitOf(child), scaled(20_000), `the ${entry}/${after} case's process`).catch((err: unknown) => {
      child.kill('SIGKILL');
      throw err;
    });
    const line = out.split('\n').find((l) => l.startsWith('{"result"'));
    return { code, result: line === undefined ? {} : (JSON.parse(line) as { result: Record<string, unknown> }).result, stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const REFUSED = /closeClientFds: fd N is not the client's to close/;

describe("the log command when its log fd was closed behind fdbridge's back", () => {
  for (const entry of ['call', 'datagram', 'close'] as const) {
    for (const after of ['free', 'taken'] as const) {
      test(`${entry}, the number ${after}: the refusal is reported, the process goes on, nothing leaked or closed that was not the command's`, async () => {
        const { code, result, stderr } = await runCase(entry, after);
        expect({ code, stderr: code === 0 ? '' : stderr, failed: result['failed'] }).toEqual({ code: 0, stderr: '', failed: undefined });
        expect(result).toMatchObject({ first: 'ok', leaked: [], lost: [], otherOpen: after === 'taken' ? '/dev/null' : null });
        if (entry === 'close') {
          expect(result['closed']).toMatch(REFUSED);
        } else if (after === 'free') {
          // b.log's fd took the free number: it is the new log fd, never closed as the one it replaces.
          expect(result).toMatchObject({ second: 'ok', closed: 'ok', b: 'to b\n' });
        } else {
          // The redirect applied (the line went to b.log), and its caller was told what was not closed.
          expect(result).toMatchObject({ closed: 'ok', b: 'to b\n' });
          expect(result['second']).toMatch(entry === 'call' ? /^error: .*SystemError \[EBADF\]: log: / : /^ok; log: /);
          expect(result['second']).toMatch(REFUSED);
        }
      });
    }
  }
});
