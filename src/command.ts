/**
 * Commands: objects that do work somewhere (the caller's thread, a worker, a
 * child process, a helper daemon). A command is a class exported by a module,
 * so every transport can load it by name:
 *
 *     export class LogCommand {
 *       constructor(readonly context: CommandContext) {}
 *       redirectLogToFd(fd: number) { this.context.adoptFd(fd); ... }
 *     }
 *
 * fds that a connection duplicates into the command's context are owned by
 * the connection until the command adopts them with `context.adoptFd(fd)`.
 * When the connection closes, the command's optional `close()` runs, then
 * every fd it did not adopt is closed. Adopted fds are the command's to close.
 */
import { constants as osConstants } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';

import { asCommand, ClientFds } from './client-fds';
import { BUILTIN_COMMANDS, builtinCommand } from './commands/registry';
import { ProtocolError, SystemError } from './errors';
import { AdoptedFiles, fileAt, HeldCopies, holdsFile, validateCloseList } from './fd';
import { native, type FileKey } from './native';
import type { TransportName } from './transports';
import { requireModule } from './ts-modules';
import { validateFdArgument } from './validate';

/**
 * Names a command. In-process, worker and child transports load `module`
 * (absolute path, or a package name) and its `export`: the caller's own
 * process chooses that code. A helper daemon serves only the commands it was
 * started with, so a helper client sends `name` alone (never a path): the
 * daemon's built-in `log`, `probe` when started with diagnostics, or one it
 * was given with `--command NAME=MODULE[#EXPORT]`. A spec with a name and
 * no module is a built-in one (see BUILTIN_COMMANDS) on every transport.
 */
export interface CommandSpec {
  /** The name a helper daemon knows this command by. */
  name?: string;
  module?: string;
  /** Default: 'default'. */
  export?: string;
  /** JSON-serializable arguments given to the constructor after the context. */
  args?: unknown[];
}

/** A command a helper daemon serves: loaded from `module`, `export`. */
export interface ModuleCommandSpec extends CommandSpec {
  module: string;
}

