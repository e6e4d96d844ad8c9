/**
 * The helper daemon: started by someone (`npx fdbridge helper --socket PATH`),
 * it serves many clients at once, each with its own command instance.
 *
 * - It serves only peers whose SO_PEERCRED uid is its own or on its
 *   allow-list; others get a REFUSED frame and are disconnected unread.
 * - The default socket lives in a private 0700 directory under
 *   $XDG_RUNTIME_DIR (see defaultHelperSocketPath); the socket file is 0600.
 *   It never listens in a directory that others can write
 *   (checkSocketDirectory), a path it was given included.
 * - A stale socket file left by a dead daemon is removed; a live daemon's
 *   path is never taken; something that is not a socket is never unlinked.
 * - It removes its socket file when closed (SIGINT/SIGTERM in the CLI).
 */
import { lstatSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { COMMAND_NAME, loadCommandClass, type CommandSpec, type ModuleCommandSpec } from '../command';
import { BUILTIN_COMMANDS, DIAGNOSTIC_COMMANDS } from '../commands/registry';
import { FdBridgeError, UnknownCommandError } from '../errors';
import { encodeJson, FrameType, FRAME_SOCKET_OPTIONS } from '../protocol';
import { native } from '../native';
import { parseAddress, UnixServer, type SocketAddress, type UnixSocket } from '../socket';
import { bindReplacingStale, checkSocketDirectory, ensurePrivateDir } from '../socket-file';
import { refuseFds } from './refuse-fds';
import { checkFailpoint, serveConnection, type ServedConnection, type ServeStats } from './serve';

/**
 * Where a helper listens by default: `$XDG_RUNTIME_DIR/fdbridge/helper.sock`;
 * without XDG_RUNTIME_DIR, `/run/user/<uid>/fdbridge/helper.sock` when that
 * runtime directory exists and is ours, `/run/fdbridge/helper.sock` for root.
 * Never a shared directory such as /tmp, where another user could create
 * the directory first: with none of these it throws (ERR_FDBRIDGE_NO_RUNTIME_DIR)
 * and the caller names a socket path.
 */
export function defaultHelperSocketPath(): string {
  const runtime = process.env['XDG_RUNTIME_DIR'];
  if (runtime) return join(runtime, 'fdbridge', 'helper.sock');
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/fdbridge/helper.sock';
  const userRuntime = `/run/user/${uid}`;
  try {
    const st = lstatSync(userRuntime);
    if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0) return join(userRuntime, 'fdbridge', 'helper.sock');
  } catch {
    // no such directory: fall through to the error
  }
  throw new FdBridgeError(
    'ERR_FDBRIDGE_NO_RUNTIME_DIR',
    `no private runtime directory for the helper socket: XDG_RUNTIME_DIR is not set and ${userRuntime} is not a 0700 directory of uid ${uid}; ` +
      'set XDG_RUNTIME_DIR or name a socket (--socket PATH / socketPath) in a directory only you can write',
  );
}

/** In words, for usage texts: never throws. */
export function describeDefaultHelperSocketPath(): string {
  try {
    return defaultHelperSocketPath();
  } catch {
    return '$XDG_RUNTIME_DIR/fdbridge/helper.sock (no default without XDG_RUNTIME_DIR)';
  }
}

/**
 * A helper's socket address: a path, or `@name` for a Linux abstract name
 * (no file, no permissions: only the SO_PEERCRED uid check guards it).
 */
export function helperAddress(socketPath: string): SocketAddress {
  return socketPath.startsWith('@') ? { abstract: socketPath.slice(1) } : socketPath;
}

export interface HelperOptions {
  /** Default: defaultHelperSocketPath(), in a private directory created as needed. */
  socketPath?: string;
  /**
   * The commands served besides the built-in ones (`log`), by the name a
   * client asks for: `{ bench: { module: '/abs/bench.js', export: 'BenchCommand' } }`.
   * Clients name commands; they never choose a module.
   */
  commands?: Readonly<Record<string, CommandSpec>>;
  /** Also serve the diagnostic commands (`probe`), for test daemons. Default false. */
  diagnostics?: boolean;
  /** uids besides our own that may connect. */
  allowUids?: readonly number[];
  /** Diagnostic lines (connections, refusals, errors). */
  log?: (line: string) => void;
}

