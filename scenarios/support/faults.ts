/**
 * What the fault scenarios share: a command process that is killed at a
 * chosen step (FDBRIDGE_FAILPOINT in its environment, or SIGSTOP + SIGKILL),
 * and the checks every such fault ends with: each pending request rejects
 * with PeerExitedError and none is lost, no fd is left in
 * the client, close() resolves (twice), and a new connection works (for the
 * helper: after a new daemon replaced the killed one's stale socket).
 *
 * Counters (summed into results.totals): faultsInjected, faultsSurvived,
 * requestsRejectedTyped, and the peak settleAfterFaultMs (a measurement).
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';

import {
  describeFdLeakReport,
  makeMemfd,
  makePipe,
  PeerExitedError,
  ProcessFdSnapshot,
  PROBE_COMMAND,
  settleFdSnapshots,
  type Connection,
} from '../../src';
import type { ScenarioContext } from '../../harness/types';
import { ScenarioDaemon } from './daemon';
import { closeAll, closeRemote, remoteIdentities, sleep, wireIdentity } from './common';

export interface Settled {
  results: Array<PromiseSettledResult<unknown>>;
  /** From `since` to the moment the last request settled (ms): a measurement for the report, not a check. */
  elapsedMs: number;
}

/**
 * Waits for every request, measuring when the last one settled. There is no
 * bound here: a request that never settles (a lost reply, a hang) runs into
 * the row's time limit, which fails the row with a timeout.
 */
export async function settleAll(requests: ReadonlyArray<Promise<unknown>>, since: number): Promise<Settled> {
  let last = since;
  const results: Array<PromiseSettledResult<unknown>> = new Array(requests.length);
  const all = Promise.all(
    requests.map((p, i) =>
      p.then(
        (value) => {
          results[i] = { status: 'fulfilled', value };
        },
        (reason: unknown) => {
          results[i] = { status: 'rejected', reason };
        },
      ).finally(() => {
        last = performance.now();
      }),
    ),
  );
  await all;
  return { results, elapsedMs: last - since };
}

/** The requests a kill failed (killWithRequestsPending). */
export interface KillOutcome {
  /** Each rejected request's PeerExitedError, in the order of `requests`. */
  rejected: PeerExitedError[];
  /** From the kill to the moment the last request settled (ms): a measurement, not a check. */
  elapsedMs: number;
}

/**
 * The fault of a peer SIGKILLed with `requests` pending: kills `pid`
 * (counted in faultsInjected), waits for every request (settleAll; the time
 * is the settleAfterFaultMs peak), and checks that the kill failed some of
 * them, each with a PeerExitedError that `check` accepts (it asserts what
 * the error must say: the signal, the transport, the pid). A request that
 * resolved was answered before the kill landed.
 */
export async function killWithRequestsPending(
  ctx: ScenarioContext,
  pid: number,
  requests: ReadonlyArray<Promise<unknown>>,
  check: (err: PeerExitedError) => void,
): Promise<KillOutcome> {
  const since = performance.now();
  process.kill(pid, 'SIGKILL');
  ctx.count('faultsInjected');
  const settled = await settleAll(requests, since);
  ctx.peak('settleAfterFaultMs', settled.elapsedMs);
  const rejected: PeerExitedError[] = [];
  for (const s of settled.results) {
    if (s.status === 'fulfilled') continue;
    const reason = s.reason as unknown;
    assert.ok(reason instanceof PeerExitedError, `PeerExitedError, not ${String(reason)}`);
    check(reason);
    rejected.push(reason);
  }
  assert.ok(rejected.length > 0, 'the kill landed with requests pending');
  return { rejected, elapsedMs: settled.elapsedMs };
}

/** The state letter of /proc/<pid>/stat ('T' when stopped), or undefined when gone. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/**
 * SIGSTOPs `pid` and waits until the kernel shows it stopped. It stops when
 * it next runs, which on a loaded machine may be a while: no bound of its
 * own (the row's time limit is one); one that ends instead fails at once.
 */
export async function stopProcess(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  for (let state = processState(pid); state !== 'T'; state = processState(pid)) {
    assert.ok(state !== undefined && state !== 'Z' && state !== 'X', `pid ${pid} ended instead of stopping`);
    await sleep(5);
  }
}

