/**
 * `node dist/harness/helper-churn.js [--connections N] [--payload BYTES] [--refused]`:
 * many short-lived clients of one helper daemon. Each connects, makes one
 * duplication and one call carrying a large argument, and closes. Prints the
 * daemon's RSS and this client's external memory (both after full GCs)
 * after a warm-up and at the end, so that memory kept per connection shows
 * as growth. Exits 1 if either grew by more than --max-growth-mb (50).
 *
 * With --refused, every one of the N is refused instead: this client holds
 * all the connections its uid may have (the daemon runs with
 * --max-connections-per-uid 4), so each further connect gets REFUSED. What
 * a refusal costs the daemon shows as its RSS growth.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { closeFd, connect, makeMemfd, PeerRefusedError, type Connection } from '../src';
import { BENCH_PEER_COMMAND, collectGarbage, type Usage } from './bench-peer';
import { HelperProcess } from './helper-process';

/** Connections held with --refused: the daemon's per-uid limit for this run. */
const HELD = 4;

async function clientExternal(): Promise<number> {
  collectGarbage();
  await new Promise((r) => setImmediate(r));
  collectGarbage();
  const m = process.memoryUsage();
  return m.external + m.arrayBuffers;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string', default: '10000' },
      warmup: { type: 'string', default: '200' },
      payload: { type: 'string', default: '150000' },
      'max-growth-mb': { type: 'string', default: '50' },
      refused: { type: 'boolean', default: false },
    },
  });
  const refusing = values.refused === true;
  const total = Number(values.connections);
  const warmup = Number(values.warmup);
  const payload = 'x'.repeat(Number(values.payload));
  const dir = mkdtempSync(join(tmpdir(), 'fdbridge-churn-'));
  const daemon = new HelperProcess(dir);
  const memfd = makeMemfd('churn');
  const held: Connection[] = [];
  try {
    await daemon.start(refusing ? { args: ['--max-connections-per-uid', String(HELD)] } : {});
    const socketPath = daemon.socketPath;
    if (refusing) for (let i = 0; i < HELD; i++) held.push(await connect('helper', { command: BENCH_PEER_COMMAND, socketPath }));
    const refused = async (): Promise<void> => {
      const err = await connect('helper', { command: BENCH_PEER_COMMAND, socketPath }).then(
        async (c) => {
          await c.close();
          return new Error('a connection past the per-uid limit was served');
        },
        (e: unknown) => e,
      );
      if (!(err instanceof PeerRefusedError && err.quota === 'uidConnections')) throw err;
    };
    const served = async (): Promise<void> => {
      const conn = await connect('helper', { command: BENCH_PEER_COMMAND, socketPath });
      try {
        const fd = await conn.dupFileDescriptor(memfd);
        await conn.call('closeGiven', [fd]);
        if ((await conn.call('measure', payload)) !== payload.length) throw new Error('the call came back wrong');
      } finally {
        await conn.close();
      }
    };
    const once = refusing ? refused : served;
    const daemonUsage = async (): Promise<Usage> => {
      if (refusing) return (await (held[0] as Connection).call('usage')) as Usage;
      const conn = await connect('helper', { command: BENCH_PEER_COMMAND, socketPath });
      try {
        return (await conn.call('usage')) as Usage;
      } finally {
        await conn.close();
      }
    };
    for (let i = 0; i < warmup; i++) await once();
    const daemonBefore = await daemonUsage();
    const clientBefore = await clientExternal();
    const started = Date.now();
    for (let i = 0; i < total; i++) {
      await once();
      if ((i + 1) % 2000 === 0) process.stderr.write(`${i + 1} connections, ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    }
    const daemonAfter = await daemonUsage();
    const clientAfter = await clientExternal();
    const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MB`;
    const daemonGrowth = daemonAfter.rss - daemonBefore.rss;
    const clientGrowth = clientAfter - clientBefore;
    process.stdout.write(
      (refusing ? `${total} connections refused (after ${warmup} to warm up)\n` : `${total} connections (after ${warmup} to warm up), payload ${payload.length} bytes\n`) +
        `daemon RSS: ${mb(daemonBefore.rss)} -> ${mb(daemonAfter.rss)} (growth ${mb(daemonGrowth)}); fds ${daemonBefore.fds} -> ${daemonAfter.fds}\n` +
        `client external+arrayBuffers: ${mb(clientBefore)} -> ${mb(clientAfter)} (growth ${mb(clientGrowth)})\n`,
    );
    const limit = Number(values['max-growth-mb']) * 1048576;
    return daemonGrowth > limit || clientGrowth > limit || daemonAfter.fds !== daemonBefore.fds ? 1 : 0;
  } finally {
    for (const c of held) await c.close();
    closeFd(memfd);
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`helper-churn: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