export interface HelperStats {
  connections: number;
  refused: number;
  active: number;
  unexpectedFds: number;
  protocolErrors: number;
}

export class HelperDaemon {
  readonly socketPath: string;
  readonly stats: HelperStats = { connections: 0, refused: 0, active: 0, unexpectedFds: 0, protocolErrors: 0 };
  #server: UnixServer;
  #allowed: Set<number>;
  #log: (line: string) => void;
  #clients = new Map<UnixSocket, ServedConnection>();
  #commands: Map<string, ModuleCommandSpec>;
  #idle: Array<() => void> = [];

  /** Binds the socket (removing a stale one) and starts serving. */
  static start(options: HelperOptions = {}): HelperDaemon {
    checkFailpoint(); // a bad FDBRIDGE_FAILPOINT fails the start, not the first client
    const socketPath = options.socketPath ?? defaultHelperSocketPath();
    const address = helperAddress(socketPath);
    parseAddress(address); // a clear RangeError for names over 107 bytes
    if (typeof address !== 'string') {
      return new HelperDaemon(socketPath, UnixServer.listen(address, { kind: 'seqpacket', ...FRAME_SOCKET_OPTIONS }), options);
    }
    if (options.socketPath === undefined) {
      checkSocketDirectory(dirname(dirname(socketPath)));
      ensurePrivateDir(dirname(socketPath));
    }
    checkSocketDirectory(dirname(socketPath));
    return new HelperDaemon(socketPath, listenReplacingStale(socketPath), options);
  }

