/**
 * helper: connect to a daemon someone started with
 * `npx fdbridge helper --socket <path>`. The same frames as the child
 * transport, over a connected SEQPACKET socket.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import type { ConnectOptions } from '../connection';
import { commandRequest } from '../command';
import { PeerRefusedError, SystemError, TimeoutError, type PeerExit } from '../errors';
import { closeOwnFds } from '../fd';
import { FRAME_SOCKET_OPTIONS } from '../protocol';
import { UnixSocket } from '../socket';
import { invalidType, validateIntegerList } from '../validate';
import { daemonOnThisThread, defaultHelperSocketPath, helperAddress, MAX_UID, TAKEN_OVER_REFUSAL, type HelperStatus } from './helper-daemon';
import { handshake, SocketConnection, WITH_FRAMES, type FdDelivery } from './socket-connection';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const ROOT_UID = 0;

/** The Pid: line of a pidfd's fdinfo: the process's pid, -1 once it has exited, undefined if unreadable. */
function pidOfPidfd(pidfd: number): number | undefined {
  let fdinfo: string;
  try {
    fdinfo = readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8');
  } catch {
    return undefined;
  }
  // Stryker disable next-line Regex: the kernel writes "Pid:\t<pid>" at the start of a line, the first "Pid:" in a pidfd's fdinfo (NSpid's is lower case): unanchored, or with one \s, it reads the same
  const m = /^Pid:\s*(-?\d+)/m.exec(fdinfo);
  return m ? Number(m[1]) : undefined;
}

/** Whom a client trusts as the daemon besides its own uid and root: options.trustPeer, checked. */
interface Trust {
  uids: readonly number[];
  pids: readonly number[];
}

/** What options.trustPeer may hold. */
const TRUST_OPTIONS: ReadonlySet<string> = new Set(['uids', 'pids']);

/** The largest pid: pid_t is an int32. */
const MAX_PID = 0x7fffffff;

/**
 * Checks options.trustPeer before any socket is made, and returns a copy of
 * it: anything but an object of `uids` and `pids`, each an array of
 * integers, is a TypeError or RangeError naming the field or entry. A
 * misspelt key would trust nobody it meant to, silently.
 */
export function validateTrustPeer(trust: unknown): Trust {
  if (trust === undefined) return { uids: [], pids: [] };
  if (typeof trust !== 'object' || trust === null || Array.isArray(trust)) throw invalidType('connect: options.trustPeer', 'an object ({ uids?, pids? })', trust);
  for (const key of Object.keys(trust)) {
    if (!TRUST_OPTIONS.has(key)) throw invalidType(`connect: options.trustPeer.${key}`, 'left out: a daemon is trusted by uids and pids only', (trust as Record<string, unknown>)[key]);
  }
  const { uids, pids } = trust as { uids?: unknown; pids?: unknown };
  return {
    uids: uids === undefined ? [] : validateIntegerList(uids, 'connect: options.trustPeer.uids', 'an array of uids', 0, MAX_UID),
    // Not 0: SO_PEERCRED reads pid 0 for a listener outside our pid
    // namespace, so trusting pid 0 would trust every such process.
    pids: pids === undefined ? [] : validateIntegerList(pids, 'connect: options.trustPeer.pids', 'an array of pids', 1, MAX_PID),
  };
}

/**
 * Decides, before anything is sent, whether the process listening at `path`
 * is one this client trusts (see ConnectOptions.trustPeer); throws
 * PeerRefusedError if not. Returns its credentials.
 */
function checkListener(socket: UnixSocket, path: string, trust: Trust): { pid: number; uid: number; gid: number } {
  const peer = socket.peerCredentials();
  const me = process.getuid?.() ?? 0;
  // Root is trusted as it is by OpenSSH (a root-owned ~/.ssh passes
  // StrictModes) and systemd: it can read our files and our memory anyway,
  // so handing it an fd gives it nothing it could not take.
  if (peer.uid === me || peer.uid === ROOT_UID || trust.uids.includes(peer.uid)) return peer;
  if (trust.pids.includes(peer.pid)) {
    // SO_PEERCRED holds a pid number, which a dead listener's successor may
    // reuse; SO_PEERPIDFD names the listening process itself.
    const gone = (why: string): PeerRefusedError =>
      new PeerRefusedError(`connect: the process that listens at ${path} (pid ${peer.pid}) is no longer running (${why}); nothing was sent to it`, peer);
    let pidfd: number;
    try {
      pidfd = socket.peerPidfd({ own: true }).release();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENOPROTOOPT') return peer; // before Linux 6.5: SO_PEERCRED is all there is
      // Before Linux 6.16 a listener that has exited and been reaped has no
      // pidfd to give: EINVAL, standing for ESRCH (dbus-broker relies on it;
      // net/core/sock.c), never for a kernel without the option.
      if (code === 'EINVAL') throw gone('SO_PEERPIDFD found no process: EINVAL');
      throw err;
    }
    const live = pidOfPidfd(pidfd);
    closeOwnFds([pidfd]);
    if (live === peer.pid) return peer;
    // Stryker disable next-line StringLiteral: not equivalent, but 'nothing' shows only for a pidfd whose fdinfo has no Pid: line, and every kernel with SO_PEERPIDFD writes one: no test can stage it
    throw gone(`its pidfd says ${live ?? 'nothing'}`);
  }
  throw new PeerRefusedError(
    `connect: the socket at ${path} belongs to pid ${peer.pid}, uid ${peer.uid}, not to uid ${me}; nothing was sent to it ` +
      '(name that uid or pid in options.trustPeer to trust it)',
    peer,
  );
}

