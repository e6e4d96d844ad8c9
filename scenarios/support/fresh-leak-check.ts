/**
 * Run as its own process (not a scenario: the runner loads only
 * `*.scenario.js`): checkFdLeaks in a process that has just started, with
 * stdout wherever its parent put it (a file, a pipe, a terminal), around
 * what makes the runtime open its lazy fds, and around a real leak.
 *
 *     node fresh-leak-check.js OUT.json [--transport T [--socket PATH]]
 *
 * OUT.json gets { clean, devNull, worker? }: what checkFdLeaks reported
 * around a spawn, an fs.watch and (with --transport) a connection with a
 * duplication; around an fd opened on /dev/null and left open; and, without
 * --transport, around a spawn in a worker thread (its own event loop).
 * Nothing is written to stdout or stderr: a stream there would open
 * libuv's EMFILE reserve before the check.
 */
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { Worker } from 'node:worker_threads';

import { checkFdLeaks, closeFd, connect, makeMemfd, PROBE_COMMAND, type FdLeakReport, type TransportName } from '../../src';

const run = promisify(execFile);

/** What a report says, in JSON. */
function summary(r: FdLeakReport): { leaks: Array<{ fd: number; target: string }>; closed: number; runtime: string[] } {
  return {
    leaks: r.leaks.map((e) => ({ fd: e.fd, target: e.target })),
    closed: r.closed.length,
    runtime: (r.runtime ?? []).map((e) => e.target),
  };
}

/** The same spawn under checkFdLeaks, in a worker thread. */
function inWorker(): Promise<unknown> {
  const code = `
    const { parentPort } = require('node:worker_threads');
    const { execFile } = require('node:child_process');
    const { promisify } = require('node:util');
    const { checkFdLeaks } = require(${JSON.stringify(join(__dirname, '..', '..', 'src'))});
    checkFdLeaks(() => promisify(execFile)('true'), { settleMs: 2000 }).then(
      (r) => parentPort.postMessage({ leaks: r.leaks.map((e) => ({ fd: e.fd, target: e.target })), closed: r.closed.length, runtime: (r.runtime || []).map((e) => e.target) }),
      (err) => parentPort.postMessage({ error: String(err) }),
    );`;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('message', (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { transport: { type: 'string' }, socket: { type: 'string' } },
    allowPositionals: true,
  });
  const out = positionals[0];
  if (out === undefined) throw new Error('usage: fresh-leak-check OUT.json [--transport T [--socket PATH]]');
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-fresh-'));
  const result: Record<string, unknown> = {};
  try {
    const clean = await checkFdLeaks(
      async () => {
        await run('true');
        watch(dir).close();
        if (values.transport !== undefined) {
          const conn = await connect(values.transport as TransportName, {
            command: PROBE_COMMAND,
            ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
          });
          const memfd = makeMemfd('fresh');
          try {
            await conn.dupFileDescriptor(memfd);
            await conn.call('where');
          } finally {
            closeFd(memfd);
            await conn.close();
          }
        }
      },
      { settleMs: 2000 },
    );
    result['clean'] = summary(clean);
    let leaked = -1;
    const leak = await checkFdLeaks(
      () => {
        leaked = openSync('/dev/null', 'r');
      },
      { settleMs: 0 },
    );
    closeSync(leaked);
    result['devNull'] = { fd: leaked, ...summary(leak) };
    if (values.transport === undefined) result['worker'] = await inWorker();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  writeFileSync(out, JSON.stringify(result));
}

main().catch((err: unknown) => {
  writeFileSync(process.argv[2] ?? '/dev/null', JSON.stringify({ error: String((err as Error)?.stack ?? err) }));
  process.exitCode = 1;
});
