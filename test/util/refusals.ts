/**
 * How a command's closeClientFds refusal reaches its caller, the same on
 * every transport: a RemoteError carrying the command's SystemError EBADF,
 * its message naming the fd.
 */
import { RemoteError } from '../../src';

/** The call's value (null for none), or what it rejected with. */
export function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => ({ ok: v ?? null }),
    (e: unknown) => e,
  );
}

/** What `outcome` says of a refusal naming `fd` (compare with REFUSED). */
export function refusal(outcome: unknown, fd: number): unknown {
  const remote = (outcome as RemoteError).remote;
  return { remote: outcome instanceof RemoteError, name: remote?.name, code: remote?.code, names: String(remote?.message).includes(`fd ${fd} `) };
}

/** refusal() of a typed EBADF naming its fd. */
export const REFUSED = { remote: true, name: 'SystemError', code: 'EBADF', names: true };