/**
 * A daemon started on the caller's own thread answers from the event loop
 * that dupFileDescriptorSync blocks: the call could only wait out its
 * timeout, so it throws at once.
 */
const SERVED_ON_THIS_THREAD: FdDelivery = Object.freeze({
  ...WITH_FRAMES,
  syncUnsupported:
    'dupFileDescriptorSync cannot be answered by a helper daemon started on this thread (HelperDaemon.start here): ' +
    'it answers from the event loop this call would block; use dupFileDescriptor, or run the daemon in a worker thread or another process',
});

/**
 * Connects to the helper daemon. A connection made while a socket-activated
 * daemon was starting, refused because its client read the credentials of
 * the socket's maker rather than the daemon's (TAKEN_OVER_REFUSAL), is made
 * again, once: the listener is then judged by the daemon's own credentials.
 */
export async function openHelper(options: ConnectOptions): Promise<SocketConnection> {
  const trust = validateTrustPeer(options.trustPeer);
  // options.timeoutMs bounds connecting and the handshake together, the
  // second attempt included; on the monotonic clock.
  const deadline = performance.now() + (options.timeoutMs ?? 10_000);
  try {
    return await openHelperOnce(options, trust, deadline);
  } catch (err) {
    if (!(err instanceof PeerRefusedError) || err.peer !== undefined || !err.message.includes(TAKEN_OVER_REFUSAL)) throw err;
    return openHelperOnce(options, trust, deadline);
  }
}

async function openHelperOnce(options: ConnectOptions, trust: Trust, deadline: number): Promise<SocketConnection> {
  const command = commandRequest(options.command);
  const path = options.socketPath ?? defaultHelperSocketPath();
  const left = (): number => Math.max(0, deadline - performance.now());
  let socket: UnixSocket;
  try {
    socket = await UnixSocket.connect(helperAddress(path), {
      kind: 'seqpacket',
      own: true,
      ...FRAME_SOCKET_OPTIONS,
      sendQueueLimit: options.sendQueueLimit,
      // A listener whose backlog is full (EAGAIN) is tried again until then.
      timeoutMs: left(),
    });
  } catch (err) {
    if (err instanceof SystemError && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) {
      throw new SystemError(
        err.errno,
        'connect',
        `connect failed: no helper daemon is listening at ${path} (${err.code}); start one with \`npx fdbridge helper --socket ${path}\``,
        { cause: err },
      );
    }
    throw err;
  }
  try {
    const peer = checkListener(socket, path, trust);
    const ready = await handshake(socket, command, options.timeoutMs ?? 10_000, () => `the helper daemon at ${path}`, {}, left());
    const probe = async (): Promise<PeerExit> => {
      // Not our child: no exit status to read. Tell "exited" from "closed
      // the connection" by whether the pid is still there shortly after.
      // Stryker disable next-line EqualityOperator: `i <= 10` is one more 20 ms poll, the same verdict
      for (let i = 0; i < 10 && isAlive(peer.pid); i++) await new Promise((r) => setTimeout(r, 20));
      return {
        transport: 'helper',
        pid: peer.pid,
        exitCode: null,
        signal: null,
        detail: isAlive(peer.pid) ? 'closed the connection' : 'exited',
      };
    };
    // Not by the listener's pid: a connection queued on a socket another
    // process made (socket activation) reads the maker's pid, yet the daemon
    // on this thread that took the socket over is the one that serves it.
    const delivery = daemonOnThisThread(path) ? SERVED_ON_THIS_THREAD : WITH_FRAMES;
    return new SocketConnection(socket, 'helper', ready, probe, options.onCommandClosed, delivery);
  } catch (err) {
    socket.close();
    throw err;
  }
}

/** How long helperStatus waits by default for the daemon's answer (ms): connect and the call together. */
export const HELPER_STATUS_TIMEOUT_MS = 10_000;

/**
 * The status of the helper daemon at `socketPath` (its built-in `status`
 * command, as `fdbridge helper --status` asks for it). A daemon that does
 * not answer within `timeoutMs`, the handshake and the call together,
 * fails it with a TimeoutError: one that accepts and answers HELLO but
 * never the call (its event loop stuck, a fake at the socket) does not
 * hang the caller. The connection is closed either way, its CLOSED waited
 * for only until the same deadline: past it (the call timed out) this side
 * hangs up at once. So it ends within `timeoutMs` and a margin that waits
 * for nothing: closing the socket.
 */
export async function helperStatus(socketPath: string, timeoutMs = HELPER_STATUS_TIMEOUT_MS): Promise<HelperStatus> {
  // On the monotonic clock: a step of the wall clock moves no deadline.
  const deadline = performance.now() + timeoutMs;
  const conn = await openHelper({ command: { name: 'status' }, socketPath, timeoutMs });
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError(`status: the helper daemon at ${socketPath} did not answer within ${timeoutMs} ms (it took the connection, not the call)`)),
        Math.max(0, deadline - performance.now()),
      );
    });
    return await Promise.race([conn.call<HelperStatus>('status'), late]);
  } finally {
    clearTimeout(timer);
    await conn.closeWithin(Math.max(0, deadline - performance.now()));
  }
}
