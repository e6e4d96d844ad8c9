/**
 * child: the client spawns a helper process. Requests and fds travel together
 * over a SEQPACKET socketpair handed to the child at spawn as fd 3 (no socket
 * file anywhere), one round trip per duplication; Node's JSON IPC is not used.
 * The child exits when the client closes the connection or dies (it sees EOF).
 * The far side is entries/child-main.ts; the pidfd transport (pidfd.ts)
 * spawns the same process through spawnCommandProcess.
 */
import type { ChildProcess } from 'node:child_process';

import { killIfSpawned, spawnReapedAtTeardown, waitForExit } from '../child-process';
import type { ConnectOptions } from '../connection';
import { normalizeCommandSpec } from '../command';
import { PeerExitedError, systemErrorOf, type PeerExit } from '../errors';
import { constants, native } from '../native';
import { requireDistFile } from '../paths';
import { FRAME_SOCKET_OPTIONS, type ReadyPayload } from '../protocol';
import { wrapOwnSocket, type UnixSocket } from '../socket';
import { invalidType, validateInteger } from '../validate';
import { handshake, SocketConnection, type FdDelivery, type HelloRequest } from './socket-connection';

/** The fd number the child finds its socket at. */
export const CHILD_SOCKET_FD = 3;

/** What options.child may hold. */
const CHILD_OPTIONS: ReadonlySet<string> = new Set(['uid', 'gid', 'env']);

/**
 * Checks options.child before anything is made: a TypeError or RangeError
 * naming the option (a uid of -1 would otherwise reach libuv, whose spawn
 * fails with an untyped EINVAL; an option not spawned with, such as
 * `cwd`, would be ignored).
 */
export function validateChildOptions(child: unknown): void {
  if (child === undefined) return;
  if (typeof child !== 'object' || child === null || Array.isArray(child)) throw invalidType('connect: options.child', 'an object ({ uid?, gid?, env? })', child);
  for (const key of Object.keys(child)) {
    if (!CHILD_OPTIONS.has(key)) throw invalidType(`connect: options.child.${key}`, `left out: the command's process is spawned with uid, gid and env only`, (child as Record<string, unknown>)[key]);
  }
  const { uid, gid, env } = child as { uid?: unknown; gid?: unknown; env?: unknown };
  // Node takes an int32 (lib/child_process.js), and libuv refuses -1 (EINVAL).
  if (uid !== undefined) validateInteger(uid, 'connect: options.child.uid', 0, 0x7fffffff);
  if (gid !== undefined) validateInteger(gid, 'connect: options.child.gid', 0, 0x7fffffff);
  // setuid(2) alone keeps the group: another user's command would run with
  // this process's gid (root's group, for a root caller).
  if (uid !== undefined && gid === undefined && uid !== process.getuid?.()) {
    throw invalidType(
      'connect: options.child.gid',
      `given with options.child.uid ${uid as number} (the user's group: without it the command runs with this process's gid ${process.getgid?.()})`,
      gid,
    );
  }
  if (env === undefined) return;
  const what = 'an object of environment variables, each a string or undefined (to remove it)';
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw invalidType('connect: options.child.env', what, env);
  for (const [name, value] of Object.entries(env)) {
    // execve(2) takes NAME=value strings ending in NUL: a name with = or NUL, or a value with NUL, is another variable or none.
    if (name === '' || name.includes('=') || name.includes('\0')) throw invalidType('connect: options.child.env', 'variable names without = or NUL', name);
    if (value !== undefined && (typeof value !== 'string' || value.includes('\0'))) throw invalidType(`connect: options.child.env`, `${what}, without NUL`, value);
  }
}

/** A spawned command process, its socket, and its READY. */
export interface SpawnedCommand {
  socket: UnixSocket;
  child: ChildProcess;
  ready: ReadyPayload;
}

/**
 * Spawns the command's process (child-main.js, its socket as fd 3) and
 * completes the HELLO. `transport` names the process in errors; `hello`
 * gives what the HELLO asks for beyond the command, for the socket it goes
 * on (the pidfd transport, pidfd.ts, asks the process to pull each fd out
 * of this one instead of receiving it over the socket). On failure nothing
 * is left: the socket is closed and the process reaped.
 */