  private constructor(socketPath: string, server: UnixServer, options: HelperOptions) {
    this.socketPath = socketPath;
    this.#server = server;
    this.#allowed = new Set([process.getuid?.() ?? 0, ...(options.allowUids ?? [])]);
    this.#log = options.log ?? (() => undefined);
    this.#commands = commandTable(options);
    server.onConnection((err, socket) => this.#onConnection(err, socket));
  }

  #onConnection(err: Error | null, socket: UnixSocket | undefined): void {
    if (err || !socket) {
      this.#log(`accept failed: ${err?.message}`);
      // accept4 stopped on this error (EMFILE...); start again shortly.
      setTimeout(() => {
        if (!this.#server.closed) this.#server.onConnection((e, s) => this.#onConnection(e, s));
      }, 100).unref();
      return;
    }
    let cred: { pid: number; uid: number; gid: number };
    try {
      cred = socket.peerCredentials();
    } catch (e) {
      this.#log(`SO_PEERCRED failed: ${(e as Error).message}`);
      socket.close();
      return;
    }
    if (!this.#allowed.has(cred.uid)) {
      this.stats.refused++;
      this.#log(`refused pid ${cred.pid}: uid ${cred.uid} is not allowed`);
      refuse(socket, `uid ${cred.uid} may not use this helper`);
      return;
    }
    this.stats.connections++;
    this.stats.active++;
    this.#log(`serving pid ${cred.pid} (uid ${cred.uid})`);
    const served = serveConnection(socket, {
      transport: 'helper',
      resolveCommand: (requested) => this.#resolve(requested),
      onEnd: (reason, s: ServeStats) => {
        this.#clients.delete(socket);
        this.stats.active--;
        this.stats.unexpectedFds += s.unexpectedFds;
        this.stats.protocolErrors += s.protocolErrors;
        if (reason) {
          // What it turned away, so that `fdbridge helper --verbose` shows it per client.
          const turnedAway = s.protocolErrors > 0 || s.unexpectedFds > 0 ? ` (${s.protocolErrors} protocol error(s), ${s.unexpectedFds} unexpected fd(s) closed)` : '';
          this.#log(`pid ${cred.pid}: connection ended: ${reason.message}${turnedAway}`);
        }
        if (this.#clients.size === 0) for (const f of this.#idle.splice(0)) f();
      },
    });
    this.#clients.set(socket, served);
  }

  /** The names of the commands this daemon serves. */
  get commandNames(): string[] {
    return [...this.#commands.keys()];
  }

  /** The code for a command a client named; never a module the client chose. */
  #resolve(requested: CommandSpec): CommandSpec {
    if (requested.module !== undefined) {
      throw new UnknownCommandError(`this helper runs commands by name only, never a module a client names (${requested.module})`);
    }
    const spec = requested.name !== undefined ? this.#commands.get(requested.name) : undefined;
    if (spec === undefined) {
      throw new UnknownCommandError(
        `this helper does not serve a command named ${JSON.stringify(requested.name)}; it serves: ${this.commandNames.join(', ')}`,
      );
    }
    return requested.args !== undefined ? { ...spec, args: requested.args } : spec;
  }

  /**
   * Stops listening, removes the socket file, ends every connection (each
   * command's close() runs and its unadopted fds are closed), and resolves
   * once they all have.
   */
  async close(): Promise<void> {
    this.#server.close();
    if (this.#clients.size === 0) return;
    const idle = new Promise<void>((resolve) => this.#idle.push(resolve));
    for (const served of [...this.#clients.values()]) served.end();
    await idle;
  }
}

/** Built-in commands, the diagnostic ones if asked for, then the ones given (each checked now, not at the first client). */
function commandTable(options: HelperOptions): Map<string, ModuleCommandSpec> {
  const table = new Map<string, ModuleCommandSpec>(Object.entries(BUILTIN_COMMANDS));
  if (options.diagnostics) for (const [name, spec] of Object.entries(DIAGNOSTIC_COMMANDS)) table.set(name, spec);
  for (const [name, spec] of Object.entries(options.commands ?? {})) {
    if (!COMMAND_NAME.test(name)) throw new TypeError(`command name ${JSON.stringify(name)} must match ${COMMAND_NAME}`);
    if (spec.module === undefined) throw new TypeError(`command ${name}: a module is needed`);
    if (spec.module.startsWith('.')) throw new TypeError(`command ${name}: the module must be an absolute path or a package name, not ${spec.module}`);
    const entry: ModuleCommandSpec = { name, module: spec.module, export: spec.export ?? 'default' };
    loadCommandClass(entry); // a typo fails the start, not the first client
    table.set(name, entry);
  }
  return table;
}

/**
 * Tells a peer it is refused, then lets it read that: closing at once while
 * its HELLO sits unread would give it ECONNRESET instead of the answer. What
 * it sent is read only to be discarded (any fds closed on arrival), and the
 * socket is closed when the peer closes or after a second.
 */
function refuse(socket: UnixSocket, message: string): void {
  try {
    // A refused peer has no business sending fds: make its sendmsg fail
    // (EPERM) where the kernel can; elsewhere the handler below closes them.
    refuseFds(socket);
    socket.write(encodeJson(FrameType.REFUSED, 0, { message }));
    socket.shutdown('write');
  } catch {
    socket.close();
    return;
  }
  const timer = setTimeout(() => socket.close(), 1000);
  timer.unref();
  socket.setMessageHandler((err, _data, fds) => {
    for (const fd of fds ?? []) native.close(fd);
    if (err && err.name !== 'TruncatedError') {
      clearTimeout(timer);
      socket.close();
    }
  });
}

/** listen(), replacing a stale socket file at `path` but never a live one or a non-socket. */
function listenReplacingStale(path: string): UnixServer {
  return bindReplacingStale(
    path,
    native.constants.SOCK_SEQPACKET,
    () => UnixServer.listen(path, { kind: 'seqpacket', mode: 0o600, ...FRAME_SOCKET_OPTIONS }),
    () => new FdBridgeError('ERR_FDBRIDGE_HELPER_RUNNING', `another helper is already listening at ${path}`),
  );
}
