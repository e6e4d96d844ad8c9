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
import { constants as fsConstants, lstatSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { COMMAND_NAME, loadCommandClass, type CommandSpec, type ModuleCommandSpec } from '../command';
import { escapeLogText } from '../commands/log-command';
import { BUILTIN_COMMANDS, DIAGNOSTIC_COMMANDS } from '../commands/registry';
import { cutToJsonBytes, describeError, FdBridgeError, QuotaExceededError, shown, stackOf, TimeoutError, UnknownCommandError, type QuotaName } from '../errors';
import { closeOwnFds, closesSettled, peerCloseOwner } from '../fd';
import { HELPER_DAEMONS, STATUS_COMMAND } from '../commands/status-command';
import { encodeRefused, FRAME_SOCKET_OPTIONS, MAX_FDS_PER_FRAME } from '../protocol';
import { native, type NativeExitWatch, type NativeFdBudget } from '../native';
import { parseAddress, UnixServer, wrapOwnSocket, type SocketAddress, type UnixSocket } from '../socket';
import { bindReplacingStale, checkSocketDirectory, ensurePrivateDir } from '../socket-file';
import { invalidType, validateIntegerList, validateTimeoutMs } from '../validate';
import { mayHoldFds, refuseFds, refuseFdsOn } from './refuse-fds';
import { checkFailpoint, ReclaimPacing, serveConnection, type ServedActivity, type ServedConnection, type ServeStats } from './serve';

const { S_IFMT, S_IFSOCK } = fsConstants;

/**
 * The daemon's connections: frames land in reused memory, and the requests
 * of every connection read in one turn of the event loop reach JavaScript
 * in one callback (UnixSocketOptions.batchMessages), replies going out
 * together, instead of a callback and a round of microtasks per request.
 */
const SERVED_SOCKET_OPTIONS = { ...FRAME_SOCKET_OPTIONS, batchMessages: true } as const;

/**
 * The most a --verbose line about a failed request quotes, as JSON bytes
 * (cutToJsonBytes): of what failed (`call <method>()`), and of the thrown
 * value's stack. A client chooses a method's name and, through the
 * command, an error's message: a line is at most about 17 KiB as JSON
 * counts, four times that once escapeLogText has written it (a DEL, one
 * byte of JSON, is written \x7f).
 */
const LOG_WHAT_BYTES = 1024;
const LOG_STACK_BYTES = 16 * 1024;

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
  /** uids besides our own that may connect: each an integer from 0 to 2^31 - 1 (MAX_UID), else start() throws a TypeError or RangeError naming it. */
  allowUids?: readonly number[];
  /** Limits on clients (see DEFAULT_HELPER_LIMITS for the defaults). */
  limits?: Partial<HelperLimits>;
  /**
   * A socket already listening (systemd socket activation: the unit owns
   * the socket's path and permissions, so no path checks are made and
   * close() leaves the file alone). `socketPath` then only names it.
   */
  listenFd?: number;
  /**
   * Diagnostic lines (connections, refusals, errors). What it throws during
   * start() fails the start (nothing left behind); once the daemon serves,
   * what it throws never reaches the daemon, which goes on serving: that line is dropped, and
   * the first throw is reported with process.emitWarning (name
   * FdBridgeWarning, code ERR_FDBRIDGE_LOG_THREW, `detail` the thrown
   * error's stack); later throws of the same daemon's callback are not
   * reported.
   */
  log?: (line: string) => void;
}

/** What a helper daemon allows each client, each uid, and all of them. */
export interface HelperLimits {
  /** Clients served at once; one more is refused (REFUSED, counted in quotaHits.connections). */
  maxConnections: number;
  /** Clients of one uid served at once; one more of that uid is refused (quotaHits.uidConnections). */
  maxConnectionsPerUid: number;
  /**
   * fds one client may leave with its command: given, adopted or not, until
   * the command closes them (closeClientFds) or the connection ends. Before
   * this or the two fd limits below refuse a DUP, the adopted fds they count
   * that the commands closed another way are refunded, one statx each; these
   * scans are paced per limit's scope (the client, the uid, the daemon), to
   * about a tenth of the event loop: a refusal right after a long scan
   * (1 ms or more) that found nothing may stand for up to 10× that scan's time.
   */
  maxFdsPerClient: number;
  /** fds the clients of one uid may leave, all together (quotaHits.uidFds); adopted ones closed another way: see maxFdsPerClient. */
  maxFdsPerUid: number;
  /**
   * fds every client may leave, all together, the fds clients gave that
   * still wait to be closed included (quotaHits.totalFds). Never more than
   * RLIMIT_NOFILE leaves beside the daemon's own fds (see fdRoom). Adopted
   * ones closed another way: see maxFdsPerClient.
   */
  maxFdsTotal: number;
  /** Requests one client may have served at once. */
  maxCallsInFlight: number;
  /** Reply bytes waiting for one client to read them; a reply past it disconnects the client. */
  maxQueuedBytes: number;
  /**
   * Bytes of log lines (the log command's) that the clients of one uid
   * have waiting to be written, together: a line past it is refused
   * (QuotaExceededError 'uidLogBytes'), nothing of it written.
   */
  maxLogBytesPerUid: number;
  /** A client whose replies wait unread, none of them leaving, this long is disconnected. */
  stalledReaderTimeoutMs: number;
  /** A client that has not sent its HELLO this long after connecting is disconnected. */
  helloTimeoutMs: number;
  /** A client with nothing in flight that sends nothing this long is disconnected (0: never). */
  idleTimeoutMs: number;
}

/**
 * The defaults. One uid may hold a quarter of the connections and of the
 * fds, so that one user alone cannot lock the others out. The fd total is
 * clipped to what RLIMIT_NOFILE leaves (fdRoom); when it is, a per-uid
 * limit that was not given is a quarter of the clipped total.
 */
export const DEFAULT_HELPER_LIMITS: Readonly<HelperLimits> = Object.freeze({
  maxConnections: 256,
  maxConnectionsPerUid: 64,
  maxFdsPerClient: 4096,
  maxFdsPerUid: 16384,
  maxFdsTotal: 65536,
  maxCallsInFlight: 64,
  maxQueuedBytes: 8 * 1024 * 1024,
  maxLogBytesPerUid: 4 * 1024 * 1024,
  stalledReaderTimeoutMs: 30_000,
  helloTimeoutMs: 10_000,
  idleTimeoutMs: 10 * 60_000,
});

export interface HelperStats {
  /** Connections served since the start (refused ones not counted). */
  connections: number;
  /** Connections refused: a uid not allowed, or maxConnections reached. */
  refused: number;
  /** Clients being served now. */
  active: number;
  unexpectedFds: number;
  protocolErrors: number;
  /** Connections ended because the client's process exited while the socket stayed open (it held its own endpoint). */
  clientsExited: number;
  /**
   * Times a uid's connections stopped being read: fds its clients gave that
   * no quota counted (a refused DUP's) waited to be closed and put it past
   * maxFdsPerUid, or the daemon past maxFdsTotal (see HelperDaemon).
   */
  readingHeld: number;
  /**
   * Times the daemon counted each uid's fds waiting to be closed against its
   * limits (held back or let go): at each batch of fds no ledger counted and
   * again when its closes have all ended (once a batch), at each connection
   * of a uid not held, and, while a uid is held, at each end of a close open
   * then (once a turn of the event loop however many end together). A few per
   * such event, none while nothing happens.
   */
  holdLooks: number;
  /** Requests and connections each limit turned away. */
  quotaHits: Record<QuotaName, number>;
}

/** One client as `fdbridge helper --status` shows it. */
export interface HelperClientStatus {
  pid: number;
  uid: number;
  command: boolean;
  /** fds it gave its command, adopted ones not yet closed included (what maxFdsPerClient counts). */
  fdsHeld: number;
  inFlight: number;
  queuedBytes: number;
  /** ms since it last sent a request or was answered a call (what the idle timeout measures). */
  idleMs: number;
}