/** Waits (at most `ms`) until the snapshot's process is back at its baseline; throws with the difference otherwise. */
export async function assertFdTableBack(snap: ProcessFdSnapshot, what: string, ms = 2000): Promise<void> {
  const report = await settleFdSnapshots([snap], { settleMs: ms });
  assert.ok(report.leaks.length === 0 && report.closed.length === 0, `${what}: the fd table is not back at its baseline:\n${describeFdLeakReport(report)}`);
}

/**
 * A command process for a fault: child and pidfd spawn it with `env` added;
 * helper starts a daemon of the scenario's own with `env` (the run's shared
 * daemon is never killed or given a failpoint here).
 */
export class FaultyPeer {
  readonly ctx: ScenarioContext;
  readonly daemon: ScenarioDaemon | undefined;

  private constructor(ctx: ScenarioContext, daemon: ScenarioDaemon | undefined) {
    this.ctx = ctx;
    this.daemon = daemon;
  }

  static async start(ctx: ScenarioContext, env: Record<string, string> = {}): Promise<FaultyPeer> {
    if (ctx.transport === 'helper') return new FaultyPeer(ctx, await ScenarioDaemon.start(ctx, { env }));
    if (ctx.transport !== 'child' && ctx.transport !== 'pidfd') throw new Error(`FaultyPeer: no command process on ${ctx.transport}`);
    const peer = new FaultyPeer(ctx, undefined);
    peer.#env = env;
    return peer;
  }

  #env: Record<string, string> = {};