export async function spawnCommandProcess(
  options: ConnectOptions,
  transport: 'child' | 'pidfd',
  hello?: (socket: UnixSocket) => HelloRequest,
): Promise<SpawnedCommand> {
  const command = normalizeCommandSpec(options.command);
  validateChildOptions(options.child);
  const extraEnv = options.child?.env;
  const entry = requireDistFile('src/transports/entries/child-main.js');
  // Both ends ours (above the fd floor, registered): `theirs` reaches the
  // child as fd 3 all the same (spawn dup2s it there).
  const [mine, theirs] = native.socketpair(constants.SOCK_SEQPACKET, true);
  let socket: UnixSocket;
  let child: ChildProcess;
  try {
    socket = wrapOwnSocket(mine, 'seqpacket', { ...FRAME_SOCKET_OPTIONS, sendQueueLimit: options.sendQueueLimit });
  } catch (err) {
    native.close(mine);
    native.close(theirs);
    throw err;
  }
  try {
    child = spawnReapedAtTeardown(process.execPath, [entry], {
      stdio: ['ignore', 'inherit', 'inherit', theirs],
      ...(options.child?.uid !== undefined ? { uid: options.child.uid } : {}),
      ...(options.child?.gid !== undefined ? { gid: options.child.gid } : {}),
      // spawn() leaves out variables whose value is undefined: that is how one is removed.
      // Stryker disable next-line ConditionalExpression: forced true, no options.child.env spawns with a copy of process.env, which is what spawn() takes by default (forced false and `===` are killed)
      ...(extraEnv !== undefined ? { env: { ...process.env, ...extraEnv } } : {}),
    });
  } catch (err) {
    socket.close();
    // Node throws some of spawn's errors instead of emitting them (E2BIG: an
    // environment past execve's limit): the same typed error as those below.
    throw systemErrorOf(err, 'spawn', `connect: the ${transport} process could not be started`) ?? err;
  } finally {
    // The child has its own copy now (as fd 3); ours would keep the
    // socket alive after the child died and hide its EOF.
    native.close(theirs);
  }
  if (child.pid === undefined) {
    // spawn() failed (EMFILE, ENFILE, EACCES, ENOENT), and Node reports it
    // by 'error' on the next tick, not by a throw. A HELLO sent meanwhile
    // fails with EPIPE (the child's end is closed), which says nothing of
    // the cause, so no handshake starts: connect rejects with spawn's errno.
    socket.close();
    const err = await new Promise<unknown>((resolve) => child.once('error', resolve));
    throw systemErrorOf(err, 'spawn', `connect: the ${transport} process could not be started`) ?? err;
  }
  // Stryker disable next-line ArrowFunction,StringLiteral: Node emits 'error' on a process that has a pid only when kill() or send() fails; nothing sends to it, and the one kill, the catch's below, is of our own child, which cannot refuse it (no EPERM)
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => undefined);
  try {
    const ready = await Promise.race([
      handshake(socket, command, options.timeoutMs ?? 10_000, () => `the ${transport} process (pid ${child.pid})`, hello?.(socket)),
      spawnError,
    ]);
    return { socket, child, ready };
  } catch (err) {
    socket.close();
    // A child that died before answering (it could not load the addon or
    // the command module, say) shows up here as EOF or ECONNRESET: say
    // how it ended instead.
    const code = (err as { code?: string }).code;
    const died = code === 'ERR_FDBRIDGE_EOF' || code === 'ECONNRESET';
    // Stryker disable next-line ConditionalExpression: forced true, a child that did not die is waited for up to 1 s before the same kill and error (forced false is killed: a child that died is not yet seen to have exited)
    if (died) await waitForExit(child, 1000);
    if (died && (child.exitCode !== null || child.signalCode !== null)) {
      throw new PeerExitedError('connect', {
        transport,
        pid: child.pid,
        exitCode: child.exitCode,
        signal: child.signalCode,
      });
    }
    // A child that has exited is not signalled: its pid may be someone else's by now.
    if (killIfSpawned(child)) await waitForExit(child, 1000);
    throw err;
  }
}

export class ChildConnection extends SocketConnection {
  /** The helper process (to signal it in a test, for example). */
  readonly child: ChildProcess;

  /** Spawns the command's process; requests and fds travel over the socket. */
  static async open(options: ConnectOptions): Promise<ChildConnection> {
    const { socket, child, ready } = await spawnCommandProcess(options, 'child');
    return new ChildConnection(socket, child, ready, options.onCommandClosed, 'child');
  }

  protected constructor(
    socket: UnixSocket,
    child: ChildProcess,
    ready: { pid: number; threadId: number },
    onCommandClosed: ConnectOptions['onCommandClosed'],
    transport: 'child' | 'pidfd',
    delivery?: FdDelivery,
  ) {
    super(
      socket,
      transport,
      ready,
      async (): Promise<PeerExit> => {
        // EOF comes when the child's fds close, that is as it exits; its exit
        // status follows through SIGCHLD a moment later.
        await waitForExit(child, 1000);
        return { transport, pid: ready.pid, exitCode: child.exitCode, signal: child.signalCode };
      },
      onCommandClosed,
      delivery,
    );
    this.child = child;
    child.once('exit', () => this.commandProcessEnded());
  }

  protected override commandProcessExited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  protected override async peerReleased(): Promise<void> {
    await waitForExit(this.child, 5000);
    if (killIfSpawned(this.child)) await waitForExit(this.child, 1000);
  }
}
