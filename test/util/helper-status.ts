/** Test utilities: a helper daemon's status, as `fdbridge helper --status` asks for it, and clients served by one. */
import { connect, HelperDaemon, LOG_COMMAND, PROBE_COMMAND, type HelperOptions, type HelperStatus } from '../../src';
import { TimeoutError } from '../../src/errors';
import { helperStatus } from '../../src/transports/helper';
import { scaled } from './time-scale';

/**
 * The status of the daemon at `socketPath` (helperStatus: a daemon whose
 * loop is stuck, before the handshake or after it, fails with its typed
 * timeout; a hang guard, scaled, never a time the tests check).
 */
export function statusOf(socketPath: string): Promise<HelperStatus> {
  return helperStatus(socketPath, STATUS_OF_GUARD_MS);
}

/** How long statusOf waits for one status: a hang guard, scaled (time-scale.ts), below statusWhen's. */
export const STATUS_OF_GUARD_MS = scaled(20_000);

/**
 * How long statusWhen asks before it takes the wait for a hang: a hang
 * guard (scaled, time-scale.ts), far above what any awaited status takes,
 * below the limits of the tests that wait so (120 s and more, scaled as it
 * is, so at every time scale; helper-status.test.ts checks), so that a
 * status that never comes fails the test with what the daemon last said,
 * and the test's clean-up still runs.
 */
export const STATUS_WHEN_GUARD_MS = scaled(60_000);

/**
 * Asks for the daemon's status until `ok` holds; resolves with that status.
 * Past `guardMs` (a hang guard, not a time the test checks) it rejects with
 * a TimeoutError that says the last status it saw.
 */
export async function statusWhen(socketPath: string, ok: (s: HelperStatus) => boolean, guardMs = STATUS_WHEN_GUARD_MS): Promise<HelperStatus> {
  const deadline = Date.now() + guardMs;
  let asked = 0;
  for (;;) {
    const s = await statusOf(socketPath);
    asked++;
    if (ok(s)) return s;
    if (Date.now() >= deadline) {
      throw new TimeoutError(
        `statusWhen: the daemon at ${socketPath} did not reach the status waited for within ${guardMs} ms (a hang guard; ${asked} asked); ` +
          `the last status it gave: ${JSON.stringify(s)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a daemon here with `options`, has a probe client's echo of `token`
 * answered by it, then closes the client and the daemon; resolves with
 * what the echo answered.
 */
export async function echoFromNewDaemon(options: HelperOptions & { socketPath: string }, token: string): Promise<unknown> {
  const daemon = HelperDaemon.start(options);
  try {
    const conn = await connect('helper', { command: PROBE_COMMAND, socketPath: options.socketPath });
    const echoed = await conn.call('echo', token);
    await conn.close();
    return echoed;
  } finally {
    await daemon.close();
  }
}

/** A root client's round trip with the daemon at `socketPath`: a connection, 3 copies of `memfd` given, a call, closed. */
export async function rootServed(socketPath: string, memfd: number): Promise<void> {
  const c = await connect('helper', { command: LOG_COMMAND, socketPath, timeoutMs: 20000 });
  try {
    await c.dupFileDescriptors([memfd, memfd, memfd]);
    expect(await c.call('where')).toMatchObject({ transport: 'helper' });
  } finally {
    await c.close();
  }
}

/**
 * One round trip on the probe command that waits for its closes, as source
 * text (for scripts run as another user, too): 3 fds given, one adopted and
 * closed (closeAdopted answers once it is), the connection closed (CLOSED
 * comes once the command's other 2 are).
 */
export const ROUND_TRIP = `
  async function roundTrip(connect, socketPath, fd, options) {
    const c = await connect('helper', { command: { name: 'probe' }, socketPath, timeoutMs: 20000, ...options });
    try {
      const given = await c.dupFileDescriptors([fd, fd, fd]);
      await c.call('adopt', [given[0]]);
      await c.call('closeAdopted', [given[0]]);
    } finally {
      await c.close();
    }
  }`;

/** ROUND_TRIP in this process: `roundTrip(connect, socketPath, fd, connectOptions)`. */
export const roundTrip = new Function(`${ROUND_TRIP}; return roundTrip;`)() as (
  c: typeof connect,
  socketPath: string,
  fd: number,
  options: Record<string, unknown>,
) => Promise<void>;