  /** A connection to the faulty command (a fresh process for child/pidfd; the daemon for helper). */
  connect(): Promise<Connection> {
    if (this.daemon) return this.ctx.connect(PROBE_COMMAND, { socketPath: this.daemon.socketPath });
    return this.ctx.connect(PROBE_COMMAND, { child: { env: this.#env } });
  }

  /**
   * How the killed process ended, where this process can know: child/pidfd
   * report it in the PeerExitedError; for the helper daemon (our child
   * here) we wait for its exit. Undefined when unknown.
   */
  async killedBy(err: PeerExitedError): Promise<string | null | undefined> {
    if (!this.daemon) return err.signal;
    // Its exit is told when this process reaps it, later than its clients
    // see their sockets end (no bound of its own: the row's time limit is one).
    await this.daemon.exited();
    return this.daemon.exitStatus?.signal;
  }

  /**
   * After the fault: a new connection (for the helper, to a new daemon that
   * replaced the killed one's stale socket file, without the failpoint)
   * duplicates a file and the far side sees that very file.
   */
  async proveRecovery(source: number): Promise<void> {
    let conn: Connection;
    if (this.daemon) {
      assert.equal(this.daemon.alive, false, 'the daemon is dead');
      assert.ok(this.daemon.socketFileExists(), 'a SIGKILLed daemon leaves its socket file behind');
      await this.daemon.restart({ env: { FDBRIDGE_FAILPOINT: undefined } });
      conn = await this.ctx.connect(PROBE_COMMAND, { socketPath: this.daemon.socketPath });
    } else {
      conn = await this.ctx.connect(PROBE_COMMAND);
    }
    try {
      const [a, b] = await Promise.all([conn.dupFileDescriptor(source), conn.dupFileDescriptor(source)]);
      assert.notEqual(a, b);
      assert.deepEqual(await remoteIdentities(conn, [a as number, b as number]), [wireIdentity(source), wireIdentity(source)]);
      await closeRemote(conn, [a as number, b as number]);
    } finally {
      await conn.close();
    }
  }

  /**
   * Stops a daemon of our own; with `check`, asserts that it was running
   * and removed its socket file (a SIGKILLed one leaves it in ctx.tmpdir,
   * which the harness removes).
   */
  async stop(check = false): Promise<void> {
    if (!this.daemon) return;
    const wasAlive = this.daemon.alive;
    await this.daemon.stop();
    if (check) {
      assert.ok(wasAlive, 'the restarted daemon was still running');
      assert.equal(this.daemon.socketFileExists(), false, 'the stopped daemon removed its socket file');
    }
  }
}

/** fds to duplicate: two memfds and both ends of a pipe (the caller closes them). */
export function faultSources(): number[] {
  const [r, w] = makePipe();
  return [makeMemfd('fault-a'), makeMemfd('fault-b'), r, w];
}

/**
 * The shared ending of a killed-peer fault: every request in `requests`
 * rejected with PeerExitedError naming `pid` (how long after `since` is
 * recorded, not checked; a request that never settles runs into the row's
 * time limit); new requests fail at once; the client's table is back
 * at `clientBaseline`; close() resolves and is idempotent; and a new
 * connection works. Counts faultsSurvived when all of it holds.
 */
export async function proveSurvived(
  peer: FaultyPeer,
  conn: Connection,
  requests: ReadonlyArray<Promise<unknown>>,
  since: number,
  clientBaseline: ProcessFdSnapshot,
  sources: readonly number[],
): Promise<void> {
  const { ctx } = peer;
  const pid = conn.location.pid;
  const settled = await settleAll(requests, since);
  ctx.peak('settleAfterFaultMs', settled.elapsedMs);
  let first: PeerExitedError | undefined;
  for (const [i, s] of settled.results.entries()) {
    assert.equal(s.status, 'rejected', `request ${i} of ${requests.length} rejected (it resolved: the peer answered before dying)`);
    const reason = (s as PromiseRejectedResult).reason as unknown;
    assert.ok(reason instanceof PeerExitedError, `request ${i}: PeerExitedError, not ${String(reason)}`);
    assert.equal(reason.pid, pid);
    first ??= reason;
  }
  ctx.count('requestsRejectedTyped', requests.length);
  assert.ok(first, 'there were requests pending');
  assert.equal(await peer.killedBy(first), 'SIGKILL', 'the peer died of SIGKILL');
  // A dead peer fails new requests at once.
  await Promise.all([
    assert.rejects(conn.dupFileDescriptor(sources[0] as number), PeerExitedError),
    assert.rejects(conn.dupFileDescriptors([...sources]), PeerExitedError),
    assert.rejects(conn.call('echo', 1), PeerExitedError),
  ]);
  // No pin, no socket, no reply's fd left here.
  await assertFdTableBack(clientBaseline, 'client');
  // Closed cleanly: close() resolves, and again.
  await conn.close();
  await conn.close();
  assert.equal(conn.closed, true);
  await peer.proveRecovery(sources[0] as number);
  await peer.stop(true);
  await assertFdTableBack(clientBaseline, 'client, after the new connection');
  ctx.count('faultsSurvived');
  ctx.note(`${requests.length} pending requests rejected with PeerExitedError ${settled.elapsedMs.toFixed(0)} ms after the fault`);
}

/** Closes the sources and stops a daemon of our own, whatever happened. */
export async function cleanUp(peer: FaultyPeer | undefined, sources: readonly number[]): Promise<void> {
  closeAll(sources);
  await peer?.stop();
}

export interface FaultyPeerRun {
  peer: FaultyPeer;
  conn: Connection;
  /** fds to duplicate (faultSources()). */
  sources: readonly number[];
  /** The client's fd table before the connection. */
  baseline: ProcessFdSnapshot;
}

/**
 * The frame every killed-peer scenario shares: fault sources, a peer started
 * with `env` (e.g. a failpoint), the client's baseline, one connection; then
 * `body` injects the fault and proves the outcome. The connection is closed
 * and everything cleaned up, whatever happened.
 */
export async function withFaultyPeer(
  ctx: ScenarioContext,
  env: Record<string, string>,
  body: (run: FaultyPeerRun) => Promise<void>,
): Promise<void> {
  const sources = faultSources();
  let peer: FaultyPeer | undefined;
  try {
    peer = await FaultyPeer.start(ctx, env);
    const baseline = new ProcessFdSnapshot(process.pid, 'client');
    const conn = await peer.connect();
    try {
      await body({ peer, conn, sources, baseline });
    } finally {
      await conn.close();
    }
  } finally {
    await cleanUp(peer, sources);
  }
}