export interface HelperStatus {
  pid: number;
  socketPath: string;
  commands: string[];
  limits: HelperLimits;
  stats: HelperStats;
  /** fds clients left with their commands, adopted ones not yet closed included, all together. */
  fdsHeld: number;
  /**
   * fds clients gave that wait for the background closer (they count
   * against maxFdsTotal; the sockets of ended connections, also closed
   * there, count with the connections: socketsClosing).
   */
  fdsClosing: number;
  /**
   * Sockets of ended connections held up in the background closer, behind
   * their uid's closes (native backgroundClosesOfOwnSockets): each still
   * counts against maxConnections, and against its uid's
   * maxConnectionsPerUid, until closed.
   */
  socketsClosing: number;
  /**
   * The clients now: every one for the daemon's own uid and root; for a
   * client of another uid, only that uid's (see `onlyUid`). The totals
   * above (stats, fdsHeld, fdsClosing) are always the daemon's.
   */
  clients: HelperClientStatus[];
  /**
   * Per uid with clients now: how many, the fds they hold together, the fds
   * they gave that wait to be closed (counted against maxFdsPerUid too), and
   * their ended connections' sockets that wait to be closed (counted against
   * maxConnectionsPerUid too), and the bytes of their log lines waiting to
   * be written (maxLogBytesPerUid). Limited as `clients` is.
   */
  uids: Array<{ uid: number; connections: number; fdsHeld: number; fdsClosing: number; socketsClosing: number; logBytes: number }>;
  /** Bytes of log lines waiting to be written, every uid's together (each uid's is at most maxLogBytesPerUid). */
  logBytes: number;
  /**
   * Set when `clients` and `uids` are limited to this uid's: the status was
   * asked for by a client of another uid than the daemon's, who may learn
   * who else uses the daemon and how only as totals.
   */
  onlyUid?: number;
}

/**
 * Whom a status shows every client to: the daemon's own uid and root (who
 * could read the daemon's memory anyway). `undefined` is the daemon's own
 * process asking (HelperDaemon.status() called in-process).
 */
function seesEveryClient(viewer: { uid: number } | undefined): boolean {
  return viewer === undefined || viewer.uid === ROOT_UID || viewer.uid === (process.getuid?.() ?? ROOT_UID);
}

const ROOT_UID = 0;

/** What one uid's clients hold together. */
interface UidAccount {
  connections: number;
  fds: NativeFdBudget;
  /** Its clients being served. */
  sessions: Set<ServedConnection>;
  /** None of its connections is read (see #holdBack). */
  held: boolean;
  /** The scans of its connections' adopted fds before maxFdsPerUid refuses a DUP. */
  reclaimPacing: ReclaimPacing;
}

interface Client {
  served: ServedConnection;
  pid: number;
  uid: number;
  acceptedAt: number;
  /** Fires when the client's process exits (see watchClient); undefined if it cannot be watched. */
  watch: NativeExitWatch | undefined;
  /** servedDuplications at the last sweep: C++-served DUPs count as activity. */
  lastServed: number;
  lastSeenAt: number;
  /** Replies sent from its queue at the last sweep (ServedActivity.sentFromQueue), and since when none has left. */
  lastSentFromQueue: number;
  stuckSince: number | undefined;
}

/** What a daemon registers in `daemons`: its status, and what names its listening socket (listenerIdentity; undefined when its file was not there). */
interface RegisteredDaemon {
  status(viewer?: { uid: number }): HelperStatus;
  readonly listener: string | undefined;
}

/**
 * Daemons started on this thread by id, for the status command and for
 * daemonOnThisThread. On globalThis (one per thread) under a registered
 * symbol: the command is loaded from the compiled module, and a client may
 * be another instance of this module than the daemon's (a daemon run from
 * TypeScript sources, in tests).
 */
const daemons = ((globalThis as Record<symbol, unknown>)[HELPER_DAEMONS] ??= new Map()) as Map<number, RegisteredDaemon>;

export class HelperDaemon {
  readonly socketPath: string;
  readonly limits: Readonly<HelperLimits>;
  readonly stats: HelperStats = {
    connections: 0,
    refused: 0,
    active: 0,
    unexpectedFds: 0,
    protocolErrors: 0,
    clientsExited: 0,
    readingHeld: 0,
    holdLooks: 0,
    quotaHits: { connections: 0, uidConnections: 0, fds: 0, uidFds: 0, totalFds: 0, calls: 0, queuedBytes: 0, uidLogBytes: 0, helloTimeout: 0, idleTimeout: 0 },
  };
  readonly #id = nextDaemonId();
  #server: UnixServer;
  #allowed: Set<number>;
  #log: (line: string) => void;
  #clients = new Map<UnixSocket, Client>();
  #uids = new Map<number, UidAccount>();
  #allFds: NativeFdBudget;
  /** The scans of every connection's adopted fds before maxFdsTotal refuses a DUP. */
  readonly #totalReclaimPacing = new ReclaimPacing();
  #listener: { pid: number; uid: number };
  #commands: Map<string, ModuleCommandSpec>;
  #idle: Array<() => void> = [];
  /**
   * uids with fds that no ledger counted (a refused DUP's, discarded ones)
   * waiting for the closer: how many batches of them each has not seen
   * closed (see #holdBack). Kept past the uid's last connection: its fds
   * may wait longer.
   */
  #unowned = new Map<number, number>();
  /** The background closes whose end looks at the holds again (#watchCloses). */
  readonly #watchedCloses = new Set<number>();
  /** A look at the holds is queued for the next loop turn (#lookAtHoldsSoon). */
  #holdsLookQueued = false;
  /** Refused peers' sockets held open for them to read their REFUSED (see refuse). */
  #refusals = { held: 0 };
  #sweeper: NodeJS.Timeout;
  /** The look at the clients the sweeper's last tick queued for after the loop's poll phase, until it runs. */
  #sweepSoon: NodeJS.Immediate | undefined;
  /** Set while accepting is stopped by an accept4 error, until it starts again. */
  #acceptRetry: NodeJS.Timeout | undefined;
  /** The closer's reserve threads kept for this daemon's owners (closerOwners), until close(). */
  #reservedOwners = 0;
  /**
   * Bytes of log lines each uid's clients have waiting to be written
   * (#holdLogBytes). Kept past the uid's last connection: a line inside a
   * write that its connection's end could not cancel still holds them.
   */
  #logBytes = new Map<number, number>();

  /**
   * Binds the socket (removing a stale one) and starts serving. Bad options
   * (an `allowUids` entry that is not a uid, a limit out of range) throw a
   * TypeError or RangeError before anything is made; a start that fails
   * later gives back what it took (the socket and its file, the closer's
   * reserve) before it throws.
   */
  static start(options: HelperOptions = {}): HelperDaemon {
    checkFailpoint(); // a bad FDBRIDGE_FAILPOINT fails the start, not the first client
    const socketPath = options.socketPath ?? defaultHelperSocketPath();
    const allowed = allowedUids(options);
    const log = options.log;
    if (log !== undefined && typeof log !== 'function') throw invalidType('log', 'a function', log);
    const limits = checkLimits(options.limits, log, allowed.size > 1, closerOwners(allowed));
    let server: UnixServer;
    /** Connections queued on a socket taken over, and who made it (see takeOverListener). */
    let takenOver: { queued: number[]; maker: { pid: number; uid: number } } | undefined;
    if (options.listenFd !== undefined) {
      server = UnixServer.fromListeningFd(options.listenFd, socketPath, { kind: 'seqpacket', own: true, ...SERVED_SOCKET_OPTIONS });
      try {
        takenOver = takeOverListener(server.fd);
      } catch (err) {
        server.close();
        throw err;
      }
    } else {
      const address = helperAddress(socketPath);
      parseAddress(address); // a clear RangeError for names over 107 bytes
      if (typeof address !== 'string') {
        server = UnixServer.listen(address, { kind: 'seqpacket', own: true, ...SERVED_SOCKET_OPTIONS });
      } else {
        if (options.socketPath === undefined) {
          checkSocketDirectory(dirname(dirname(socketPath)));
          ensurePrivateDir(dirname(socketPath));
        }
        checkSocketDirectory(dirname(socketPath));
        server = listenReplacingStale(socketPath);
      }
    }
    let daemon: HelperDaemon;
    try {
      daemon = new HelperDaemon(socketPath, server, options, { allowed, limits, log });
    } catch (err) {
      // Served by nobody: what the clients of a socket taken over queued on
      // it (fds among it, whose last close can block) goes to the
      // background closer; the server is closed (and its socket file
      // removed, one this start made).
      for (const fd of takenOver?.queued ?? []) native.closeConnection(fd, OTHERS_CLOSE_OWNER);
      server.close();
      throw err;
    }
    if (takenOver !== undefined) daemon.#takeQueued(takenOver.queued, takenOver.maker);
    return daemon;
  }

