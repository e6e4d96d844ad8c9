/**
 * Test utilities: a relayed fd of fdbridge's closed here behind its back
 * and its number taken by a new fd of ours (test/attack/remote-relay-number-*):
 * a remote connection whose streams the test relays, a direct one whose
 * copies can take their numbers, and the relay's number here.
 */
import fc from 'fast-check';

import { connect, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { openFdTable, type FdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { registeredFds, registeredSince } from './registered-fds';
import { scaled } from './time-scale';
import type { HangGuard } from './wait-for';

export interface RelayConnections {
  /** To the probe command over the remote transport: what it is given here is relayed. */
  conn: Connection;
  /** To the probe command over the direct transport: its copies are new fds of ours that no relay polls. */
  direct: Connection;
  /** The remote command's fd table before the first run, which each run checks against. */
  serverBaseline: FdTable;
}

/**
 * Checks `property` (fast-check, `numRuns` runs, ending at the first
 * failure) with both connections made, the remote one's command started
 * (its serverBaseline read once it answers), and closed after the last run.
 */
export async function assertWithRelayConnections<Ts>(property: (c: RelayConnections) => fc.IAsyncProperty<Ts>, numRuns: number): Promise<void> {
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  const direct = await connect('direct', { command: PROBE_COMMAND });
  try {
    await conn.call('where');
    const serverBaseline = openFdTable(conn.location.pid);
    await fc.assert(property({ conn, direct, serverBaseline }), { numRuns, endOnFailure: true });
  } finally {
    await direct.close();
    await conn.close();
  }
}

/**
 * Gives `fd` to the command over `conn` (one stream relayed): the
 * command's number for it (`far`) and the number of the fd that relays it
 * here (`relayFd`, the one fdbridge registered for it).
 */
export async function relay(conn: Connection, fd: number): Promise<{ far: number; relayFd: number }> {
  const had = registeredFds();
  const [far] = await conn.dupFileDescriptors([fd]);
  const relayed = [...registeredSince(had).keys()];
  expect(relayed).toHaveLength(1);
  return { far: far as number, relayFd: relayed[0] as number };
}

/**
 * Has the command write `fill` (10,000 bytes a write) into its number
 * `far` over `conn` until a write fails, and checks that one failed with
 * EPIPE within `guard`: past the stream's window (4 MiB) and the pipe over
 * there, a write that is not refused blocks the command.
 */
export async function expectWritesRefused(conn: Connection, far: number, fill: string, guard: HangGuard): Promise<void> {
  const chunk = fill.repeat(Math.ceil(10_000 / fill.length)).slice(0, 10_000);
  const writes = (async (): Promise<unknown> => {
    for (let i = 0; i < 600; i++) await conn.call('write', far, chunk);
    return 'every write taken';
  })().catch((err: unknown) => err);
  const ended = await guard.within(writes, 'the command writing into the stream let go of');
  expect(ended).toBeInstanceOf(RemoteError);
  expect((ended as RemoteError).remote.code).toBe('EPIPE');
}
