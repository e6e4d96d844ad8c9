/**
 * `fdbridge helper`: run a helper daemon; `fdbridge helper --status`: ask a
 * running one for its clients, fds held and quota hits. Under systemd socket
 * activation (LISTEN_FDS/LISTEN_PID) it serves the socket systemd passed;
 * with NOTIFY_SOCKET it sends READY=1 once serving.
 */
import { isAbsolute, resolve } from 'node:path';

import { helperStatus } from '../../src/transports/helper';
import type { CommandSpec } from '../../src/command';
import { watchParent } from '../../src/parent-watch';
import { warmRuntimeFds } from '../../src/runtime-fds';
import {
  DEFAULT_HELPER_LIMITS,
  defaultHelperSocketPath,
  describeDefaultHelperSocketPath,
  HelperDaemon,
  MAX_UID,
  type HelperLimits,
} from '../../src/transports/helper-daemon';
import { listenFdsFromSystemd, notifySystemd } from '../../src/transports/systemd';
import { EXIT, parseSubcommandArgs, parseInteger, UsageError } from './usage';

const LIMIT_FLAGS: Record<string, keyof HelperLimits> = {
  'max-connections': 'maxConnections',
  'max-connections-per-uid': 'maxConnectionsPerUid',
  'max-fds': 'maxFdsPerClient',
  'max-fds-per-uid': 'maxFdsPerUid',
  'max-fds-total': 'maxFdsTotal',
  'max-calls': 'maxCallsInFlight',
  'max-queued-bytes': 'maxQueuedBytes',
  'max-log-bytes-per-uid': 'maxLogBytesPerUid',
  'hello-timeout': 'helloTimeoutMs',
  'idle-timeout': 'idleTimeoutMs',
  'stalled-reader-timeout': 'stalledReaderTimeoutMs',
};

const D = DEFAULT_HELPER_LIMITS;

export const USAGE = `helper [--socket PATH | --socket @NAME] [--allow-uid UID[,UID...]] [--command NAME=MODULE[#EXPORT]]...
       [--diagnostics] [--max-connections N] [--max-connections-per-uid N] [--max-fds N]
       [--max-fds-per-uid N] [--max-fds-total N] [--max-calls N] [--max-queued-bytes N]
       [--max-log-bytes-per-uid N] [--hello-timeout MS] [--idle-timeout MS]
       [--stalled-reader-timeout MS] [--verbose] [--exit-with-parent PID]
helper --status [--socket PATH | --socket @NAME]
      Run a helper daemon: clients of the 'helper' transport connect to its socket, name a
      command it serves, and each gets its own instance, run in this process. Runs until SIGINT
      or SIGTERM, then closes every connection, removes its socket and exits 0. With --status,
      print a running daemon's clients, fds held and quota hits instead.

  --socket PATH      where to listen (default: ${describeDefaultHelperSocketPath()});
                     @NAME for a name in the abstract namespace. Refused in a directory that
                     others can write. Under systemd socket activation the unit's socket is used.
  --allow-uid UIDS   serve these uids too (comma-separated); by default only this process's own
  --command NAME=MODULE[#EXPORT]
                     serve the command class EXPORT (default: default) of MODULE under NAME;
                     repeatable. Clients name a command; they never choose code. Built in: log, status
  --diagnostics      also serve the diagnostic command probe (it reads any fd of this process:
                     for test daemons only)
  --max-connections N   clients served at once (default ${D.maxConnections}); more are refused
  --max-connections-per-uid N
                        clients of one uid served at once (default ${D.maxConnectionsPerUid})
  --max-fds N           fds one client may leave with its command (default ${D.maxFdsPerClient})
  --max-fds-per-uid N   fds the clients of one uid may leave, together (default ${D.maxFdsPerUid},
                        or a quarter of the total when RLIMIT_NOFILE lowers that)
  --max-fds-total N     fds all clients may leave, together (default ${D.maxFdsTotal}, at most
                        RLIMIT_NOFILE - 3 x max-connections - 512)
  --max-calls N         calls one client may have running (default ${D.maxCallsInFlight})
  --max-queued-bytes N  reply bytes waiting for one client to read (default ${D.maxQueuedBytes})
  --max-log-bytes-per-uid N
                        bytes of log lines the clients of one uid have waiting to be written,
                        together (default ${D.maxLogBytesPerUid}); a line past it is refused
  --hello-timeout MS    disconnect a client that sends no HELLO (default ${D.helloTimeoutMs})
  --idle-timeout MS     disconnect an idle client (default ${D.idleTimeoutMs}; 0: never)
  --stalled-reader-timeout MS
                        disconnect a client whose replies wait unread (default ${D.stalledReaderTimeoutMs})
  --verbose          log connections, refusals, quota hits, what each ended connection
                     turned away, and each failed request's stack (clients never get it), to stderr
  --exit-with-parent PID
                     PID is the process that started this one: when it exits, however it ends
                     (SIGKILL included), stop as on SIGTERM. Refused if PID is no longer the
                     parent (it exited before the daemon could watch it)

Prints "fdbridge helper listening on PATH (pid N)" on stdout once it accepts connections.
exit status: 0 stopped by a signal or its parent's exit (or --status printed); 2 usage error; 3 cannot listen, or
--status cannot reach the daemon (the message says why).`;