  private constructor(
    socketPath: string,
    server: UnixServer,
    options: HelperOptions,
    checked: { allowed: Set<number>; limits: HelperLimits; log: ((line: string) => void) | undefined },
  ) {
    const { allowed, limits, log } = checked;
    this.socketPath = socketPath;
    this.limits = Object.freeze(limits);
    this.#server = server;
    this.#allowed = allowed;
    // Every uid served closes as an owner of its own, the others as one:
    // with a reserve thread for each, a uid with no close running always
    // gets a thread, however many others block theirs (fd_ops.h).
    // First: a command table it refuses fails the start with nothing to give back (the closer's reserve).
    this.#commands = commandTable(options, this.#id);
    this.#reservedOwners = closerOwners(this.#allowed);
    const reserve = native.reserveCloserThreads(this.#reservedOwners);
    try {
      if (reserve < native.closerThreads().reservedOwners) {
        log?.(
          `${this.#allowed.size} uids served: the background closer's reserve of ${reserve} threads is less than one for each uid (and the others); ` +
            `once that many of them each have a close blocked, the others' closes wait`,
        );
      }
      // A line may quote what a client sent (a command name, a module, a
      // method): escaped as a client's log lines are, so each stays one line.
      const serving = guardedLog(log);
      this.#log = serving ? (line) => serving(escapeLogText(line)) : () => undefined;
      this.#allFds = new native.FdBudget(limits.maxFdsTotal);
      daemons.set(this.#id, { status: (viewer) => this.status(viewer), listener: listenerIdentity(socketPath) });
      // What the clients' ends of our connections report as their peer (the
      // process that listens: us, or systemd for an activated socket).
      this.#listener = native.peerCred(server.fd);
      // Peers may send fds only once READY: the sockets accepted from now on
      // refuse them (SO_PASSRIGHTS off, copied from the listener at each
      // connect), so a peer refused, or one that connected and is never
      // served, cannot have queued any (see mayHoldFds), and its socket is
      // emptied and closed here, not as is on the background closer behind
      // its uid's other closes. A served one
      // takes them from its READY on (serve.ts: acceptFds). Before Linux 6.16
      // this does nothing.
      refuseFdsOn(server.fd);
      server.onConnection((err, socket) => this.#onConnection(err, socket));
    } catch (err) {
      // Nothing is served: what the start took is given back (the caller
      // closes the server).
      native.reserveCloserThreads(-this.#reservedOwners);
      this.#reservedOwners = 0;
      daemons.delete(this.#id);
      throw err;
    }
    // One timer for every client: HELLO and idle timeouts, replies piling
    // up unread. (A client's exit is an event: see watchClient.)
    const every = Math.max(
      10,
      Math.min(1000, limits.helloTimeoutMs / 4, limits.stalledReaderTimeoutMs / 4, limits.idleTimeoutMs > 0 ? limits.idleTimeoutMs / 4 : 1000),
    );
    // The look itself waits for the loop's poll phase: after a turn held up
    // (a long garbage collection, a command's synchronous work, a loaded
    // machine) the timer is due before the requests that came meanwhile
    // are read, and a client whose request waits unread is not idle.
    this.#sweeper = setInterval(() => {
      this.#sweepSoon ??= setImmediate(() => {
        this.#sweepSoon = undefined;
        this.#sweep();
      });
    }, every);
    this.#sweeper.unref();
  }

  /**
   * The connections queued on a socket taken over (see takeOverListener):
   * their clients read the maker's credentials, not ours. When the maker's
   * uid is ours (a per-user unit, a root daemon of a system unit) they
   * trusted the uid that serves them and are served; else (a root-made
   * socket passed to a daemon running as User=) each is refused with
   * TAKEN_OVER_REFUSAL before anything it sends is read: its client, which
   * may trust root and not us, connects again and judges us by our own
   * credentials.
   */
  #takeQueued(queued: number[], maker: { pid: number; uid: number }): void {
    const me = process.getuid?.() ?? ROOT_UID;
    const sockets: UnixSocket[] = [];
    for (const fd of queued) {
      try {
        sockets.push(wrapOwnSocket(fd, 'seqpacket', SERVED_SOCKET_OPTIONS));
      } catch (err) {
        native.closeConnection(fd, this.#closeOwnerOf(peerUid(fd)));
        this.#log(`a connection queued before the takeover could not be served: ${(err as Error).message}`);
      }
    }
    if (maker.uid === me) {
      for (const s of sockets) this.#onConnection(null, s);
      return;
    }
    this.#log(`${sockets.length} connection(s) made while the socket was uid ${maker.uid}'s (pid ${maker.pid}) refused: their clients judged that uid, not ${me}`);
    for (const s of sockets) {
      this.stats.refused++;
      let uid = ROOT_UID;
      try {
        uid = s.peerCredentials().uid;
      } catch {
        // closed below all the same
      }
      refuse(this.#refusals, s, this.#closeOwnerOf(uid), `${TAKEN_OVER_REFUSAL} (made by uid ${maker.uid}, served by uid ${me}): connect again to check the uid that serves it`, mayHoldFds(s));
    }
  }

  /** Whose closes a peer of `uid` makes: its own uid's if served, else everyone else's (see closerOwners). */
  #closeOwnerOf(uid: number): number {
    return this.#allowed.has(uid) ? peerCloseOwner(uid) : OTHERS_CLOSE_OWNER;
  }

  /** The client on `socket` has exited (its watch fired): its connection and fds are swept now. */
  #clientExited(socket: UnixSocket): void {
    const c = this.#clients.get(socket);
    if (c === undefined) return;
    this.stats.clientsExited++;
    c.served.end(new FdBridgeError('ERR_FDBRIDGE_PEER_EXITED', `the client's process (pid ${c.pid}) exited; its connection and fds are swept`));
  }

  /**
   * Without SO_PEERPIDFD a client's exit may go unseen (pidfd_open of its
   * pid may name another process), so an fd that would keep its connection
   * open after it exits is refused: a socket whose peer is the process that
   * listens here, i.e. the client's end of a connection to this daemon.
   */
  #endpointRefusal(fd: number): string | undefined {
    let peer: { pid: number; uid: number };
    try {
      if ((native.identity(fd).mode & S_IFMT) !== S_IFSOCK) return undefined;
      peer = native.peerCred(fd);
    } catch {
      return undefined; // not a connected Unix socket
    }
    if (peer.pid !== this.#listener.pid || peer.uid !== this.#listener.uid) return undefined;
    return `fd ${fd} is a connection to this helper daemon itself (it would keep a connection open after its client exits)`;
  }

  #sweep(): void {
    const now = Date.now();
    for (const c of this.#clients.values()) {
      const a = c.served.activity();
      if (a.ended) {
        // Cut off already (its command's close() may take a while): counted
        // once. Its REFUSED may wait behind replies it has not read: no
        // longer than a client that stops reading is waited for.
        if (this.#stalled(c, a, now)) c.served.end();
        continue;
      }
      if (!a.ready && now - c.acceptedAt > this.limits.helloTimeoutMs) {
        this.stats.quotaHits.helloTimeout++;
        c.served.end(new QuotaExceededError('helloTimeout', `no HELLO within ${this.limits.helloTimeoutMs} ms of connecting`));
      } else if (this.#stalled(c, a, now)) {
        this.stats.quotaHits.queuedBytes++;
        c.served.end(
          new QuotaExceededError('queuedBytes', `${a.queuedBytes} bytes of replies waited unread for ${this.limits.stalledReaderTimeoutMs} ms: the client stopped reading`),
        );
      } else {
        if (a.ready && this.limits.idleTimeoutMs > 0 && a.inFlight === 0 && this.#idleMs(c, a, now) > this.limits.idleTimeoutMs) {
          this.stats.quotaHits.idleTimeout++;
          c.served.end(new QuotaExceededError('idleTimeout', `idle for more than ${this.limits.idleTimeoutMs} ms`));
        }
      }
    }
  }

