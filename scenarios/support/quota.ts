/**
 * Shared by the helper-quota scenarios: a daemon of the scenario's own,
 * started with small limits (the run's daemon keeps the defaults), its
 * status (what it counted), and raw clients that misbehave on purpose.
 */
import { strict as assert } from 'node:assert';

import { connect, EofError, makeMemfd, PROBE_COMMAND, type Connection } from '../../src';
import { encodeCall } from '../../src/protocol';
import { sendNow } from '../../src/testing';
import type { UnixSocket } from '../../src/socket';
import type { HelperStatus } from '../../src/transports/helper-daemon';
import type { ScenarioContext } from '../../harness/types';
import { ScenarioDaemon } from './daemon';
import { closeAll } from './common';

/** Runs `body` against a daemon of this scenario's own started with `args` (limits), then stops it. */
export async function withQuotaDaemon(ctx: ScenarioContext, args: readonly string[], body: (daemon: ScenarioDaemon) => Promise<void>): Promise<void> {
  const daemon = await ScenarioDaemon.start(ctx, { name: 'quota', args });
  try {
    await body(daemon);
  } finally {
    await daemon.stop();
  }
}

/** What `p` rejects with; undefined when it resolves (its value is not wanted). */
export function errorOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

/**
 * What a duplication of `batch` copies of `source` on `conn` ends with: one
 * dupFileDescriptor for 1, one dupFileDescriptors batch otherwise;
 * undefined when it succeeds (the duplicates stay with the command).
 */
export function duplicationError(conn: Connection, source: number, batch: number): Promise<unknown> {
  return errorOf(batch === 1 ? conn.dupFileDescriptor(source) : conn.dupFileDescriptors(new Array<number>(batch).fill(source)));
}

/** What connecting to the daemon at `socketPath` ends with; undefined when it is served (the connection is closed again). */
export function connectError(ctx: ScenarioContext, socketPath: string): Promise<unknown> {
  return errorOf(ctx.connect(PROBE_COMMAND, { socketPath }).then((c) => c.close()));
}

/** The daemon's own account (the built-in status command): what each limit turned away. */
export async function daemonStatus(socketPath: string): Promise<HelperStatus> {
  const conn = await connect('helper', { command: { name: 'status' }, socketPath });
  try {
    return await conn.call<HelperStatus>('status');
  } finally {
    await conn.close();
  }
}

/**
 * A client that behaves, on the same daemon: one duplication and one call,
 * checked. Other clients' quotas must never cost it anything.
 */
export async function goodRoundTrip(conn: Connection, i: number): Promise<void> {
  const source = makeMemfd('good');
  try {
    const fd = await conn.dupFileDescriptor(source);
    await conn.call('adopt', [fd]);
    await conn.call('closeAdopted', [fd]);
    assert.equal(await conn.call('echo', i), i);
  } finally {
    closeAll([source]);
  }
}

export async function goodClient(socketPath: string): Promise<Connection> {
  return connect('helper', { command: PROBE_COMMAND, socketPath });
}

/**
 * Resolves once `socket` reads end-of-file (the daemon hung up on it);
 * messages before it are discarded. No deadline of its own: the daemon's
 * timeouts (--hello-timeout, --idle-timeout) are what end the connection,
 * and a daemon that never does holds the row until the runner's typed
 * RowTimeout fails it.
 */
export async function hungUpOn(socket: UnixSocket): Promise<void> {
  for (;;) {
    try {
      const m = await socket.receive();
      closeAll(m.fds);
    } catch (err) {
      if (err instanceof EofError) return;
      if ((err as { code?: string }).code === 'ECONNRESET') return;
      throw err;
    }
  }
}

/**
 * Sends CALL requests with `payloadBytes` of argument each on `fd` and never
 * reads a reply, until the kernel refuses more; returns how the sending
 * ended (EPIPE/ECONNRESET once the daemon cut this client off) or 'open'
 * after `maxRequests`.
 */
export async function floodWithoutReading(fd: number, payloadBytes: number, maxRequests: number): Promise<string> {
  const arg = 'x'.repeat(payloadBytes);
  for (let id = 1; id <= maxRequests; id++) {
    for (;;) {
      try {
        sendNow(fd, encodeCall(id, 'echo', [arg]));
        break;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'EAGAIN') return code ?? String(err);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  return 'open';
}