/** `--command NAME=MODULE[#EXPORT]` arguments as the daemon's command table (relative modules resolved against the cwd). */
export function parseCommands(args: readonly string[]): Record<string, CommandSpec> {
  const commands: Record<string, CommandSpec> = {};
  for (const arg of args) {
    const m = /^([^=]+)=([^#]+)(?:#(.+))?$/.exec(arg);
    if (!m) throw new UsageError(`--command ${arg}: expected NAME=MODULE[#EXPORT]`);
    const [, name, module, exportName] = m as unknown as [string, string, string, string | undefined];
    if (Object.hasOwn(commands, name)) throw new UsageError(`--command: ${name} is given twice`);
    // A relative path is the operator's, resolved against their cwd now.
    const absolute = module.startsWith('.') || isAbsolute(module) ? resolve(module) : module;
    commands[name] = { module: absolute, ...(exportName !== undefined ? { export: exportName } : {}) };
  }
  return commands;
}

/** Asks the daemon at `socketPath` for its status (the built-in status command) and prints it. */
async function printStatus(socketPath: string): Promise<number> {
  // Bounded: a daemon that takes the connection and never answers fails
  // --status with a TimeoutError, never hangs it.
  const s = await helperStatus(socketPath);
  const hits = Object.entries(s.stats.quotaHits)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const lines = [
    `fdbridge helper pid ${s.pid} at ${s.socketPath}; commands: ${s.commands.join(', ')}`,
    `clients: ${s.stats.active} now (at most ${s.limits.maxConnections}), ${s.stats.connections} served, ${s.stats.refused} refused, ` +
      `${s.stats.clientsExited} swept after their process exited, ${s.socketsClosing} ended one(s) whose socket waits behind blocked closes`,
    `fds held: ${s.fdsHeld}, ${s.fdsClosing} being closed (at most ${s.limits.maxFdsPerClient} per client, ${s.limits.maxFdsPerUid} per uid, ${s.limits.maxFdsTotal} in all)`,
    ...s.uids.map(
      (u) =>
        `  uid ${u.uid}: ${u.connections} client(s) and ${u.socketsClosing} socket(s) held up (at most ${s.limits.maxConnectionsPerUid}), ` +
        `${u.fdsHeld} fds held, ${u.fdsClosing} being closed, ${u.logBytes} bytes of log lines waiting`,
    ),
    `log lines waiting to be written: ${s.logBytes} bytes (at most ${s.limits.maxLogBytesPerUid} per uid)`,
    `quota hits: ${hits}`,
    `held back: a uid's connections went unread ${s.stats.readingHeld} time(s), past its fd limits while its fds waited to be closed (${s.stats.holdLooks} look(s) at the holds)`,
    `turned away: ${s.stats.protocolErrors} protocol error(s), ${s.stats.unexpectedFds} unexpected fd(s) closed`,
    // The status request's own connection is one of the clients.
    ...(s.onlyUid === undefined ? [] : [`  (the clients of uid ${s.onlyUid} only: the others are counted above, never listed, for a uid other than the daemon's)`]),
    ...s.clients.map(
      (c) => `  pid ${c.pid} uid ${c.uid}: ${c.fdsHeld} fds held, ${c.inFlight} calls running, ${c.queuedBytes} reply bytes queued${c.command ? '' : ' (no HELLO yet)'}`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return EXIT.ok;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseSubcommandArgs(argv, {
    socket: { type: 'string' },
    'allow-uid': { type: 'string' },
    command: { type: 'string', multiple: true },
    diagnostics: { type: 'boolean' },
    status: { type: 'boolean' },
    verbose: { type: 'boolean' },
    'max-connections': { type: 'string' },
    'max-connections-per-uid': { type: 'string' },
    'max-fds': { type: 'string' },
    'max-fds-per-uid': { type: 'string' },
    'max-fds-total': { type: 'string' },
    'max-calls': { type: 'string' },
    'max-queued-bytes': { type: 'string' },
    'max-log-bytes-per-uid': { type: 'string' },
    'hello-timeout': { type: 'string' },
    'idle-timeout': { type: 'string' },
    'stalled-reader-timeout': { type: 'string' },
    'exit-with-parent': { type: 'string' },
  });
  if (values.status) return printStatus(values.socket ?? defaultHelperSocketPath());
  const allowUids = (values['allow-uid'] ?? '')
    .split(',')
    .filter((s) => s !== '')
    .map((s) => {
      const uid = parseInteger('--allow-uid', s, 0);
      if (uid > MAX_UID) throw new UsageError(`--allow-uid must be a uid from 0 to ${MAX_UID}, not ${s}`);
      return uid;
    });
  const commands = parseCommands(values.command ?? []);
  const limits: Partial<HelperLimits> = {};
  for (const [flag, key] of Object.entries(LIMIT_FLAGS)) {
    const v = (values as Record<string, unknown>)[flag];
    if (typeof v === 'string') limits[key] = parseInteger(`--${flag}`, v, key === 'idleTimeoutMs' || key === 'maxFdsPerClient' || key === 'maxFdsPerUid' || key === 'maxFdsTotal' || key === 'maxCallsInFlight' ? 0 : 1);
  }
  // Watched before listening: a parent that dies from here on is seen.
  // (Its callback comes on a later turn of the loop, once stopFor is set.)
  let stopFor: ((why: string) => void) | undefined;
  const parent =
    values['exit-with-parent'] === undefined
      ? undefined
      : watchParent(parseInteger('--exit-with-parent', values['exit-with-parent']), () => stopFor?.('the parent process exited'));
  const activated = listenFdsFromSystemd();
  if (activated.length > 1) throw new UsageError(`systemd passed ${activated.length} sockets; the helper serves one (one ListenSequentialPacket= in the .socket unit)`);
  const listenFd = activated[0];
  // Left out when not given: the default path gets its private directory made.
  const socketPath = listenFd !== undefined ? (values.socket ?? `systemd socket (fd ${listenFd})`) : (values.socket ?? describeDefaultHelperSocketPath());
  let daemon: HelperDaemon;
  try {
    daemon = HelperDaemon.start({
      ...(listenFd !== undefined ? { listenFd, socketPath } : values.socket !== undefined ? { socketPath: values.socket } : {}),
      allowUids,
      commands,
      diagnostics: values.diagnostics ?? false,
      limits,
      log: values.verbose ? (line) => process.stderr.write(`fdbridge helper: ${line}\n`) : undefined,
    });
  } catch (err) {
    parent?.close();
    throw new Error(`cannot listen on ${socketPath}: ${(err as Error).message}`, { cause: err });
  }
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    stopFor = (why: string): void => {
      if (stopping) return;
      stopping = true;
      parent?.close();
      process.stderr.write(`fdbridge helper: ${why}: closing\n`);
      void notifySystemd('STOPPING=1').catch(() => undefined);
      daemon.close().finally(resolve);
    };
    process.once('SIGINT', stopFor);
    process.once('SIGTERM', stopFor);
  });
  // The fds libuv opens lazily and keeps, opened before anyone takes a
  // baseline of this process (a command that spawns would open them later).
  warmRuntimeFds();
  // Announce only once the signal handlers are in place.
  process.stdout.write(`fdbridge helper listening on ${daemon.socketPath} (pid ${process.pid})\n`);
  await notifySystemd(`READY=1\nSTATUS=serving on ${daemon.socketPath}\nMAINPID=${process.pid}`);
  await stopped;
  return EXIT.ok;
}
