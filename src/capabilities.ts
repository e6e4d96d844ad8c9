/**
 * What a transport preserves of an fd it duplicates into the command's
 * context. Every transport but remote hands over the caller's open file
 * description itself; remote (another machine, or another namespace)
 * gives the command a local fd of its own whose bytes are relayed.
 * Scenarios declare what they need (`needs`); a row on a transport that
 * lacks it is skipped with the reason.
 */
import type { TransportName } from './transports';

export type Capability =
  /** The command's fd is the caller's open file description: the same (st_dev, st_ino), the same status flags (O_NONBLOCK). */
  | 'identity'
  /** One file offset, shared: a read or write on either side moves it for both. */
  | 'shared-offset'
  /** fstat on the command's side describes the caller's file (type, size, inode). */
  | 'fstat'
  /** fcntl and flock locks taken through either fd are on the same file. */
  | 'locks'
  /** The command can pass its fd on (to a process it spawns, over a socket) as the caller's open file. */
  | 'pass-on'
  /** Any kind of fd can be duplicated: directories, listening sockets, eventfds, pidfds, epoll fds, datagram sockets. */
  | 'every-kind';

export const CAPABILITIES: readonly Capability[] = ['identity', 'shared-offset', 'fstat', 'locks', 'pass-on', 'every-kind'];

const ALL: ReadonlySet<Capability> = new Set(CAPABILITIES);

/**
 * What each transport preserves. remote relays bytes: byte order, end of
 * file and close hold there, and nothing in this list does.
 */
const BY_TRANSPORT: Readonly<Record<TransportName, ReadonlySet<Capability>>> = {
  direct: ALL,
  worker: ALL,
  child: ALL,
  helper: ALL,
  pidfd: ALL,
  remote: new Set(),
};

/** The capabilities `transport` preserves. */
export function transportCapabilities(transport: TransportName): ReadonlySet<Capability> {
  return BY_TRANSPORT[transport];
}

/** Why `transport` cannot run something that needs `needs`, or undefined when it can. */
export function missingCapabilities(transport: TransportName, needs: readonly Capability[] | undefined): string | undefined {
  const have = transportCapabilities(transport);
  const missing = (needs ?? []).filter((c) => !have.has(c));
  if (missing.length === 0) return undefined;
  const why =
    // Stryker disable next-line ConditionalExpression: forced true, the other transports' reason is never given: every transport but remote preserves every capability, so none of them misses any (forced false is killed)
    transport === 'remote'
      ? 'the remote transport relays bytes: the command gets a local fd of its own, not the client\'s open file'
      : // Stryker disable next-line StringLiteral: never reached, as above: every transport but remote preserves every capability
        `the ${transport} transport does not preserve it`;
  return `needs ${missing.join(', ')}: ${why}`;
}