  /**
   * How long `c` has been idle at `now`: since its last request, the last
   * call of its that settled, or the last DUP answered in C++ that a look
   * here has seen (those never reach JS, so they are counted here).
   */
  #idleMs(c: Client, a: ServedActivity, now: number): number {
    if (a.servedDuplications !== c.lastServed) {
      c.lastServed = a.servedDuplications;
      c.lastSeenAt = now;
    }
    return now - Math.max(a.lastActiveAt, c.lastSeenAt);
  }

  /**
   * Whether `c` has stopped reading: replies wait for it and not one of
   * them has left for stalledReaderTimeoutMs. (Reading its requests pauses
   * as soon as replies back up, so such a client costs little, but it holds
   * a connection and its fds for nothing.) Whether replies left is what the
   * queue sent, not its size: a client that reads and asks again can find
   * its queue filled to where it was at each look.
   */
  #stalled(c: Client, a: ServedActivity, now: number): boolean {
    if (a.queuedBytes === 0 || a.sentFromQueue !== c.lastSentFromQueue) {
      c.lastSentFromQueue = a.sentFromQueue;
      c.stuckSince = undefined;
      return false;
    }
    c.stuckSince ??= now;
    return now - c.stuckSince > this.limits.stalledReaderTimeoutMs;
  }

  /**
   * Clients, fds held and limits: what `fdbridge helper --status` prints.
   * `viewer`: the credentials of the client asking (the status command's
   * peer); one of another uid than the daemon's (root excepted) is shown
   * its own uid's clients and the totals, never the others' pids and uids.
   */
  status(viewer?: { uid: number }): HelperStatus {
    const now = Date.now();
    const onlyUid = seesEveryClient(viewer) ? undefined : viewer?.uid;
    const shown = (uid: number): boolean => onlyUid === undefined || uid === onlyUid;
    const clients: HelperClientStatus[] = [...this.#clients.values()].filter((c) => shown(c.uid)).map((c) => {
      const a = c.served.activity();
      return { pid: c.pid, uid: c.uid, command: a.ready, fdsHeld: a.fdsHeld, inFlight: a.inFlight, queuedBytes: a.queuedBytes, idleMs: this.#idleMs(c, a, now) };
    });
    return {
      pid: process.pid,
      socketPath: this.socketPath,
      commands: this.commandNames,
      limits: { ...this.limits },
      stats: { ...this.stats, quotaHits: { ...this.stats.quotaHits } },
      fdsHeld: this.#allFds.held,
      fdsClosing: native.backgroundClosesOfPeerFds(),
      socketsClosing: native.backgroundClosesOfOwnSockets(),
      clients,
      uids: [...this.#uids]
        .filter(([uid]) => shown(uid))
        .map(([uid, a]) => ({
          uid,
          connections: a.connections,
          fdsHeld: a.fds.held,
          fdsClosing: native.backgroundClosesOfPeerFds(peerCloseOwner(uid)),
          socketsClosing: native.backgroundClosesOfOwnSockets(peerCloseOwner(uid)),
          logBytes: this.#logBytes.get(uid) ?? 0,
        })),
      logBytes: [...this.#logBytes.values()].reduce((a, b) => a + b, 0),
      ...(onlyUid === undefined ? {} : { onlyUid }),
    };
  }

  #onConnection(err: Error | null, socket: UnixSocket | undefined): void {
    if (err || !socket) {
      this.#log(`accept failed: ${err?.message}`);
      // accept4 stopped on this error (EMFILE...); start again shortly.
      // Meanwhile the listening socket no longer keeps the loop alive: this
      // timer must, or a daemon with no client would end here, exit status 0.
      clearTimeout(this.#acceptRetry);
      this.#acceptRetry = setTimeout(() => {
        this.#acceptRetry = undefined;
        if (!this.#server.closed) this.#server.onConnection((e, s) => this.#onConnection(e, s));
      }, 100);
      return;
    }
    // Whether the peer could queue fds before it was accepted (only where
    // the kernel cannot refuse them: see the constructor).
    const queuedFds = mayHoldFds(socket);
    let cred: { pid: number; uid: number; gid: number };
    try {
      cred = socket.peerCredentials();
    } catch (e) {
      this.#log(`SO_PEERCRED failed: ${(e as Error).message}`);
      // Shut down first: the peer reads its end of file now. A peer that
      // could queue fds has its socket closed as is on the background
      // closer (what it sent dropped there); else the socket is emptied
      // and closed here (UnixSocket.close).
      socket.useBackgroundCloser(queuedFds);
      endNow(socket);
      socket.close();
      return;
    }
    if (!this.#allowed.has(cred.uid)) {
      this.stats.refused++;
      this.#log(`refused pid ${cred.pid}: uid ${cred.uid} is not allowed`);
      refuse(this.#refusals, socket, OTHERS_CLOSE_OWNER, `uid ${cred.uid} may not use this helper`, queuedFds);
      return;
    }
    // An ended client's socket is closed on the background closer (its
    // receive queue may hold fds whose close blocks), where it may wait
    // behind its uid's other closes: held up there it is still that uid's
    // connection, and one of the daemon's, as fdRoom counts them. Else a
    // uid that blocks its closes and churns connections would leave
    // sockets waiting, counted nowhere, until the daemon met EMFILE.
    const closing = native.backgroundClosesOfOwnSockets();
    if (this.#clients.size + closing >= this.limits.maxConnections) {
      this.stats.refused++;
      this.stats.quotaHits.connections++;
      this.#log(`refused pid ${cred.pid}: ${this.#clients.size} clients already, ${closing} ended ones' sockets held up in the closer (maxConnections)`);
      refuse(
        this.#refusals,
        socket,
        peerCloseOwner(cred.uid),
        `quota connections: this helper serves at most ${this.limits.maxConnections} clients at once (${this.#clients.size} now, ${closing} ended ones whose socket waits behind blocked closes)`,
        queuedFds,
      );
      return;
    }
    const existing = this.#uids.get(cred.uid);
    const uidClosing = native.backgroundClosesOfOwnSockets(peerCloseOwner(cred.uid));
    const uidConnections = (existing?.connections ?? 0) + uidClosing;
    if (uidConnections >= this.limits.maxConnectionsPerUid) {
      this.stats.refused++;
      this.stats.quotaHits.uidConnections++;
      this.#log(`refused pid ${cred.pid}: uid ${cred.uid} has ${existing?.connections ?? 0} clients already, ${uidClosing} ended ones' sockets held up in the closer (maxConnectionsPerUid)`);
      refuse(
        this.#refusals,
        socket,
        peerCloseOwner(cred.uid),
        `quota uidConnections: this helper serves at most ${this.limits.maxConnectionsPerUid} clients of one uid (${cred.uid}) at once ` +
          `(${existing?.connections ?? 0} now, ${uidClosing} ended ones whose socket waits behind blocked closes)`,
        queuedFds,
      );
      return;
    }
    const account = existing ?? { connections: 0, fds: new native.FdBudget(this.limits.maxFdsPerUid, this.#allFds), sessions: new Set<ServedConnection>(), held: false, reclaimPacing: new ReclaimPacing() };
    account.connections++;
    this.#uids.set(cred.uid, account);
    this.stats.connections++;
    this.stats.active++;
    this.#log(`serving pid ${cred.pid} (uid ${cred.uid})`);
    const watch = this.#watchClient(socket, cred.pid);
    const served = serveConnection(socket, {
      transport: 'helper',
      resolveCommand: (requested) => this.#resolve(requested),
      limits: {
        maxFds: this.limits.maxFdsPerClient,
        maxCallsInFlight: this.limits.maxCallsInFlight,
        maxQueuedBytes: this.limits.maxQueuedBytes,
        shared: {
          budget: account.fds,
          refusal: (n) => this.#fdsRefusal(cred.uid, account, n),
          // The uid's connections for its own limit, every connection for the total.
          reclaim: (quota) =>
            quota === 'uidFds'
              ? account.reclaimPacing.run(() => reclaimClosedAdopted(account.sessions))
              : this.#totalReclaimPacing.run(() => reclaimClosedAdopted(Array.from(this.#clients.values(), (c) => c.served))),
        },
        holdLogBytes: (bytes) => this.#holdLogBytes(cred, bytes),
      },
      onQuota: (quota) => {
        this.stats.quotaHits[quota]++;
        this.#log(`pid ${cred.pid}: quota ${quota} reached`);
      },
      // A client learns what failed, never where: the stack is ours to log.
      // Both may quote what the client sent (a method's name, an error's message), of any length: cut to fit.
      reportError: (what, err) => this.#log(`pid ${cred.pid}: ${cutToJsonBytes(what, LOG_WHAT_BYTES)} failed: ${cutToJsonBytes(stackOf(err), LOG_STACK_BYTES)}`),
      closeInBackground: true,
      closeOwner: peerCloseOwner(cred.uid),
      onUnownedCloses: (tickets) => {
        this.#unowned.set(cred.uid, (this.#unowned.get(cred.uid) ?? 0) + 1);
        this.#holdBack();
        // Their closes may end the hold (of this uid, or of another one held back by the total).
        native.afterBackgroundCloses(
          tickets,
          // Stryker disable next-line BlockStatement: emptied, the uid stays in #unowned (see below) and this look is not made: while a uid is held #watchCloses watches these closes too, and their end looks a turn later; with none held a look changes nothing (holdLooks counts one fewer)
          () => {
            // Stryker disable next-line ArithmeticOperator: `+ 1` keeps the uid in #unowned for good; with none of its unowned fds waiting its held and waiting fds are within maxFdsPerUid (#fdsRefusal admits no more), so #countedTotal takes no excess from it: only a map entry kept
            const left = (this.#unowned.get(cred.uid) ?? 1) - 1;
            // Stryker disable next-line ConditionalExpression,EqualityOperator: forced true or `>=` keeps the uid in #unowned at 0, the same as `+ 1` above; forced false and `<=` are killed (test/attack/helper-unowned-batches.test.ts)
            if (left > 0) this.#unowned.set(cred.uid, left);
            else this.#unowned.delete(cred.uid);
            this.#holdBack();
          },
          false,
        );
      },
      ...(watch?.peerPidfd ? {} : { refuseFd: (fd: number) => this.#endpointRefusal(fd) }),
      onEnd: (reason, s: ServeStats) => {
        watch?.exit.close();
        this.#clients.delete(socket);
        account.sessions.delete(served);
        // The socket is closed: its frame channel's ledger is swept and refunded.
        if (--account.connections === 0) this.#uids.delete(cred.uid);
        this.stats.active--;
        this.stats.unexpectedFds += s.unexpectedFds;
        this.stats.protocolErrors += s.protocolErrors;
        if (reason) {
          // What it turned away, so that `fdbridge helper --verbose` shows it per client.
          const turnedAway = s.protocolErrors > 0 || s.unexpectedFds > 0 ? ` (${s.protocolErrors} protocol error(s), ${s.unexpectedFds} unexpected fd(s) closed)` : '';
          this.#log(`pid ${cred.pid}: connection ended: ${describeError(reason, { stack: false }).message}${turnedAway}`);
        }
        if (this.#clients.size === 0) for (const f of this.#idle.splice(0)) f();
      },
    });
    account.sessions.add(served);
    // A uid held back is not read on a new connection either, once READY;
    // nor is one whose fds still waiting put it past its limits although
    // its last connection had ended (else each new connection could bring
    // one more refused message).
    if (account.held) served.holdReading(true);
    else this.#holdBack();
    const now = Date.now();
    this.#clients.set(socket, { served, pid: cred.pid, uid: cred.uid, acceptedAt: now, watch: watch?.exit, lastServed: 0, lastSeenAt: now, lastSentFromQueue: 0, stuckSince: undefined });
  }

  /**
   * Holds back the uids whose fds, waiting to be closed, put them past
   * their limits, and lets the others be read again. A DUP's fds are in
   * this process from the moment it is read, refused or not: a refused
   * one's (and those discarded) go to the background closer, counted by
   * no ledger, and wait there behind the uid's closes, which it can make
   * block (lingering TCP sockets). They count against its maxFdsPerUid and
   * maxFdsTotal as they wait (#fdsRefusal: the next DUP is refused), and
   * while the uid's fds held and waiting are past maxFdsPerUid, or it has
   * fds waiting while the daemon's are past maxFdsTotal, none of its
   * connections is read: what they send waits in the kernel, charged to
   * the sender (its in-flight fds count against its own RLIMIT_NOFILE), and
   * nothing more of theirs lands here. The hold comes in the turn the
   * refusal is made, so a uid is past its limit by one message (253 fds)
   * at most; it ends as the closes end (onUnownedCloses). The fds a ledger
   * counted (released, swept) fit the limits by themselves: only unowned
   * ones put a uid past them, and each of their batches ends a wait here.
   */
  #holdBack(): void {
    this.stats.holdLooks++;
    const counted = this.#countedTotal();
    const totalOver = counted.fds > this.limits.maxFdsTotal;
    /** The owners of the uids held back, with their fds waiting to be closed as counted here. */
    const heldWith = new Map<number, number>();
    for (const [uid, account] of this.#uids) {
      const owner = peerCloseOwner(uid);
      const closing = native.backgroundClosesOfPeerFds(owner);
      const over = closing > 0 && (account.fds.held + closing > this.limits.maxFdsPerUid || totalOver);
      // Stryker disable next-line ConditionalExpression: forced true, every uid joins heldWith and the closes are watched with no uid held (as with the mark below): their ends only ask for looks that change nothing
      if (over) heldWith.set(owner, closing);
      if (over === account.held) continue;
      account.held = over;
      if (over) {
        this.stats.readingHeld++;
        this.#log(
          `uid ${uid}: ${account.fds.held} fd(s) held and ${closing} waiting to be closed (at most ${this.limits.maxFdsPerUid}; the daemon's ` +
            `${counted.fds} of ${this.limits.maxFdsTotal}): its connections are not read until they are closed`,
        );
      } else {
        this.#log(`uid ${uid}: back within its fd limits, its connections are read again`);
      }
      for (const served of account.sessions) served.holdReading(over);
    }
    // Stryker disable next-line ConditionalExpression: forced false, the closes are watched with no uid held: their ends only ask for looks that change nothing
    if (heldWith.size === 0) return;
    this.#watchCloses();
    // A close counted above that ended before it could be watched wakes
    // nothing: its end shows as a lower count now (closes end on the
    // closer's threads; none is queued meanwhile, that is this thread's).
    for (const [owner, closing] of heldWith) {
      if (native.backgroundClosesOfPeerFds(owner) < closing) {
        this.#lookAtHoldsSoon();
        break;
      }
    }
  }

  /**
   * While a uid is held back, each background close open now looks at the
   * holds again as it ends (#holdBack, once a loop turn however many end
   * together). What holds a uid is all of its fds waiting to be closed
   * (backgroundClosesOfPeerFds): a refused DUP's (onUnownedCloses), but
   * also copies it released, a connection's sweep, a log redirection's
   * closeClientFds; the hold must end as the last of them ends, whichever
   * it is, since its connections are not read meanwhile and nothing of
   * theirs can end it. Each close is watched alone: another uid's close
   * that blocks does not keep this one held.
   */
  #watchCloses(): void {
    for (const ticket of native.openBackgroundCloses()) {
      // Stryker disable next-line ConditionalExpression: forced false, a close still open is watched again at each look: the same looks (#lookAtHoldsSoon coalesces them), one more native registration a look for each open close
      if (this.#watchedCloses.has(ticket)) continue;
      this.#watchedCloses.add(ticket);
      native.afterBackgroundCloses(
        ticket,
        () => {
          this.#watchedCloses.delete(ticket);
          this.#lookAtHoldsSoon();
        },
        false,
      );
    }
  }

  /** #holdBack in the next loop turn, once however many ask in this one. */
  #lookAtHoldsSoon(): void {
    if (this.#holdsLookQueued) return;
    this.#holdsLookQueued = true;
    setImmediate(() => {
      this.#holdsLookQueued = false;
      this.#holdBack();
    }).unref();
  }

  /**
   * The fds held for clients and waiting to be closed that count against
   * maxFdsTotal: all of them, but those by which a uid is past its own
   * maxFdsPerUid (`excess`). Only fds no ledger counted can put a uid
   * there (#holdBack), one refused message's at most while its
   * connections are held back; they count against that uid alone, so that
   * a user whose closes block cannot make every other user's DUPs refused
   * with them.
   */
  #countedTotal(): { fds: number; excess: number } {
    let excess = 0;
    for (const uid of this.#unowned.keys()) {
      const held = this.#uids.get(uid)?.fds.held ?? 0;
      excess += Math.max(0, held + native.backgroundClosesOfPeerFds(peerCloseOwner(uid)) - this.limits.maxFdsPerUid);
    }
    return { fds: this.#allFds.held + native.backgroundClosesOfPeerFds() - excess, excess };
  }

  /**
   * Counts `bytes` of a log line of a client of `peer.uid` waiting to be
   * written against its uid's maxLogBytesPerUid: a line is held in this
   * process (a copy in the log command's queue, then in its lane's) from
   * the call until it is written, and one uid's clients could otherwise make
   * the daemon hold up to maxConnectionsPerUid x maxCallsInFlight lines of
   * up to MAX_CALL_JSON_BYTES each (a gigabyte at the defaults). Returns
   * the function that gives them back; throws QuotaExceededError past it.
   */
  #holdLogBytes(peer: { pid: number; uid: number }, bytes: number): () => void {
    const uid = peer.uid;
    const held = this.#logBytes.get(uid) ?? 0;
    if (held + bytes > this.limits.maxLogBytesPerUid) {
      this.stats.quotaHits.uidLogBytes++;
      this.#log(`pid ${peer.pid}: quota uidLogBytes reached`);
      throw new QuotaExceededError(
        'uidLogBytes',
        `a log line of ${bytes} bytes would make ${held + bytes} bytes of the log lines of uid ${uid} waiting to be written ` +
          `(at most ${this.limits.maxLogBytesPerUid}); nothing of it was written: ` +
          (bytes > this.limits.maxLogBytesPerUid ? 'a line longer than that is never taken, split it' : 'log it again once earlier lines are'),
      );
    }
    this.#logBytes.set(uid, held + bytes);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.#logBytes.get(uid) ?? bytes) - bytes;
      if (left > 0) this.#logBytes.set(uid, left);
      else this.#logBytes.delete(uid);
    };
  }

  /** The limit that `n` more fds for a client of `uid` would break, if any (the client's own is checked first). */
  #fdsRefusal(uid: number, account: UidAccount, n: number): QuotaExceededError | undefined {
    // The fds the uid's clients gave that wait to be closed are still held
    // for it: one user cannot fill the total with closes it made block.
    const uidClosing = native.backgroundClosesOfPeerFds(peerCloseOwner(uid));
    if (account.fds.held + uidClosing + n > this.limits.maxFdsPerUid) {
      return new QuotaExceededError(
        'uidFds',
        `${n} more fd(s) would make ${account.fds.held + uidClosing + n} held for the clients of uid ${uid} together ` +
          `(${uidClosing} of them still being closed; at most ${this.limits.maxFdsPerUid}); release some first`,
      );
    }
    const counted = this.#countedTotal();
    if (counted.fds + n > this.limits.maxFdsTotal) {
      const closing = native.backgroundClosesOfPeerFds() - counted.excess;
      return new QuotaExceededError(
        'totalFds',
        `${n} more fd(s) would make ${counted.fds + n} held by this helper for all its clients ` +
          `(${closing} of them still being closed; at most ${this.limits.maxFdsTotal}); try again later`,
      );
    }
    return undefined;
  }

  /**
   * Watches a client's process so that its exit is seen when it happens,
   * even while its connection stays open (it may have sent us its own
   * endpoint, or a cycle of them, which we would then hold open ourselves).
   * The watch keeps its own duplicate of the pidfd, numbered at or above
   * the fd floor as the library's other own fds are; the one the kernel
   * gave is closed here. `peerPidfd`: it came from SO_PEERPIDFD (else
   * pidfd_open, which a reused pid can fool; see #endpointRefusal).
   */
  #watchClient(socket: UnixSocket, pid: number): { exit: NativeExitWatch; peerPidfd: boolean } | undefined {
    const got = clientPidfd(socket, pid);
    if (got === undefined) return undefined;
    try {
      // The kernel signals the end of file of the client's sockets before its
      // pidfd (exit_files, then exit_notify): one turn later, a client that
      // simply exited has been seen to hang up, and only one whose
      // connection stays open (we hold its endpoint) is left to sweep.
      const exit = new native.ExitWatch(got.pidfd, () => setImmediate(() => this.#clientExited(socket)));
      exit.unref(); // the listening socket keeps the daemon alive, not its clients
      return { exit, peerPidfd: got.peerPidfd };
    } catch (err) {
      this.#log(`pid ${pid}: cannot watch its process: ${(err as Error).message}`);
      return undefined;
    } finally {
      closeOwnFds([got.pidfd]);
    }
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
    // The daemon's own arguments (status: which daemon) are not the client's to change.
    return requested.args !== undefined && spec.args === undefined ? { ...spec, args: requested.args } : spec;
  }

  /**
   * Resolves once no client is being served (at once when none is): every
   * connection ended, its command closed. With `timeoutMs`, rejects with a
   * TimeoutError once that passes first, naming the clients still served
   * (status().clients) and the daemon's stats.
   */
  idle(timeoutMs?: number): Promise<void> {
    if (timeoutMs !== undefined) validateTimeoutMs(timeoutMs, 'idle: timeoutMs');
    if (this.#clients.size === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.#idle.push(done);
      if (timeoutMs === undefined) return;
      timer = setTimeout(() => {
        const i = this.#idle.indexOf(done);
        if (i >= 0) this.#idle.splice(i, 1);
        const { clients } = this.status();
        reject(new TimeoutError(`helper daemon not idle after ${timeoutMs} ms: ${clients.length} client(s) still served ${JSON.stringify(clients)}; stats ${JSON.stringify(this.stats)}`));
      }, timeoutMs);
    });
  }

  /**
   * Stops listening, removes the socket file, ends every connection (each
   * client reads its end of file at once; each command's close() runs and
   * its unadopted fds are handed to the background closer), and resolves
   * once they all have and the closes open then are done, or CLOSES_GIVE_UP_MS
   * after: what a close blocked for good (a lingering TCP socket) still
   * holds stays with the closer and keeps the event loop alive no longer,
   * so a process that stops here exits (its exit ends such closes).
   */
  async close(): Promise<void> {
    this.#server.close();
    native.reserveCloserThreads(-this.#reservedOwners);
    this.#reservedOwners = 0;
    clearInterval(this.#sweeper);
    clearImmediate(this.#sweepSoon);
    clearTimeout(this.#acceptRetry);
    daemons.delete(this.#id);
    if (this.#clients.size > 0) {
      const idle = new Promise<void>((resolve) => this.#idle.push(resolve));
      for (const c of [...this.#clients.values()]) c.served.end();
      await idle;
    }
    // The clients' fds are closed by the background closer: wait for its
    // news that the closes open now are done, giving up after
    // CLOSES_GIVE_UP_MS (fd.ts) on a close blocked for good (a lingering TCP
    // socket), which then holds up nothing but itself.
    await closesSettled(native.openBackgroundCloses());
  }
}

/**
 * The words that start a REFUSED frame's message for a connection made
 * before the daemon took its socket over: the client connects again, once.
 */
export const TAKEN_OVER_REFUSAL = 'connected before this daemon took over its socket';

/** listen(2)'s backlog for a socket taken over: systemd's default Backlog= (SOMAXCONN), which the kernel lowers to net.core.somaxconn. */
const TAKEN_OVER_BACKLOG = 4096;

/**
 * Makes a listening socket someone else made (systemd's socket activation)
 * this process's: listen(2) again, so that every client from now on reads
 * our pid and uid as the listener's (SO_PEERCRED), as a daemon that made its
 * own socket gives them; else a system unit's socket, made by PID 1 as
 * root, would pass for root's whatever User= the daemon runs as, and a
 * client trusts root without naming it. Returns the connections queued
 * before, which saw `maker`'s credentials.
 */
function takeOverListener(fd: number): { queued: number[]; maker: { pid: number; uid: number } } {
  const maker = native.peerCred(fd);
  return { queued: native.listenAgain(fd, TAKEN_OVER_BACKLOG), maker };
}

/** The uid of the peer of the connection `fd`; root's when SO_PEERCRED fails. */
function peerUid(fd: number): number {
  try {
    return native.peerCred(fd).uid;
  } catch {
    return ROOT_UID;
  }
}

/**
 * What names a listening socket: its file's device and inode (the same
 * socket under another spelling of its path), an abstract name as is;
 * undefined when the file is not there.
 */
function listenerIdentity(socketPath: string): string | undefined {
  if (socketPath.startsWith('@')) return socketPath;
  try {
    const st = statSync(socketPath);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * True when a HelperDaemon started on this thread listens at `socketPath`:
 * its event loop is this thread's, so nothing that blocks this thread can
 * be answered by it.
 */
export function daemonOnThisThread(socketPath: string): boolean {
  const id = listenerIdentity(socketPath);
  return id !== undefined && [...daemons.values()].some((d) => d.listener === id);
}

/** Ids are unique in the process, across module instances (see `daemons`). */
function nextDaemonId(): number {
  let id = 1;
  while (daemons.has(id)) id++;
  return id;
}

/**
 * fds that take the lowest free numbers besides the clients' own: stdio and
 * what Node, libuv and V8 open (about 20 at rest, more in passing), and
 * one message's worth of fds being received (up to MAX_FDS_PER_FRAME arrive
 * before any quota can be checked).
 */
const LOW_FDS_RESERVE = 64 + MAX_FDS_PER_FRAME;

/**
 * The daemon's own fds a connection holds, all numbered at or above the fd
 * floor: its socket (until it is closed, waiting for the background closer
 * included), the pidfd that watches its client, and the copy of the log fd
 * that the log command's line being written goes to (native laneWrite
 * makes it as the line is handed over, and closes it once the line is
 * written or has failed; a command's lines are written one after another,
 * so it has one at most; the copy of a connection that ended while its line
 * was in a write(2) that could not be cancelled is counted with its
 * uid's lane threads, highFdsReserve).
 */
export const HIGH_FDS_PER_CONNECTION = 3;

/**
 * The daemon's own fds besides its connections', all numbered at or above
 * the fd floor: its listening socket and the watch on its parent
 * (--exit-with-parent), the refused peers' sockets held open
 * (MAX_REFUSALS_HELD), the copy above the floor that the background closer
 * makes of each fd whose close may block (one per closer thread, its
 * reserve included), the log fd copies that lines still being written
 * after their connection ended go to (one per log lane thread: laneWriters().perOwner
 * for each of `owners`), and a few in passing (a connection's pidfd before
 * its watch has taken its copy).
 */
function highFdsReserve(owners: number): number {
  const closer = native.closerThreads();
  // The reserve once this daemon's owners have theirs (reserveCloserThreads).
  const reserve = Math.min(closer.maxReserve, Math.max(closer.reserve, closer.reservedOwners + owners));
  return 2 + MAX_REFUSALS_HELD + closer.max + reserve + native.laneWriters().perOwner * owners + 16;
}

/**
 * How the daemon's fds fit in RLIMIT_NOFILE `soft`, the fd floor at `floor`
 * (fdFloor(): half the soft limit, at most 8192). Its own fds (listening and
 * connection sockets, the pidfds that watch clients) are numbered at or
 * above the floor, so they have `soft - floor` numbers:
 * HIGH_FDS_PER_CONNECTION a connection (its socket, its watch, the copy of
 * its log fd a line is written into) beside highFdsReserve(). Everything else takes
 * the lowest free numbers: the clients' fds (held, or waiting to be closed)
 * and LOW_FDS_RESERVE. They fit either below the floor, where none of them
 * ever takes a number the daemon's own fds need, or, where more numbers
 * are left above the floor beside the connections' and the reserve, there,
 * wherever they land. Returns how many connections fit at all, and how
 * many client fds fit beside `maxConnections` of them (0 if they do not).
 */
export function fdRoom(soft: number, floor: number, maxConnections: number, owners = 0): { connections: number; clientFds: number } {
  const above = soft - floor;
  const connections = Math.max(0, Math.floor((above - highFdsReserve(owners)) / HIGH_FDS_PER_CONNECTION));
  if (maxConnections > connections) return { connections, clientFds: 0 };
  const ownAbove = highFdsReserve(owners) + HIGH_FDS_PER_CONNECTION * maxConnections;
  return { connections, clientFds: Math.max(0, Math.max(floor, above - ownAbove) - LOW_FDS_RESERVE) };
}

/** The largest uid allowUids takes (as options.child's uid: Linux's uid_t is 32 bits, and (uid_t)-1 is no uid). */
export const MAX_UID = 0x7fffffff;

/**
 * The uids a daemon serves: its own, and those given in allowUids, each an
 * integer from 0 to MAX_UID (else a TypeError or RangeError naming the
 * entry, before anything is made).
 */
function allowedUids(options: HelperOptions): Set<number> {
  const given = validateIntegerList(options.allowUids ?? [], 'allowUids', 'an array of uids', 0, MAX_UID);
  return new Set([process.getuid?.() ?? 0, ...given]);
}

/** The `name` of the process warning a throwing log callback is reported with (see guardedLog). */
export const LOG_THREW_WARNING = 'FdBridgeWarning';

/**
 * The log callback as the daemon calls it once started (undefined without
 * one; during start() a throw fails the start, which gives back what it
 * took, as any failure there). What it throws never reaches the daemon: thrown in the middle of accepting a
 * client, answering a request or ending a connection, it would leave that
 * client unanswered and the daemon's counts wrong. The line is dropped,
 * the daemon goes on, and the first throw is reported as a process warning
 * (process.emitWarning: name FdBridgeWarning, code ERR_FDBRIDGE_LOG_THREW,
 * its message naming what was thrown and the line, its `detail` the thrown
 * error's stack); later ones are not, so that a callback that always
 * throws does not turn every client into a warning.
 */
function guardedLog(log: ((line: string) => void) | undefined): ((line: string) => void) | undefined {
  if (log === undefined) return undefined;
  let reported = false;
  return (line) => {
    try {
      log(line);
    } catch (err) {
      if (reported) return;
      reported = true;
      // A message and options, not an Error of ours: emitWarning refuses an
      // Error made in another realm (a vm context, jest's sandbox).
      process.emitWarning(
        `HelperDaemon: the log callback threw (${shown(err)}) on the line ${JSON.stringify(line)}: ` +
          'that line is dropped and the daemon goes on serving; later throws of this callback are not reported',
        { type: LOG_THREW_WARNING, code: 'ERR_FDBRIDGE_LOG_THREW', detail: stackOf(err) },
      );
    }
  };
}

/**
 * The limits in effect: the defaults, overridden by `given` (each a
 * non-negative integer; a key that is no limit is a TypeError naming it); under a low RLIMIT_NOFILE fewer connections by
 * default, and the fd total clipped to fdRoom (both said in `log`); a
 * RangeError naming the limit when it leaves no room for client fds.
 * A daemon that serves its own uid alone (`shared` false) has no other
 * user to protect: the per-uid limits not given are the totals.
 */
function checkLimits(given: Partial<HelperLimits> | undefined, log: ((line: string) => void) | undefined, shared: boolean, owners: number): HelperLimits {
  if (given !== undefined) {
    if (typeof given !== 'object' || given === null || Array.isArray(given)) throw invalidType('limits', 'an object of limits', given);
    // A misspelt or guessed key (maxFds, after the CLI's --max-fds) would
    // otherwise leave that limit at its default without a word.
    for (const key of Object.keys(given)) {
      if (!Object.hasOwn(DEFAULT_HELPER_LIMITS, key)) {
        throw invalidType(`limits.${key}`, `left out: it is no limit (the limits are ${Object.keys(DEFAULT_HELPER_LIMITS).join(', ')})`, (given as Record<string, unknown>)[key]);
      }
    }
  }
  const limits: HelperLimits = { ...DEFAULT_HELPER_LIMITS, ...(given ?? {}) };
  if (!shared) {
    if (given?.maxConnectionsPerUid === undefined) limits.maxConnectionsPerUid = limits.maxConnections;
    if (given?.maxFdsPerUid === undefined) limits.maxFdsPerUid = limits.maxFdsTotal;
  }
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`limits.${name} must be a non-negative integer, not ${String(value)}`);
  }
  if (limits.maxConnections < 1 || limits.maxConnectionsPerUid < 1 || limits.helloTimeoutMs < 1) {
    throw new RangeError('limits.maxConnections, limits.maxConnectionsPerUid and limits.helloTimeoutMs must be at least 1');
  }
  // Node raises the soft limit to the hard one as it starts: this is the
  // hard limit the daemon was given (ulimit -Hn, LimitNOFILE=).
  const [soft] = native.getFdLimit();
  const floor = native.fdFloor();
  /** How the fds are split, for the messages. */
  const split = (): string =>
    `the daemon's own fds take numbers at or above the fd floor, ${floor}: ${HIGH_FDS_PER_CONNECTION} a connection and ${highFdsReserve(owners)} more; ` +
    `clients' fds take the lowest free numbers beside ${LOW_FDS_RESERVE} kept for the daemon`;
  let room = fdRoom(soft, floor, limits.maxConnections, owners);
  if (room.connections < limits.maxConnections) {
    if (given?.maxConnections !== undefined || room.connections < 1) {
      throw new RangeError(
        `RLIMIT_NOFILE ${soft} leaves room for ${room.connections} connections, not ${limits.maxConnections} (${split()}): ` +
          `raise the limit (ulimit -n, LimitNOFILE=)${given?.maxConnections === undefined ? '' : ' or lower maxConnections'}`,
      );
    }
    // A low RLIMIT_NOFILE (1024 is common in containers and units): fewer connections by default.
    log?.(`RLIMIT_NOFILE ${soft}: maxConnections ${limits.maxConnections} lowered to ${room.connections} (${split()}); raise the limit (LimitNOFILE=) to allow more`);
    limits.maxConnections = room.connections;
    if (given?.maxConnectionsPerUid === undefined) limits.maxConnectionsPerUid = shared ? Math.max(1, Math.floor(room.connections / 4)) : room.connections;
    room = fdRoom(soft, floor, limits.maxConnections, owners);
  }
  if (room.clientFds < 1) {
    throw new RangeError(`RLIMIT_NOFILE ${soft} leaves no room for client fds beside ${limits.maxConnections} connections (${split()}): raise the limit (ulimit -n, LimitNOFILE=)`);
  }
  if (limits.maxFdsTotal > room.clientFds) {
    log?.(
      `RLIMIT_NOFILE ${soft} leaves room for ${room.clientFds} client fds in all beside ${limits.maxConnections} connections (${split()}): ` +
        `maxFdsTotal ${limits.maxFdsTotal} lowered to ${room.clientFds}; raise the limit (LimitNOFILE=) to allow more`,
    );
    limits.maxFdsTotal = room.clientFds;
    if (given?.maxFdsPerUid === undefined) limits.maxFdsPerUid = shared ? Math.min(limits.maxFdsPerUid, Math.floor(room.clientFds / 4)) : room.clientFds;
  }
  return limits;
}

/**
 * Testing only: FDBRIDGE_TEST_NO_PEER_PIDFD=1 makes a daemon act as on a
 * kernel without SO_PEERPIDFD (before Linux 6.5), so that the fallback
 * (refusing the daemon's own connection endpoints) is tested here too.
 */
export const NO_PEER_PIDFD_ENV = 'FDBRIDGE_TEST_NO_PEER_PIDFD';

/**
 * A pidfd for the process at the other end of a client's socket:
 * SO_PEERPIDFD names the very process (Linux 6.5+); else pidfd_open of the
 * SO_PEERCRED pid, which names whatever process has that pid now (the
 * client's, unless it has exited already). Undefined if neither works.
 */
function clientPidfd(socket: UnixSocket, pid: number): { pidfd: number; peerPidfd: boolean } | undefined {
  if (process.env[NO_PEER_PIDFD_ENV] !== '1') {
    try {
      return { pidfd: socket.peerPidfd({ own: true }).release(), peerPidfd: true };
    } catch {
      // before Linux 6.5
    }
  }
  try {
    return { pidfd: native.pidfdOpen(pid, true), peerPidfd: false };
  } catch {
    return undefined;
  }
}

/** Built-in commands, the diagnostic ones if asked for, then the ones given (each checked now, not at the first client). */
function commandTable(options: HelperOptions, daemonId: number): Map<string, ModuleCommandSpec> {
  const table = new Map<string, ModuleCommandSpec>(Object.entries(BUILTIN_COMMANDS));
  // This daemon's own status, for `fdbridge helper --status`.
  table.set('status', { ...STATUS_COMMAND, args: [daemonId] });
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

/** The receive buffer of a refused peer's socket, which is only drained (see refuse). */
const REFUSED_RECEIVE_BYTES = 64;

/**
 * Refused peers' sockets held open at once, each for up to a second. Anyone
 * who can reach the socket can connect (an abstract name has no
 * permissions), refused or not: unbounded, a flood of connections held
 * open would take the daemon to its RLIMIT_NOFILE (accept4 and recvmsg
 * failing with EMFILE for its clients). Well inside the fds it keeps for
 * itself.
 */
const MAX_REFUSALS_HELD = 64;

/** ServedConnection.reclaimClosedAdopted of each: how many fds they refunded together. */
function reclaimClosedAdopted(sessions: Iterable<ServedConnection>): number {
  let refunded = 0;
  for (const s of sessions) refunded += s.reclaimClosedAdopted();
  return refunded;
}

/**
 * Tells a peer it is refused, then lets it read that: closing at once while
 * its HELLO sits unread would give it ECONNRESET instead of the answer. What
 * it sent is read only to be discarded (any fds handed to the background
 * closer as they arrive), and the socket is closed when the peer closes or
 * after a second. While
 * MAX_REFUSALS_HELD are held, the socket is closed as soon as the answer is
 * written (a peer that sent something then reads ECONNRESET).
 */
function refuse(refusals: { held: number }, socket: UnixSocket, owner: number, message: string, queuedFds: boolean): void {
  // A peer that could queue fds before it was accepted (queuedFds, see
  // mayHoldFds) may have queued one whose close blocks (a lingering TCP
  // socket): its socket is closed as is on the background closer, as
  // `owner`'s, what is still unread dropped there. Any other is emptied
  // and closed here (UnixSocket.close), waiting behind nobody's closes.
  // The fds read from it meanwhile go to the closer as `owner`'s either way.
  socket.useBackgroundCloser(queuedFds, owner);
  // Only drained: what it sent is read into a few bytes (a longer message
  // arrives truncated, its fds closed), never into a frame-sized buffer.
  socket.setReceiveBufferSize(REFUSED_RECEIVE_BYTES);
  try {
    // A refused peer has no business sending fds: make its sendmsg fail
    // (EPERM) where the kernel can; elsewhere the handler below closes them.
    refuseFds(socket);
    socket.write(encodeRefused(message));
    socket.shutdown('write');
  } catch {
    endNow(socket);
    socket.close();
    return;
  }
  if (refusals.held >= MAX_REFUSALS_HELD) {
    socket.close();
    return;
  }
  refusals.held++;
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    refusals.held--;
    clearTimeout(timer);
    socket.close();
  };
  const timer = setTimeout(finish, 1000);
  timer.unref();
  socket.setMessageHandler((err, _data, fds) => {
    if (fds && fds.length > 0) socket.closeInBackground(fds);
    if (err && err.name !== 'TruncatedError') finish();
  });
}

/**
 * Shuts down a socket the daemon accepted (its alone: never an fd a peer
 * sent) before its close, which may wait on the background closer behind
 * other closes of its owner: its peer reads end of file at once.
 * shutdown(2) never blocks; a socket whose peer is gone already may refuse
 * it (ENOTCONN), and then there is nobody to tell.
 */
function endNow(socket: UnixSocket): void {
  try {
    socket.shutdown('both');
  } catch {
    // nobody to tell
  }
}

/**
 * The closer's owner of the closes for peers of uids not served (refused
 * ones), and of the library's own: one for all of them, so that the owners
 * a daemon makes are as many as the uids it serves, plus this one.
 */
const OTHERS_CLOSE_OWNER = 0;

/**
 * The closer's owners a daemon serving `allowed` makes (peerCloseOwner, and
 * OTHERS_CLOSE_OWNER), each kept a reserve thread (native.reserveCloserThreads).
 */
function closerOwners(allowed: ReadonlySet<number>): number {
  return allowed.size + 1;
}

/** listen(), replacing a stale socket file at `path` but never a live one or a non-socket. */
function listenReplacingStale(path: string): UnixServer {
  return bindReplacingStale(
    path,
    native.constants.SOCK_SEQPACKET,
    () => UnixServer.listen(path, { kind: 'seqpacket', mode: 0o600, own: true, ...SERVED_SOCKET_OPTIONS }),
    () => new FdBridgeError('ERR_FDBRIDGE_HELPER_RUNNING', `another helper is already listening at ${path}`),
  );
}
