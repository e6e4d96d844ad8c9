/** Test utilities: a helper daemon's status, as `fdbridge helper --status` asks for it, and a root client served by it. */
import { connect, LOG_COMMAND, type HelperStatus } from '../../src';

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
