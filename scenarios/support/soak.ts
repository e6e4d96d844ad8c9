/**
 * A mixed workload for the soak scenarios: several clients at once (8 on one
 * helper daemon), each running rounds of operations drawn from the row's
 * seeded rng — single duplications (several per tick, so they fold),
 * batches of random size (up to 600: split into frames), calls, adopt and
 * close on the far side, identity checks, and releases by closing the
 * connection with duplicates never adopted — and checking every reply:
 *
 * - lost: a request still unsettled when its connection was closed under it.
 *   The mix sets no deadline of its own: a round waits for every reply. A
 *   reply that never comes holds the row until the runner's typed row
 *   deadline (RowTimeout, `--timeout`: 30 s in the default profile, 30 min
 *   in soak, where the 100,000 operations take minutes) fails it; the runner
 *   then closes the row's connections, and each request still waiting
 *   rejects with ClosedError, counted here as lost (the mix itself closes a
 *   connection only once all its requests have settled);
 * - duplicated: a duplication that resolves with an fd number already held
 *   in that process (by any client of it), or a batch listing one twice;
 * - mismatched: a call answered with another request's value;
 * - wrong identity: a duplicate that names another file there (every
 *   duplicate is checked before it is closed or released, and samples of
 *   those held are checked while they are held).
 *
 * Every one of those must stay 0, every operation must succeed, and the
 * resident memory of the client and of each command process may not grow
 * by more than RSS_GROWTH_LIMIT over the run.
 */
import { strict as assert } from 'node:assert';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ClosedError, makeEventfd, makeMemfd, makePipe, PROBE_COMMAND, type Connection, type TransportName, type WireIdentity } from '../../src';
import type { ScenarioContext } from '../../harness/types';
import type { Rng } from '../../harness/rng';
import { closeAll, wireIdentity } from './common';

/** Generous, but far below what an fd or request leak over 100,000 operations would cost. */
export const RSS_GROWTH_LIMIT = 200 * 2 ** 20;
/** Duplicates one client keeps on the far side at most before it closes some. */
const MAX_LIVE_PER_CLIENT = 1000;

/** Clients per transport: 8 on one helper daemon, fewer where each is a process of its own. */
export function clientsFor(transport: TransportName): number {
  return transport === 'helper' ? 8 : transport === 'child' || transport === 'pidfd' ? 3 : 4;
}

export interface MixReport {
  ops: number;
  repliesChecked: number;
  repliesLost: number;
  repliesDuplicated: number;
  repliesMismatched: number;
  identitiesChecked: number;
  identitiesWrong: number;
  opsFailed: number;
  reconnects: number;
  fdsDuplicated: number;
  clientRssStart: number;
  clientRssPeak: number;
  commandRssGrowthPeak: number;
  commandRssPeak: number;
  firstError?: string;
}

