/** Test utilities: a helper daemon's status, as `fdbridge helper --status` asks for it, and clients served by one. */
import { connect, HelperDaemon, LOG_COMMAND, PROBE_COMMAND, type HelperOptions, type HelperStatus } from '../../src';

/** The status of the daemon at `socketPath` (a typed timeout from connect fails a daemon whose loop is stuck). */
export async function statusOf(socketPath: string): Promise<HelperStatus> {
  const conn = await connect('helper', { command: { name: 'status' }, socketPath, timeoutMs: 20000 });
  try {
    return await conn.call<HelperStatus>('status');
  } finally {
    await conn.close();
  }
}

/** Asks for the daemon's status until `ok` holds; resolves with that status. */
export async function statusWhen(socketPath: string, ok: (s: HelperStatus) => boolean): Promise<HelperStatus> {
  for (;;) {
    const s = await statusOf(socketPath);
    if (ok(s)) return s;
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