/** What a name may look like: no path separators, nothing a shell or a log line would mangle. */
export const COMMAND_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** What a command knows about where it runs, and how it takes fds. */
export interface CommandContext {
  readonly transport: TransportName;
  readonly pid: number;
  readonly threadId: number;
  /**
   * Who the client is (its SO_PEERCRED when it connected), where the command
   * serves another process over a socket (child, pidfd, helper); absent
   * where the client is this process (direct, worker). A command that acts
   * with its process's privileges on what a client names (a path) checks
   * that the client has them.
   */
  readonly peer?: PeerCredentials;
  /**
   * Takes ownership of `fd`, which the connection duplicated into this
   * context: the connection will no longer close it. Throws a SystemError
   * EBADF if the fd was not given to this command, was adopted already, or
   * its copy is no longer at that number (the command closed it itself:
   * the number is free, another fd of fdbridge's, or another file), which
   * the connection then forgets, nothing closed. Returns `fd`.
   */
  adoptFd(fd: number): number;
  /**
   * Closes fds that came from the client (adopted with adoptFd, or received
   * by the command itself), as the connection closes the fds it was given:
   * in a helper daemon on the background closer, as the client's uid's,
   * since such a close can block as long as the client chose (a TCP socket
   * with SO_LINGER and unsent data waits out its linger time once its last
   * reference goes) and on the event loop it would stall every other
   * client; elsewhere on the background closer too (on direct this thread
   * is the caller's event loop). Resolves once they are closed (or their
   * closes given up on after 5 s, closesSettled): a command
   * that answers only then (probe's closeAdopted) tells its client that the
   * room they took is free; one that need not wait (a close() as the
   * connection ends) ignores it. Closes only what the command holds as its
   * client's (client-fds.ts): an fd it adopted, or one that arrived on a
   * DatagramSocket the command made as it ran (in its constructor or a
   * method, before the first await), until closed through here, while
   * its number holds the file it came with and no other command has held
   * the number since (client-fds.ts). Throws at once, nothing closed,
   * a SystemError EBADF naming any other number (one the client chose,
   * another connection's or uid's fd, the process's own, a copy given and
   * not adopted, one closed through here before or by the command itself),
   * and a TypeError for a list that is not one of fd numbers or names one
   * twice (after the first close another fd can take the number, and the
   * second would close it).
   */
  closeClientFds(fds: readonly number[]): Promise<void>;
  /**
   * Counts `bytes` of a log line (or other client data written into the
   * client's fds) that the command keeps in this process until it is
   * written, and returns the function that gives them back once it is
   * (or has failed): call it once. In a helper daemon the lines of all the
   * clients of one uid count together against `maxLogBytesPerUid`: past
   * it this throws QuotaExceededError (`'uidLogBytes'`) and counts
   * nothing. Elsewhere (one client) nothing limits it.
   */
  holdLogBytes(bytes: number): () => void;
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export type CommandClass = new (context: CommandContext, ...args: unknown[]) => object;

/** Methods of T, as called through a connection: every result is a promise. */
export type Remote<T> = {
  [K in keyof T as T[K] extends (...args: never[]) => unknown ? K : never]: T[K] extends (
    ...args: infer A
  ) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
};

function checkSpecShape(spec: CommandSpec): void {
  if (typeof spec !== 'object' || spec === null) {
    throw new TypeError('options.command must be { name?: string, module?: string, export?: string, args?: unknown[] }');
  }
  if (spec.name !== undefined && (typeof spec.name !== 'string' || !COMMAND_NAME.test(spec.name))) {
    throw new TypeError(`options.command.name must match ${COMMAND_NAME} (a name, not a path), not ${JSON.stringify(spec.name)}`);
  }
  if (spec.module !== undefined && (typeof spec.module !== 'string' || spec.module === '')) {
    throw new TypeError('options.command.module must be a non-empty string');
  }
  if (spec.export !== undefined && typeof spec.export !== 'string') {
    throw new TypeError('options.command.export must be a string');
  }
  if (spec.args !== undefined && !Array.isArray(spec.args)) {
    throw new TypeError('options.command.args must be an array');
  }
}

/**
 * The module spec that a transport running code in the caller's own
 * process (or a child or worker it starts) loads. A relative module path is
 * resolved against the client's cwd before it travels; a spec with only a
 * name is a built-in command.
 */
export function normalizeCommandSpec(spec: CommandSpec): ModuleCommandSpec {
  checkSpecShape(spec);
  let base: CommandSpec = spec;
  if (spec.module === undefined) {
    const builtin = spec.name !== undefined ? builtinCommand(spec.name) : undefined;
    if (builtin === undefined) {
      throw new TypeError(
        spec.name !== undefined
          ? // Stryker disable next-line StringLiteral: one built-in command (log): the list's separator is never written
            `options.command: "${spec.name}" is not a built-in command (${Object.keys(BUILTIN_COMMANDS).join(', ')}); give its module`
          : 'options.command needs a module (or the name of a built-in command)',
      );
    }
    // Stryker disable next-line ConditionalExpression: an own key holding undefined is read as absent: every reader of a spec (CommandHost, loadCommandClass, the remote transport) uses `??` or `!== undefined`, and the HELLO's JSON drops it
    base = { ...builtin, ...(spec.args !== undefined ? { args: spec.args } : {}) };
  }
  const module = (base.module as string).startsWith('.') ? resolve(base.module as string) : (base.module as string);
  const out: ModuleCommandSpec = { module, export: base.export ?? 'default' };
  // Stryker disable next-line ConditionalExpression: an own key holding undefined is read as absent: every reader of a spec (CommandHost, loadCommandClass, the remote transport) uses `??` or `!== undefined`, and the HELLO's JSON drops it
  if (base.name !== undefined) out.name = base.name;
  // Stryker disable next-line ConditionalExpression: an own key holding undefined is read as absent: every reader of a spec (CommandHost, loadCommandClass, the remote transport) uses `??` or `!== undefined`, and the HELLO's JSON drops it
  if (base.args !== undefined) out.args = base.args;
  return out;
}

/**
 * What a helper client sends: the command's name and its arguments, never
 * a module (the daemon decides what code a name means).
 */
export function commandRequest(spec: CommandSpec): CommandSpec {
  checkSpecShape(spec);
  if (spec.name === undefined) {
    throw new TypeError(
      'options.command: a helper daemon runs only the commands it was started with, named: give the command\'s name ' +
        '(e.g. LOG_COMMAND, or { name } of one the daemon was started with via --command NAME=MODULE)',
    );
  }
  // Stryker disable next-line ConditionalExpression: an own key holding undefined is read as absent: every reader of a spec (CommandHost, loadCommandClass, the remote transport) uses `??` or `!== undefined`, and the HELLO's JSON drops it
  return spec.args !== undefined ? { name: spec.name, args: spec.args } : { name: spec.name };
}

/** Loads the command class named by `spec`. */
export function loadCommandClass(spec: CommandSpec): CommandClass {
  if (spec.module === undefined) throw new TypeError(`command ${spec.name ?? '(unnamed)'} has no module to load`);
  const name = spec.export ?? 'default';
  let mod: Record<string, unknown>;
  try {
    // A .ts module is compiled as it loads (src/ts-modules.ts), here and in every transport's far side.
    // Stryker disable next-line ConditionalExpression: require.resolve of an absolute path from the cwd finds what require finds for that path (the file, or with an extension or index added, or MODULE_NOT_FOUND, caught below the same way)
    mod = requireModule(isAbsolute(spec.module) ? spec.module : require.resolve(spec.module, { paths: [process.cwd()] })) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot load command module ${spec.module}: ${(err as Error).message}`, { cause: err });
  }
  const cls = mod[name];
  if (typeof cls !== 'function') {
    throw new TypeError(`command module ${spec.module} has no class export named "${name}"`);
  }
  return cls as CommandClass;
}

/** The fds a connection has put into a command's context and not yet seen adopted. */
export interface FdLedger {
  add(fd: number): void;
  /**
   * True when the fd was given and not yet adopted: it is the command's
   * then, forgotten here and no longer one of fdbridge's own fds (a caller
   * may name it: native.disown; a ledger of copies it gave checks that the
   * number still holds its copy, its registration and file, native.disownGiven).
   */
  adopt(fd: number): boolean;
  /**
   * What the default closeClientFds (on the background closer, in this
   * process) checks `fds` against beyond fdbridge's own fds: for each, the
   * file it was adopted with (its number holding another file now, or none,
   * is refused), undefined where none is known. Throws a SystemError EBADF
   * for a number the ledger holds as given and not adopted that fdbridge's
   * own fds do not list (nothing closed).
   */
  clientFiles?(fds: readonly number[]): Array<FileKey | undefined>;
  /**
   * The command is closing `fds` (closeClientFds): a ledger that keeps the
   * fds it adopted counted against the client's limits (a helper daemon's
   * connection) stops counting them, and one that keeps their files forgets
   * them.
   */
  closing?(fds: readonly number[]): void;
  /**
   * Closes every fd still owned, on the background closer (each is a copy of
   * a caller's file, which the caller may have closed: its close can block,
   * a lingering TCP socket's); returns how many.
   */
  sweep(): number;
  /** Resolves once every fd swept so far is closed (closesSettled: or given up on). */
  swept(): Promise<void>;
  readonly size: number;
}


/**
 * A RELEASE as a server answers it: `close`, the fds now the caller's to
 * close; `refusal`, when the request named numbers not held for the client,
 * the ERROR to answer with (the held ones are released all the same); none:
 * a RESULT.
 */
export interface Released {
  close: number[];
  refusal: ProtocolError | undefined;
}

/**
 * A RELEASE of `named` from a served connection's ledger (a socket server's
 * ChannelLedger, serve --stdio's SetLedger), by the rule of every server:
 * `take(fd)` takes each out of the ledger if it holds it for the client
 * ('close': the caller's to close now; 'forget': held, but its number no
 * longer holds it, nothing to close; undefined: not held). Those not held
 * (never given on this connection, adopted by the command, released already
 * or named twice, another client's, none) are left alone and make the
 * answer an ERROR (ProtocolError) naming them.
 */
export function releaseFrom(named: readonly number[], take: (fd: number) => 'close' | 'forget' | undefined): Released {
  const close: number[] = [];
  const notHeld: number[] = [];
  for (const fd of named) {
    const taken = take(fd);
    if (taken === undefined) notHeld.push(fd);
    else if (taken === 'close') close.push(fd);
  }
  if (notHeld.length === 0) return { close, refusal: undefined };
  const refusal = new ProtocolError(
    `release: ${notHeld.length} of the ${named.length} fds named are not held for this client (${notHeld.join(', ')}): ` +
      `never given on this connection, adopted by the command, or released already; left alone, the ${named.length - notHeld.length} held released`,
  );
  return { close, refusal };
}

/**
 * The fds a command was given from elsewhere (the remote transport's
 * relayed streams, made in this process and registered nowhere), each with
 * its file (device and inode, read as it is added), so that what the
 * ledger adopts, releases or sweeps is that fd alone: one the command
 * closed itself (fs.closeSync) is neither adopted nor closed, whatever file
 * took its number since (the program's, another stream's end), and
 * closeClientFds refuses a number still given, or an adopted one whose
 * number holds another file now or none. A file reopened at the number is
 * not told apart. (The copies a connection makes for a command in this
 * process have ledgers of their own: transports/given-copies.ts,
 * transports/shared-ledger.ts.)
 */
export class SetLedger implements FdLedger {
  /** Given and not adopted, each with its file (undefined: not known). */
  readonly #fds = new Map<number, FileKey | undefined>();
  readonly #adopted = new AdoptedFiles();
  readonly #held = new HeldCopies();

  add(fd: number): void {
    this.#fds.set(fd, fileAt(fd));
  }

  /** Whether `fd`'s number holds `file` still (any file, where it is not known). */
  #holds(fd: number, file: FileKey | undefined): boolean {
    return file === undefined ? fileAt(fd) !== undefined : holdsFile(fd, file);
  }

  adopt(fd: number): boolean {
    const file = this.#fds.get(fd);
    if (!this.#fds.delete(fd)) return false;
    // One the command closed itself is not its to adopt, whatever its
    // number holds now: forgotten here, nothing closed.
    if (!this.#holds(fd, file)) return false;
    // The command's now: a caller may name it.
    native.disown(fd);
    this.#adopted.adopted(fd, file ?? true);
    return true;
  }

  /**
   * A RELEASE (releaseFrom): forgets those of `fds` still given and not
   * adopted; the caller closes those whose number still holds the fd given
   * (one the command closed itself is left alone).
   */
  release(fds: readonly number[]): Released {
    return releaseFrom(fds, (fd) => {
      const file = this.#fds.get(fd);
      if (!this.#fds.delete(fd)) return undefined;
      if (this.#holds(fd, file)) return 'close';
      // Stryker disable next-line StringLiteral: releaseFrom tells only undefined and 'close' apart; any other value ('' too) is a held fd left alone
      return 'forget';
    });
  }

  clientFiles(fds: readonly number[]): Array<FileKey | undefined> {
    return this.#adopted.expected(fds, (fd) => this.#fds.has(fd));
  }

  closing(fds: readonly number[]): void {
    this.#adopted.forget(fds);
  }

  sweep(): number {
    const taken = [...this.#fds];
    this.#fds.clear();
    // One the command closed itself is left alone, whatever took its number since.
    this.#held.close(taken.filter(([fd, file]) => this.#holds(fd, file)).map(([fd]) => fd));
    return taken.length;
  }

  swept(): Promise<void> {
    return this.#held.settled();
  }

  get size(): number {
    return this.#fds.size;
  }
}

/**
 * The command's side of a connection: the instance, its context and the fds
 * given to it. Every transport hosts commands through this class.
 */
export class CommandHost {
  readonly command: Record<string, unknown>;
  readonly context: CommandContext;
  readonly ledger: FdLedger;
  #closed = false;

  /** The client's fds the command closed with the default closeClientFds. */
  readonly #clientCloses = new HeldCopies();
  /** What the command holds as its client's: all that closeClientFds closes. */
  readonly #clientFds = new ClientFds();

  /**
   * `closeClientFds`: how the context closes the client's fds
   * (CommandContext.closeClientFds); by default on the background closer,
   * resolving once they are closed or their closes given up on
   * (HeldCopies.settled), and close() waits for them the same way: such an
   * fd (an adopted log fd) can be the last reference to a lingering TCP
   * socket, whose close must not stop this thread, the caller's event loop
   * on direct, for the linger time.
   */
  constructor(
    spec: CommandSpec,
    transport: TransportName,
    ledger: FdLedger = new SetLedger(),
    peer?: PeerCredentials,
    closeClientFds?: (fds: readonly number[], installs: readonly number[]) => Promise<void>,
    holdLogBytes: (bytes: number) => () => void = () => () => undefined,
  ) {
    const clientCloses = this.#clientCloses;
    const clientFds = this.#clientFds;
    const close =
      closeClientFds ??
      ((fds: readonly number[], installs: readonly number[]): Promise<void> => {
        // An adopted fd is closed only while its number holds the file it was given with.
        clientCloses.closeClientFds(fds, ledger.clientFiles?.(fds), installs);
        return clientCloses.settled();
      });
    this.ledger = ledger;
    this.context = Object.freeze({
      transport,
      pid: process.pid,
      threadId,
      ...(peer ? { peer: Object.freeze({ pid: peer.pid, uid: peer.uid, gid: peer.gid }) } : {}),
      adoptFd(fd: number): number {
        validateFdArgument(fd, 'adoptFd: fd');
        // The ledger hands it over: the command's now, a caller may name it.
        // One whose copy is no longer at its number (the command closed it
        // itself) is not: whatever is there now is not the client's.
        if (!ledger.adopt(fd)) {
          throw new SystemError(
            osConstants.errno.EBADF,
            'adoptFd',
            `adoptFd(${fd}): this fd was not duplicated into this command, or was adopted already, or its copy was closed ` +
              'by someone other than fdbridge (the number holds no copy given to this command now)',
          );
        }
        clientFds.holdAdopted([fd]);
        return fd;
      },
      closeClientFds(fds: readonly number[]): Promise<void> {
        checkClientFdList(fds);
        // Only what the command holds as its client's, still at its number:
        // any other number (one the client chose, another's fd, the
        // process's own, one closed through here already) is refused, here
        // or by the close (another install at the number since it was held).
        const installs = clientFds.check(fds);
        // Adopted fds a ledger kept counted (a helper daemon's) stop counting
        // once they have gone to the closer, where they count as being
        // closed: a close that throws (a list it refuses: one of fdbridge's
        // own fds named, SystemError EBADF) leaves them open and still
        // counted.
        const closed = close(fds, installs);
        clientFds.take(fds);
        ledger.closing?.(fds);
        return closed;
      },
      holdLogBytes,
    });
    const Cls = loadCommandClass(spec);
    // A socket the command makes as it runs records what it receives as the client's (client-fds.ts).
    this.command = asCommand(clientFds.receipts, () => new Cls(this.context, ...(spec.args ?? [])) as Record<string, unknown>);
  }

  /** Runs `method` on the command. Rejects for unknown methods. */
  async call(method: string, args: readonly unknown[]): Promise<unknown> {
    return this.invoke(method, args);
  }

  /**
   * Runs `method` on the command and returns what it returned, a promise
   * or thenable as it is; throws for unknown methods and what the method
   * throws. For a server that answers a call that returned a value in the
   * same turn it was read.
   */
  invoke(method: string, args: readonly unknown[]): unknown {
    const fn = callableMethod(this.command, method);
    return asCommand(this.#clientFds.receipts, () => fn.apply(this.command, args as unknown[]));
  }

  /**
   * Runs the command's close() (if any), then closes every fd it did not
   * adopt (on the background closer: resolves once they are closed, or
   * their closes given up on, FdLedger.swept). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      const close = this.command['close'];
      if (typeof close === 'function') await close.call(this.command);
    } finally {
      this.ledger.sweep();
      await Promise.all([this.ledger.swept(), this.#clientCloses.settled()]);
    }
  }
}

/** A closeClientFds list: an array of fd numbers, each named once (validateCloseList). */
function checkClientFdList(fds: readonly number[]): void {
  if (!Array.isArray(fds)) throw new TypeError(`closeClientFds(fds): fds must be an array of fd numbers, not ${fds === null ? 'null' : typeof fds}`);
  validateCloseList(fds, 'closeClientFds');
}

function callableMethod(target: Record<string, unknown>, method: string): (...args: unknown[]) => unknown {
  // close() belongs to the connection's lifecycle: it runs once, when the
  // connection closes. `in Object.prototype` refuses constructor, toString,
  // __proto__ and the like.
  if (typeof method !== 'string' || method === 'close' || method in Object.prototype) {
    throw new TypeError(`${String(method)} is not a command method that can be called`);
  }
  const fn = target[method];
  if (typeof fn !== 'function') throw new TypeError(`the command has no method named "${method}"`);
  return fn as (...args: unknown[]) => unknown;
}