/** VmRSS of a process in bytes; undefined once it is gone. */
function rssOf(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Samples the RSS of this process and of every command process in use. */
class MemoryWatch {
  clientStart = process.memoryUsage.rss();
  clientPeak = this.clientStart;
  /** pid -> [first sample, largest sample] */
  readonly #commands = new Map<number, [number, number]>();
  readonly #timer: NodeJS.Timeout;
  readonly #pids: () => Iterable<number>;

  constructor(pids: () => Iterable<number>) {
    this.#pids = pids;
    this.#timer = setInterval(() => this.sample(), 200);
    this.sample();
  }

  sample(): void {
    this.clientPeak = Math.max(this.clientPeak, process.memoryUsage.rss());
    for (const pid of this.#pids()) {
      if (pid === process.pid) continue;
      const rss = rssOf(pid);
      if (rss === undefined) continue;
      const seen = this.#commands.get(pid);
      if (seen) seen[1] = Math.max(seen[1], rss);
      else this.#commands.set(pid, [rss, rss]);
    }
  }

  stop(): { growth: number; peak: number } {
    this.sample();
    clearInterval(this.#timer);
    let growth = 0;
    let peak = 0;
    for (const [first, top] of this.#commands.values()) {
      growth = Math.max(growth, top - first);
      peak = Math.max(peak, top);
    }
    return { growth, peak };
  }
}

/** One client: a connection, its rng, and the duplicates it holds on the far side (fd -> source index). */
interface Client {
  index: number;
  rng: Rng;
  conn: Connection;
  live: Map<number, number>;
  seq: number;
  /** Operations until it closes its connection (releasing what it holds) and opens another. */
  untilReconnect: number;
}

/**
 * Runs `ops` operations (in all) over clientsFor(ctx.transport) clients and
 * returns what it saw; the caller asserts and counts (see assertMixClean).
 */
export async function runMix(ctx: ScenarioContext, ops: number): Promise<MixReport> {
  // Sources with distinct identities (two pipe ends or two eventfds would share one).
  const file = join(ctx.tmpdir, 'soak-file');
  writeFileSync(file, 'soak');
  const sources = [makeMemfd('soak-0'), makeMemfd('soak-1'), makeMemfd('soak-2'), makeMemfd('soak-3'), makeEventfd(), openSync(file, 'r')];
  const [pr, pw] = makePipe();
  closeSync(pr);
  sources.push(pw);
  const identities = sources.map(wireIdentity);
  const report: MixReport = {
    ops: 0,
    repliesChecked: 0,
    repliesLost: 0,
    repliesDuplicated: 0,
    repliesMismatched: 0,
    identitiesChecked: 0,
    identitiesWrong: 0,
    opsFailed: 0,
    reconnects: 0,
    fdsDuplicated: 0,
    clientRssStart: 0,
    clientRssPeak: 0,
    commandRssGrowthPeak: 0,
    commandRssPeak: 0,
  };
  /** Per command process, every fd number some client holds there: a reply naming one of them again is a duplicate. */
  const held = new Map<number, Set<number>>();
  const heldIn = (pid: number): Set<number> => {
    let set = held.get(pid);
    if (!set) held.set(pid, (set = new Set(pid === process.pid ? sources : [])));
    return set;
  };
  const fail = (err: unknown): void => {
    report.opsFailed++;
    report.firstError ??= err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  };
  const reconnectGap = (rng: Rng): number =>
    ctx.transport === 'child' || ctx.transport === 'pidfd' ? rng.int(1000, 3000) : rng.int(200, 1500);

  const clients: Client[] = [];
  const count = clientsFor(ctx.transport);
  const memory = new MemoryWatch(() => clients.map((c) => c.conn.location.pid));
  const share = Math.ceil(ops / count);

  /** Gives up a client's hold on fds before they are closed there, so that the numbers may be reused at once. */
  const forget = (client: Client, fds: readonly number[]): void => {
    const set = heldIn(client.conn.location.pid);
    for (const fd of fds) {
      client.live.delete(fd);
      set.delete(fd);
    }
  };
  /** Records fds a duplication returned, checking each is new in that process. */
  const record = (client: Client, fds: readonly number[], from: readonly number[]): void => {
    const set = heldIn(client.conn.location.pid);
    for (let i = 0; i < fds.length; i++) {
      const fd = fds[i] as number;
      report.repliesChecked++;
      if (!Number.isInteger(fd) || fd < 0 || set.has(fd)) {
        report.repliesDuplicated++;
        continue;
      }
      set.add(fd);
      client.live.set(fd, from[i] as number);
    }
    report.fdsDuplicated += fds.length;
  };

  const open = async (index: number, rng: Rng): Promise<Client> => {
    const conn = await ctx.connect(PROBE_COMMAND);
    return { index, rng, conn, live: new Map(), seq: 0, untilReconnect: reconnectGap(rng) };
  };

  /** Checks that each of `fds` names, on the client's far side, the file of the source it was duplicated from. */
  const checkIdentities = (client: Client, fds: readonly number[]): Promise<void> => {
    const want = fds.map((fd) => identities[client.live.get(fd) as number] as WireIdentity);
    return client.conn.call<WireIdentity[]>('identities', fds).then((got) => {
      report.repliesChecked++;
      report.identitiesChecked += fds.length;
      for (let i = 0; i < fds.length; i++) {
        const a = got[i];
        const b = want[i] as WireIdentity;
        if (!a || a.dev !== b.dev || a.ino !== b.ino || a.type !== b.type) report.identitiesWrong++;
      }
    });
  };

  /** Checks every duplicate the client holds, then lets go of them (close() releases them there). */
  const release = async (client: Client): Promise<void> => {
    const fds = [...client.live.keys()];
    for (let i = 0; i < fds.length; i += 1000) await checkIdentities(client, fds.slice(i, i + 1000)).catch(fail);
    forget(client, fds);
  };

  /** Closes the connection with what it holds unadopted (released by close()), and opens another. */
  const reconnect = async (client: Client): Promise<void> => {
    await release(client);
    await client.conn.close();
    client.conn = (await open(client.index, client.rng)).conn;
    client.untilReconnect = reconnectGap(client.rng);
    report.reconnects++;
  };

  /** One round: up to 32 operations issued in one tick, then every reply checked. */
  const round = async (client: Client): Promise<number> => {
    const { rng, conn } = client;
    const pool = rng.shuffle([...client.live.keys()]);
    const take = (n: number): number[] => pool.splice(0, Math.min(n, pool.length));
    const work: Array<Promise<void>> = [];
    const n = rng.int(1, 32);
    for (let k = 0; k < n; k++) {
      const roll = rng.next();
      if (roll < 0.4) {
        const src = rng.int(0, sources.length - 1);
        work.push(conn.dupFileDescriptor(sources[src] as number).then((fd) => record(client, [fd], [src])));
      } else if (roll < 0.55) {
        const size = rng.next() < 0.7 ? rng.int(1, 16) : rng.next() < 0.83 ? rng.int(17, 253) : rng.int(254, 600);
        const from = Array.from({ length: size }, () => rng.int(0, sources.length - 1));
        work.push(
          conn.dupFileDescriptors(from.map((i) => sources[i] as number)).then((fds) => {
            if (fds.length !== size || new Set(fds).size !== size) report.repliesDuplicated++;
            record(client, fds, from);
          }),
        );
      } else if (roll < 0.75) {
        const token = { c: client.index, n: client.seq++ };
        work.push(
          conn.call<{ c: number; n: number }>('echo', token).then((v) => {
            report.repliesChecked++;
            if (v?.c !== token.c || v?.n !== token.n) report.repliesMismatched++;
          }),
        );
      } else if (roll < 0.95 || client.live.size > MAX_LIVE_PER_CLIENT) {
        const fds = take(client.live.size > MAX_LIVE_PER_CLIENT ? 500 : rng.int(1, 64));
        if (fds.length === 0) continue;
        // Checked there, then adopted and closed: the three calls run in
        // this order on the far side, so every duplicate closed this way
        // has its identity checked first.
        const checked = checkIdentities(client, fds);
        forget(client, fds);
        work.push(
          Promise.all([checked, conn.call<number>('adopt', fds), conn.call('closeAdopted', fds)]).then(([, adopted]) => {
            report.repliesChecked += 2;
            if (adopted !== fds.length) report.repliesMismatched++;
          }),
        );
      } else {
        // A sample of what it holds, checked while it keeps holding it.
        const fds = take(rng.int(1, 32));
        if (fds.length === 0) continue;
        work.push(checkIdentities(client, fds));
      }
    }
    // No deadline here (see "lost" above): a ClosedError means the runner
    // closed the connection under a request that never got its reply.
    await Promise.all(work.map((p) => p.catch((err: unknown) => (err instanceof ClosedError ? report.repliesLost++ : fail(err)))));
    return work.length;
  };

  const runClient = async (client: Client): Promise<void> => {
    let done = 0;
    while (done < share && report.repliesLost === 0 && report.opsFailed === 0) {
      const did = await round(client);
      done += did;
      report.ops += did;
      client.untilReconnect -= did;
      if (client.untilReconnect <= 0 && done < share) {
        await reconnect(client);
        done++;
        report.ops++;
      }
    }
  };

  try {
    for (let i = 0; i < count; i++) clients.push(await open(i, ctx.rng.fork(`client-${i}`)));
    report.clientRssStart = memory.clientStart;
    await Promise.all(clients.map(runClient));
    // The last release: each connection closes with what it still holds.
    for (const c of clients) {
      await release(c);
      await c.conn.close();
    }
  } finally {
    const { growth, peak } = memory.stop();
    report.clientRssPeak = memory.clientPeak;
    report.commandRssGrowthPeak = growth;
    report.commandRssPeak = peak;
    for (const c of clients) await c.conn.close();
    closeAll(sources);
  }
  return report;
}

/** Counts a report into the row's metrics and asserts it is clean. */
export function assertMixClean(ctx: ScenarioContext, r: MixReport, wanted: number): void {
  ctx.count('soakOps', r.ops);
  ctx.count('repliesChecked', r.repliesChecked);
  ctx.count('repliesLost', r.repliesLost);
  ctx.count('repliesDuplicated', r.repliesDuplicated);
  ctx.count('repliesMismatched', r.repliesMismatched);
  ctx.count('identitiesChecked', r.identitiesChecked);
  ctx.count('identitiesWrong', r.identitiesWrong);
  ctx.count('fdsDuplicated', r.fdsDuplicated);
  ctx.count('reconnects', r.reconnects);
  const clientGrowth = r.clientRssPeak - r.clientRssStart;
  ctx.peak('clientPeakRssBytes', r.clientRssPeak);
  ctx.peak('clientRssGrowthBytes', clientGrowth);
  if (r.commandRssPeak > 0) {
    ctx.peak('commandPeakRssBytes', r.commandRssPeak);
    ctx.peak('commandRssGrowthBytes', r.commandRssGrowthPeak);
    if (ctx.transport === 'helper') ctx.peak('helperPeakRssBytes', r.commandRssPeak);
  }
  const mb = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MB`;
  ctx.note(
    `${r.ops} operations over ${clientsFor(ctx.transport)} clients (${r.reconnects} reconnects, ${r.fdsDuplicated} fds duplicated): ` +
      `${r.repliesChecked} replies checked, ${r.identitiesChecked} identities; RSS client ${mb(r.clientRssStart)} -> peak ${mb(r.clientRssPeak)}` +
      (r.commandRssPeak > 0 ? `, command peak ${mb(r.commandRssPeak)} (growth ${mb(r.commandRssGrowthPeak)})` : ''),
  );
  assert.equal(r.opsFailed, 0, `${r.opsFailed} operations failed; the first: ${r.firstError}`);
  assert.equal(r.repliesLost, 0, 'replies lost');
  assert.equal(r.repliesDuplicated, 0, 'replies duplicated (an fd number handed out twice)');
  assert.equal(r.repliesMismatched, 0, "replies that answered another request");
  assert.equal(r.identitiesWrong, 0, 'duplicates naming the wrong file');
  assert.ok(r.ops >= wanted, `${r.ops} of ${wanted} operations ran`);
  assert.ok(r.identitiesChecked > 0, 'some identities were sampled');
  assert.ok(clientGrowth < RSS_GROWTH_LIMIT, `client RSS grew by ${mb(clientGrowth)} (limit ${mb(RSS_GROWTH_LIMIT)})`);
  assert.ok(r.commandRssGrowthPeak < RSS_GROWTH_LIMIT, `a command process's RSS grew by ${mb(r.commandRssGrowthPeak)} (limit ${mb(RSS_GROWTH_LIMIT)})`);
}
